"""The typed spec: defaults from the CRD schema, and one problem line per bad field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from djangoscale import spec
from tests.fixtures.invalid_specs import INVALID_FIELDS, UNKNOWN_FIELDS

MINIMAL = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web"},
    "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application"},
}


def with_spec(**fields):
    body = copy.deepcopy(MINIMAL)
    body["spec"].update(fields)
    return body


def problems_of(body) -> list[str]:
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(body)
    return raised.value.problems


def test_defaults_come_from_the_schema():
    ds = spec.parse(MINIMAL)
    assert ds.port == 8000
    assert ds.server.type == "cherrypy"
    assert (ds.server.threads, ds.server.max_threads) == (100, 150)
    assert ds.server.queue_size == 1000
    assert ds.server.timeout_seconds == 30
    assert (ds.min_replicas, ds.max_replicas) == (10, 60)
    assert ds.autoscaling.target_rps_per_pod == 120
    assert ds.autoscaling.scale_down.stabilization_window_seconds == 300
    assert ds.database is None and not ds.uses_pgbouncer


@pytest.mark.parametrize(
    ("server_type", "threads", "max_threads"),
    [("gunicorn-sync", 1, 1), ("gunicorn-gevent", 500, 500), ("gunicorn-gthread", 32, 32)],
)
def test_threads_default_per_server_type(server_type, threads, max_threads):
    ds = spec.parse(with_spec(server={"type": server_type}))
    assert (ds.server.threads, ds.server.max_threads) == (threads, max_threads)


def test_min_above_max_names_both_fields():
    assert problems_of(with_spec(replicas={"min": 40, "max": 20})) == [
        "spec.replicas.min: must be <= spec.replicas.max (40 > 20)"
    ]


@pytest.mark.parametrize(("fields", "expected"), INVALID_FIELDS)
def test_bad_fields_are_named(fields, expected):
    problems = problems_of(with_spec(**fields))
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize(("fields", "path"), UNKNOWN_FIELDS)
def test_unknown_fields_are_refused_anywhere_naming_their_path(fields, path):
    assert f"{path}: unknown field (not declared in the schema)" in problems_of(with_spec(**fields))


def test_fields_below_preserve_unknown_fields_and_maps_are_free():
    ds = spec.parse(with_spec(
        env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        affinity={"nodeAffinity": {"anything": True}},
        podLabels={"team": "shop"},
        resources={"requests": {"cpu": "100m", "memory": 64}},
    ))
    assert ds.env[0]["valueFrom"]["secretKeyRef"]["key"] == "k"


def test_an_unknown_top_level_field_is_refused():
    body = with_spec()
    body["sepc"] = {}
    assert "sepc: unknown field (not declared in the schema)" in problems_of(body)


def test_missing_required_fields_are_named():
    body = copy.deepcopy(MINIMAL)
    del body["spec"]["image"]
    assert problems_of(body) == ["spec.image: required"]


def test_budget_too_small_says_the_largest_max_it_supports():
    database = {"secretName": "db", "maxConnections": 40}
    body = with_spec(replicas={"min": 2, "max": 60}, database=database)
    one_each, with_draining = problems_of(body)
    assert one_each.startswith("spec.database.maxConnections:")
    # 40 - 3 reserved = 37 connections; one per pod plus one rollout surge pod: max 36.
    assert one_each.endswith("the worker groups' pods = 36 here (budget 37 cannot give 61 "
                             "pods a connection each; use pooling.mode: pooler)")
    # pgbouncer: one more for each pod that may terminate beside its replacement: max 17.
    assert with_draining.startswith("spec.database.maxConnections: with pgbouncer")
    assert with_draining.endswith("(37 < 2 x 61); the largest spec.replicas.max it supports "
                                  "is 17 here (budget 37 cannot give 61 pods a connection each "
                                  "and keep one for each terminating pod; use pooling.mode: "
                                  "pooler)")
    assert spec.parse(
        with_spec(replicas={"min": 2, "max": 17}, database=database)
    ).max_replicas == 17
    (problem,) = problems_of(with_spec(replicas={"min": 2, "max": 18}, database=database))
    assert problem.startswith("spec.database.maxConnections: with pgbouncer")
    django = with_spec(replicas={"min": 2, "max": 36}, database=database,
                       pooling={"mode": "django"})
    assert spec.parse(django).max_replicas == 36


def test_pool_size_override_must_fit_the_budget():
    body = with_spec(
        replicas={"min": 1, "max": 9},
        database={"secretName": "db", "maxConnections": 53},
        pgbouncer={"poolSize": 6},
    )
    assert problems_of(body)[0].endswith("((6 + 1) x 10 > 50)")
    body["spec"]["pgbouncer"]["poolSize"] = 4
    assert spec.parse(body).pgbouncer.pool_size == 4


def test_pgbouncer_needs_the_secret():
    body = with_spec(database={"maxConnections": 400})
    assert problems_of(body)[0].startswith("spec.database.secretName: required")
    body["spec"]["pgbouncer"] = {"enabled": False}
    # Without pgbouncer (and no mode) every thread connects directly: 2 pods x 1 thread fit.
    body["spec"]["replicas"] = {"min": 1, "max": 1}
    body["spec"]["server"] = {"type": "gunicorn-sync"}
    assert spec.parse(body).database.secret_name is None


def test_every_cel_rule_of_the_crd_has_a_python_twin():
    """The Python checks mirror the CRD's CEL rules: same field, same words."""
    rules = []

    def walk(schema):
        rules.extend(schema.get("x-kubernetes-validations", []))
        for sub in schema.get("properties", {}).values():
            walk(sub)

    walk(spec.spec_schema())
    from djangoscale import budget

    # The budget's rules live with its arithmetic; every other rule in spec.py.
    source = "".join(Path(module.__file__).read_text() for module in (spec, budget))
    assert len(rules) >= 7
    for rule in rules:
        text = rule.get("message") or rule["messageExpression"]
        field_name = text.strip("'").split(":")[0]
        assert field_name.startswith("spec."), text
        assert f'"{field_name}:' in source or f"f\"{field_name}:" in source, field_name


def test_worker_groups_share_the_budget_and_default_to_fair_threads():
    body = with_spec(
        replicas={"min": 2, "max": 10},
        database={"secretName": "db", "maxConnections": 40},
        broker={"secretName": "broker"},
        workers=[{"name": "default", "app": "shop.celery:app", "replicas": {"max": 4}}],
    )
    ds = spec.parse(body)
    (group,) = ds.workers
    assert (group.pool, group.prefetch_multiplier, group.acks_late) == ("threads", 1, True)
    assert group.queues == ("celery",)
    # 10 + 1 web pods and 4 + 1 worker pods hold pools.
    assert ds.max_pods == 16
    body["spec"]["workers"][0]["replicas"]["max"] = 30
    one_each, with_draining = problems_of(body)
    # 37 connections, 31 worker pods: the web side may have at most 37 - 1 - 31 = 5.
    assert "= 5 here (budget 37 cannot give 42 pods" in one_each
    # With pgbouncer 37 // 2 = 18 pods at most: the 31 worker pods alone are too many.
    assert "no spec.replicas.max fits beside the worker groups' pods here (" in with_draining


def test_gevent_workers_need_an_explicit_opt_in():
    body = with_spec(
        broker={"secretName": "broker"},
        workers=[{"name": "io", "app": "shop.celery", "pool": "gevent"}],
    )
    assert problems_of(body)[0].startswith("spec.workers[0].pool: gevent needs allowGevent")
    body["spec"]["workers"][0]["allowGevent"] = True
    assert spec.parse(body).workers[0].pool == "gevent"


def test_workers_need_a_broker():
    body = with_spec(workers=[{"name": "io", "app": "shop.celery"}])
    assert problems_of(body) == ["spec.broker: required when spec.workers is set"]


@pytest.mark.parametrize("name", ["Shop", "1shop", "shop_web", "a" * 48, "shop-"])
def test_names_that_cannot_name_the_children_are_refused(name):
    body = copy.deepcopy(MINIMAL)
    body["metadata"]["name"] = name
    assert problems_of(body)[0].startswith("metadata.name: must be a DNS-1035 label")


def versioned(generation: int, **fields):
    body = with_spec(**fields)
    body["metadata"].update(uid="u1", generation=generation)
    return body


def test_parsed_specs_parse_an_object_once_a_generation(monkeypatch):
    calls = []
    real_parse = spec.parse
    monkeypatch.setattr(spec, "parse", lambda body: calls.append(body) or real_parse(body))
    parsed = spec.ParsedSpecs()
    first = parsed.parse(versioned(1))
    assert parsed.parse(versioned(1)) is first and len(calls) == 1
    # An edit bumps the generation: the new spec is read, not the kept one.
    edited = parsed.parse(versioned(2, port=9000))
    assert (edited.port, edited.generation, len(calls)) == (9000, 2, 2)
    # A body without uid and generation (not from the API server) is parsed every time.
    parsed.parse(MINIMAL)
    parsed.parse(MINIMAL)
    assert len(calls) == 4


def test_parsed_specs_keep_raising_a_bad_spec_and_forget_deleted_objects():
    parsed = spec.ParsedSpecs()
    bad = versioned(1, port=-1)
    for _ in range(2):  # kept, and raised again each time with the field named
        with pytest.raises(spec.SpecError, match="spec.port"):
            parsed.parse(bad)
    assert parsed.parse(versioned(2)).port == 8000  # fixed by an edit
    parsed.retain([("web", "other")])
    assert parsed._parsed == {}
