"""The connection budget's arithmetic, mode by mode, and its CEL twin in the CRD."""

from __future__ import annotations

import copy
import re

import pytest

from djangoscale import budget, spec
from djangoscale.contract import DEFAULT_THREADS, DRAINING_POOL_SIZE
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


# -- terminating pods ----------------------------------------------------------------------


def test_with_pgbouncer_every_pod_may_drain_beside_a_full_set_of_running_pods():
    """Whatever the budget and pod count admitted, full pools in every running pod plus the
    shrunk pool of as many draining pods fit the budget."""
    for pods in range(1, 40):
        for total in range(budget.pgbouncer_budget_at_least(pods), 400):
            pool = budget.pool_size_per_pod(total, pods, DRAINING_POOL_SIZE)
            assert pool >= 1
            assert peak(pool, pods, pods) <= total, (total, pods)


def peak(pool: int, running: int, draining: int) -> int:
    return budget.peak_server_connections(pool, running, draining)


def test_the_old_sizing_overran_with_one_terminating_pod():
    # docs/pooling.md's example: budget 27 over 6 pods. Today's pool of 27 // 6 = 4 with one
    # terminating pod beside its replacement holding its full pool: 28 > 27.
    assert (27 // 6) * (6 + 1) > 27
    # The sizing now: 3 per pod, and all 6 may drain beside 6 running: 18 + 6 = 24.
    ds = spec.parse(body_with())
    sizing = budget.size_pool(ds)
    assert sizing.pool_size_per_pod == 3
    assert peak(3, ds.max_pods, ds.max_pods) == 24 <= 27


def test_djangos_pool_is_not_shrunk_so_it_gets_no_draining_allowance():
    # The psycopg pool lives in the worker processes until they exit: (27 // 6) per pod.
    ds = spec.parse(body_with(pooling={"mode": "django"}))
    assert budget.size_pool(ds).pool_size_per_pod == 4


def test_a_pool_size_override_must_leave_the_draining_connection():
    ok = spec.parse(body_with(pgbouncer={"poolSize": 3}))
    assert budget.size_pool(ok).pool_size_per_pod == 3
    (problem,) = problems_of(body_with(pgbouncer={"poolSize": 4}))
    assert problem.endswith("((4 + 1) x 6 > 27)")


def test_the_smallest_pgbouncer_budget_is_two_connections_per_pod():
    # 6 pods: 12 connections; 14 - 3 = 11 is refused, 15 - 3 = 12 gives a pool of 1.
    (problem,) = problems_of(body_with(database={"secretName": "db", "maxConnections": 14}))
    assert "(11 < 2 x 6); the largest spec.replicas.max it supports is 4 here (" in problem
    ds = spec.parse(body_with(database={"secretName": "db", "maxConnections": 15}))
    assert budget.size_pool(ds).pool_size_per_pod == 1


def test_the_cel_rules_for_pgbouncer_count_the_draining_connection():
    assert ">= 2 * (self.replicas.max + 1" in cel_rule(
        "spec.database.maxConnections: with pgbouncer")
    assert "(self.pgbouncer.poolSize + 1) *" in cel_rule("spec.pgbouncer.poolSize: (poolSize")
    assert DRAINING_POOL_SIZE == 1  # the CEL rules write it as a literal 1
