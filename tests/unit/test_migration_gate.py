# ruff: noqa: F811 (the fixtures imported from test_reconcile are parameters here)
"""The migration Job builder, the gate's state machine, and the reconciler driving both against
the in-memory API: the Deployment keeps its live template until the Job succeeds."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.migration import (
    MIGRATION_ANNOTATION,
    TTL_SECONDS_AFTER_FINISHED,
    build_migration_job,
    migration_hash,
    migration_job_name,
)
from djangoscale.context import OperatorContext
from djangoscale.contract import API_VERSION, KIND
from djangoscale.controller import handlers
from djangoscale.controller.gate import Action, GateView, JobPhase, decide, job_phase
from tests.fixtures.fake_api import FakeApi
from tests.unit import test_reconcile
from tests.unit.test_reconcile import api, context, warnings  # noqa: F401 (its fixtures)

LOGGER = logging.getLogger("test")
# test_reconcile's object, with migrations on (the default with a database) and app env.
SHOP: dict[str, Any] = copy.deepcopy(test_reconcile.SHOP)
del SHOP["spec"]["migrations"]
SHOP["spec"]["env"] = [{"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"}]
SHOP["spec"]["envFrom"] = [{"configMapRef": {"name": "shop-config"}}]


def parsed(**fields: Any) -> spec.DjangoService:
    body = copy.deepcopy(SHOP)
    body["spec"].update(fields)
    return spec.parse(body)


# -- the builder ------------------------------------------------------------------------------

def test_migrations_are_on_by_default_with_a_database_only():
    assert parsed().migrations.enabled
    assert parsed().migrations.command == ("python", "manage.py", "migrate", "--noinput")
    without = copy.deepcopy(SHOP)
    del without["spec"]["database"]
    ds = spec.parse(without)
    assert not ds.migrations.enabled
    assert [c["kind"] for c in build_children(ds)].count("Job") == 0


def test_the_job_runs_the_new_image_with_the_apps_env_straight_to_the_database():
    ds = parsed(migrations={"activeDeadlineSeconds": 120, "backoffLimit": 2})
    job = build_migration_job(ds)
    assert job["metadata"]["name"] == f"shop-migrate-{migration_hash(ds)}"
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["spec"]["ttlSecondsAfterFinished"] == TTL_SECONDS_AFTER_FINISHED
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "shop:1"
    assert container["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert container["envFrom"] == [{"configMapRef": {"name": "shop-config"}}]
    env = {item["name"]: item for item in container["env"]}
    assert env["DJANGO_SETTINGS_MODULE"]["value"] == "shop.settings"
    # The user's Secret's host, not the pods' pgbouncer on 127.0.0.1; one connection, no pool.
    assert env["DATABASE_HOST"]["valueFrom"]["secretKeyRef"] == {"name": "shop-db", "key": "host"}
    assert env["DATABASE_CONN_MAX_AGE"]["value"] == "0"
    assert "DATABASE_URL" not in env and "DATABASE_POOL_MAX_SIZE" not in env
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"]


def test_the_job_name_changes_with_the_image_or_command_only():
    first = parsed()
    assert migration_job_name(parsed(replicas={"min": 3, "max": 6})) == migration_job_name(first)
    assert migration_job_name(parsed(image="shop:2")) != migration_job_name(first)
    other = parsed(migrations={"command": ["python", "manage.py", "migrate", "shop"]})
    assert migration_job_name(other) != migration_job_name(first)
    # At most 63 characters (the job-name label) for the longest service name.
    long = parsed()
    long_name = "a" * spec.MAX_NAME_LENGTH
    body = copy.deepcopy(SHOP)
    body["metadata"]["name"] = long_name
    assert len(migration_job_name(spec.parse(body))) == 63 and long is not None


def test_render_shows_the_job_before_the_deployments_and_marks_every_deployment():
    children = build_children(parsed())
    kinds = [c["kind"] for c in children]
    assert kinds.index("Job") == kinds.index("Deployment") - 1
    deployments = [c for c in children if c["kind"] == "Deployment"]
    assert deployments and all(
        d["metadata"]["annotations"][MIGRATION_ANNOTATION] == migration_hash(parsed())
        for d in deployments)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"database": {"secretName": "db", "maxConnections": 100, "reservedConnections": 0}},
         "spec.database.reservedConnections: the migration Job connects on a reserved"),
        ({"migrations": {"command": []}}, "spec.migrations.command: must have at least 1"),
    ],
)
def test_migration_specs_that_cannot_run_are_refused(fields, expected):
    body = copy.deepcopy(SHOP)
    body["spec"].update(fields)
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(body)
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


def test_no_reserved_connection_is_fine_with_migrations_off():
    ds = parsed(database={"secretName": "db", "maxConnections": 100, "reservedConnections": 0},
                migrations={"enabled": False})
    assert not ds.migrations.enabled


# -- the state machine ------------------------------------------------------------------------

def view(**fields: Any) -> GateView:
    base: dict[str, Any] = dict(wanted="new", migrated="old", job=JobPhase.ABSENT,
                                job_generation=None, generation=2, failed_generation=None)
    return GateView(**{**base, **fields})


@pytest.mark.parametrize(
    ("case", "fields", "action"),
    [
        ("image change: start the Job", {}, Action.START),
        ("first deploy: start the Job", {"migrated": None}, Action.START),
        ("Job running", {"job": JobPhase.RUNNING, "job_generation": 2}, Action.WAIT),
        ("Job succeeded", {"job": JobPhase.SUCCEEDED, "job_generation": 2}, Action.OPEN),
        ("Job failed", {"job": JobPhase.FAILED, "job_generation": 2}, Action.FAILED),
        ("failed Job gone by TTL, same spec", {"failed_generation": 2}, Action.FAILED),
        ("spec change after a failure", {"job": JobPhase.FAILED, "job_generation": 1},
         Action.RETRY),
        ("spec change after the failed Job's TTL", {"failed_generation": 1}, Action.START),
        ("replay of the same spec", {"migrated": "new"}, Action.OPEN),
        ("replay after its Job's TTL", {"migrated": "new", "failed_generation": None},
         Action.OPEN),
        ("an older image's Job still runs", {"other_job_running": True}, Action.WAIT),
    ],
)
def test_the_gate(case, fields, action):
    assert decide(view(**fields)) is action, case


@pytest.mark.parametrize(
    ("conditions", "phase"),
    [
        (None, JobPhase.RUNNING),
        ([{"type": "Complete", "status": "True"}], JobPhase.SUCCEEDED),
        ([{"type": "SuccessCriteriaMet", "status": "True"}], JobPhase.RUNNING),
        ([{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}],
         JobPhase.FAILED),
        ([{"type": "Failed", "status": "False"}], JobPhase.RUNNING),
    ],
)
def test_job_phase_reads_the_terminal_conditions(conditions, phase):
    job = {"status": {"conditions": conditions} if conditions else {}}
    assert job_phase(job) is phase
    assert job_phase(None) is JobPhase.ABSENT


# -- the reconciler ---------------------------------------------------------------------------

def run_change(context: OperatorContext, api: FakeApi, wanted: dict[str, Any]) -> dict[str, Any]:
    """Store the DjangoService with spec `wanted` (a new generation when that changes it), run
    the change handler, return the stored object."""
    live = api.get(API_VERSION, KIND, "web", "shop")
    body = copy.deepcopy(live or SHOP)
    body["spec"] = copy.deepcopy(wanted)
    if live is not None and body["spec"] != live["spec"]:
        body["metadata"]["generation"] += 1
    api.put(body)
    handlers.on_change(body=kopf.Body(api.get(API_VERSION, KIND, "web", "shop")),
                       logger=LOGGER, memo=context)
    stored = api.get(API_VERSION, KIND, "web", "shop")
    assert stored is not None
    return stored


def reconcile(context: OperatorContext, api: FakeApi, **spec_fields: Any) -> dict[str, Any]:
    """The stored spec with `spec_fields` changed, reconciled."""
    live = api.get(API_VERSION, KIND, "web", "shop")
    return run_change(context, api, {**(live or SHOP)["spec"], **spec_fields})


def finish(api: FakeApi, name: str, outcome: str, log: str = "") -> None:
    """What the Job controller would write: the Job's terminal condition (and its pod)."""
    job = api.get("batch/v1", "Job", "web", name)
    assert job is not None
    failed = outcome == "Failed"
    job["status"] = {"conditions": [{
        "type": outcome, "status": "True",
        "reason": "BackoffLimitExceeded" if failed else "Completed",
        "message": "Job has reached the specified backoff limit" if failed else "",
    }]}
    api.put(job)
    if log:
        api.put({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": f"{name}-x1", "namespace": "web",
                              "creationTimestamp": "2026-01-01T00:00:00Z",
                              "labels": {"batch.kubernetes.io/job-name": name}}})
        api.logs[("web", f"{name}-x1", "migrate")] = log


def condition(live: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in live["status"]["conditions"] if c["type"] == type_)


def image_of(api: FakeApi) -> str:
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    assert deployment is not None
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def jobs(api: FakeApi) -> list[str]:
    return [job["metadata"]["name"] for job in api.list("batch/v1", "Job", "web")]


def test_first_deploy_creates_no_deployment_until_the_job_succeeds(context, api, warnings):
    live = reconcile(context, api)
    job = migration_job_name(spec.parse(live))
    assert jobs(api) == [job]
    assert api.get("apps/v1", "Deployment", "web", "shop") is None
    assert api.get("v1", "Service", "web", "shop") is not None
    assert condition(live, "Progressing")["reason"] == "Migrating"
    assert condition(live, "Ready")["status"] == "False"
    finish(api, job, "Complete")
    live = reconcile(context, api)
    assert image_of(api) == "shop:1"
    assert condition(live, "Progressing")["reason"] != "Migrating"
    assert jobs(api) == [job]  # never a second Job
    assert warnings == []


def migrated(context: OperatorContext, api: FakeApi) -> dict[str, Any]:
    live = reconcile(context, api)
    finish(api, migration_job_name(spec.parse(live)), "Complete")
    return reconcile(context, api)


def test_a_new_image_waits_for_its_job_then_rolls_out(context, api, warnings):
    migrated(context, api)
    live = reconcile(context, api, image="shop:2", replicas={"min": 3, "max": 6})
    new_job = migration_job_name(spec.parse(live))
    assert new_job in jobs(api) and len(jobs(api)) == 2
    assert image_of(api) == "shop:1"  # the live template is kept ...
    deployment = api.get("apps/v1", "Deployment", "web", "shop")
    assert deployment is not None
    assert deployment["metadata"]["annotations"][MIGRATION_ANNOTATION] != migration_hash(
        spec.parse(live))
    assert condition(live, "Progressing")["status"] == "True"
    assert condition(live, "Progressing")["reason"] == "Migrating"
    live = reconcile(context, api)  # the resync while it runs changes nothing
    assert image_of(api) == "shop:1" and len(jobs(api)) == 2
    finish(api, new_job, "Complete")
    live = reconcile(context, api)
    assert image_of(api) == "shop:2"  # ... until the Job succeeded
    assert condition(live, "Degraded")["status"] == "False"


def test_a_failed_migration_keeps_the_old_pods_and_says_why_once(context, api, warnings):
    migrated(context, api)
    live = reconcile(context, api, image="shop:broken")
    job = migration_job_name(spec.parse(live))
    finish(api, job, "Failed", log="Applying shop.0002_price...\n"
           "django.db.utils.ProgrammingError: column \"price\" does not exist\n")
    live = reconcile(context, api)
    degraded = condition(live, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MigrationFailed")
    assert 'column "price" does not exist' in degraded["message"]
    assert job in degraded["message"]
    assert condition(live, "Progressing")["status"] == "False"
    assert image_of(api) == "shop:1"
    assert warnings == [("MigrationFailed", degraded["message"])]
    # Resyncs: no new Job, no new event, nothing rewritten.
    writes = list(api.writes)
    reconcile(context, api)
    reconcile(context, api)
    assert len(warnings) == 1 and api.writes == writes
    # The TTL removes the Job: still failed, still no new Job.
    api.delete("batch/v1", "Job", "web", job)
    live = reconcile(context, api)
    assert job not in jobs(api)
    assert condition(live, "Degraded")["reason"] == "MigrationFailed"


def test_a_spec_change_after_a_failure_retries_once(context, api, warnings):
    migrated(context, api)
    live = reconcile(context, api, image="shop:broken")
    job = migration_job_name(spec.parse(live))
    finish(api, job, "Failed", log="boom\n")
    reconcile(context, api)
    before = api.written("delete")
    # Same image, a fixed Secret reference: the same Job name, run again.
    live = reconcile(context, api, env=[{"name": "DJANGO_SETTINGS_MODULE", "value": "shop.prod"}])
    assert api.written("delete")[len(before):] == [("delete", "Job", job)]
    retried = api.get("batch/v1", "Job", "web", job)
    assert retried is not None and "status" not in retried
    assert condition(live, "Progressing")["reason"] == "Migrating"
    assert condition(live, "Degraded")["status"] == "False"
    reconcile(context, api)  # the resync does not retry it again
    assert len(api.written("delete")) == len(before) + 1
    # A fixed image: a new Job, and the rollout once it succeeds.
    live = reconcile(context, api, image="shop:fixed")
    fixed = migration_job_name(spec.parse(live))
    assert fixed not in jobs(api)  # the retried Job still runs: never two migrations at once
    finish(api, job, "Failed", log="boom\n")
    live = reconcile(context, api)
    finish(api, fixed, "Complete")
    reconcile(context, api)
    assert image_of(api) == "shop:fixed"


def test_replaying_the_same_spec_runs_no_job(context, api, warnings):
    live = migrated(context, api)
    job = migration_job_name(spec.parse(live))
    api.delete("batch/v1", "Job", "web", job)  # its TTL ran out
    writes = len(api.writes)
    reconcile(context, api)
    assert jobs(api) == []
    assert all(kind != "Job" for _, kind, _ in api.writes[writes:])


def test_turning_migrations_off_opens_the_gate(context, api, warnings):
    reconcile(context, api)
    assert api.get("apps/v1", "Deployment", "web", "shop") is None
    reconcile(context, api, migrations={"enabled": False})
    assert image_of(api) == "shop:1"


def test_a_childs_event_leaves_a_new_failure_to_the_reconcile_and_its_event(
        context, api, warnings):
    from djangoscale.controller.reconcile import refresh_status

    migrated(context, api)
    live = reconcile(context, api, image="shop:broken")
    finish(api, migration_job_name(spec.parse(live)), "Failed", log="boom\n")
    assert refresh_status(api, live) is None
    live = reconcile(context, api)
    assert warnings and warnings[-1][0] == "MigrationFailed"
    status = refresh_status(api, live)  # once reported, refreshes keep it
    assert status is not None
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "MigrationFailed"
