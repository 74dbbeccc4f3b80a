"""The connection budget's arithmetic, mode by mode, and its CEL twin in the CRD."""

from __future__ import annotations

import copy
import re

import pytest

from djangoscale import budget, spec
from djangoscale.contract import DEFAULT_THREADS
from tests.unit.test_spec import problems_of, with_spec

# The example of docs/pooling.md: 6 pods (5 + the surge pod) of cherrypy 20 -> 30 threads.
SHOP = {
    "replicas": {"min": 1, "max": 5},
    "server": {"type": "cherrypy", "threads": 20, "maxThreads": 30},
    "database": {"secretName": "db", "maxConnections": 30},
}


def body_with(**fields):
    return with_spec(**{**copy.deepcopy(SHOP), **fields})


def test_none_counts_every_thread_of_every_pod_and_names_the_figures():
    (problem,) = problems_of(body_with(pooling={"mode": "none"}))
    assert problem.startswith("spec.pooling.mode: none opens a database connection per thread")
    assert "use pooling.mode pgbouncer, or raise spec.database.maxConnections" in problem
    assert problem.endswith("(6 pods x 1 workers x 30 threads = 180; 180 > budget 30 - 3 = 27)")


def test_none_is_accepted_when_the_budget_covers_every_thread():
    # 6 pods x 30 threads = 180 connections: a budget of 183 - 3 covers them exactly.
    body = body_with(pooling={"mode": "none"}, database={"maxConnections": 183})
    assert spec.parse(body).pooling_mode == "none"
    body["spec"]["database"]["maxConnections"] = 182
    assert problems_of(body)[0].endswith("180 > budget 182 - 3 = 179)")


def test_none_without_a_mode_is_what_pgbouncer_disabled_means():
    body = body_with(pgbouncer={"enabled": False})
    (problem,) = problems_of(body)
    assert problem.startswith(
        "spec.pooling.mode: none (what spec.pgbouncer.enabled: false means without a mode)"
    )
    body["spec"]["database"]["maxConnections"] = 183
    assert spec.parse(body).pooling_mode == "none"


def test_none_counts_worker_processes_and_worker_groups():
    body = body_with(
        pooling={"mode": "none"},
        server={"type": "gunicorn-gthread", "workers": 2, "threads": 4},
        database={"maxConnections": 100},
        broker={"secretName": "b"},
        workers=[{"name": "mail", "app": "shop.celery", "concurrency": 6,
                  "replicas": {"max": 3}}],
    )
    # 6 pods x 2 x 4 = 48 web, (3 + 1) x 6 = 24 worker: 72 <= 97.
    assert budget.unpooled_connections_at_most(spec.apply_defaults(
        body["spec"], spec.spec_schema())) == (48, 24)
    spec.parse(body)
    body["spec"]["workers"][0]["concurrency"] = 13  # 48 + 52 = 100 > 97
    (problem,) = problems_of(body)
    assert "6 pods x 2 workers x 4 threads = 48, + 52 for the worker groups' concurrency" in problem


@pytest.mark.parametrize(("server", "threads"), [
    ({"type": "cherrypy"}, 150),  # 100 grown by half
    ({"type": "cherrypy", "threads": 21}, 32),  # ceil(31.5)
    ({"type": "cherrypy", "threads": 10, "maxThreads": 12}, 12),
    ({"type": "gunicorn-gevent"}, 500),
    ({"type": "waitress", "threads": 8}, 8),
    ({"type": "bjoern"}, 1),
])
def test_threads_at_most_follow_the_server_defaults(server, threads):
    assert budget.threads_at_most(spec.apply_defaults(server, spec.spec_schema()["properties"][
        "server"])) == threads


def test_external_does_not_divide_the_budget():
    # 60 pods could not each get a connection from 10; with the user's own pooler it is theirs.
    body = body_with(replicas={"min": 1, "max": 60}, database={"maxConnections": 10})
    assert problems_of(body)[0].startswith("spec.database.maxConnections: the budget")
    body["spec"]["pooling"] = {"mode": "external"}
    ds = spec.parse(body)
    assert (ds.pooling_mode, ds.uses_pgbouncer, ds.uses_django_pool) == ("external", False, False)


def cel_rule(message_start: str) -> str:
    rules = spec.spec_schema()["x-kubernetes-validations"]
    (rule,) = [r["rule"] for r in rules if r["message"].startswith(message_start)]
    return rule


def test_the_cel_rule_for_none_knows_the_same_thread_defaults():
    rule = cel_rule("spec.pooling.mode: none")
    defaults = dict(re.findall(r"'([a-z-]+)': (\d+)", rule))
    assert {name: int(value) for name, value in defaults.items()} == DEFAULT_THREADS
    # cherrypy's growth, in integers: ceil(1.5 x t) == (3 x t + 1) / 2.
    assert "(3 * " in rule and "+ 1) / 2" in rule
    assert all(-(-3 * t // 2) == (3 * t + 1) // 2 for t in range(1, 5001))
    assert "w.concurrency" in rule
