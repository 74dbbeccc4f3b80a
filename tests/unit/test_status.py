"""`status.database` for each pooling mode, and when a status write is needed."""

from __future__ import annotations

from djangoscale import spec
from djangoscale.controller.reconcile import status_changed
from djangoscale.controller.status import observed_status
from tests.unit.test_budget_arithmetic import body_with


def database_of(**fields):
    return observed_status(spec.parse(body_with(**fields)), None, None)["database"]


def test_external_says_plainly_that_the_database_is_not_guarded():
    database = database_of(pooling={"mode": "external"})
    assert database["guarded"] is False
    assert database["guard"].startswith("not guarded: with pooling.mode external")
    assert "poolSizePerPod" not in database
    assert (database["maxConnections"], database["budget"]) == (30, 27)


def test_pooled_modes_report_the_pool_and_are_guarded():
    database = database_of()
    assert database["guarded"] is True
    assert database["poolingMode"] == "pgbouncer"
    # (30 - 3) // (5 + 1) - 1 kept per draining pod = 3 per pod, 18 at max replicas plus
    # the surge pod (and 6 more for as many draining pods: 24 <= 27).
    assert (database["poolSizePerPod"], database["connectionsAtMaxReplicas"]) == (3, 18)


def test_none_reports_every_thread_it_admitted():
    database = database_of(pooling={"mode": "none"}, database={"maxConnections": 200})
    assert database["guarded"] is True
    assert database["connectionsAtMaxReplicas"] == 6 * 30


def test_a_field_another_writer_added_does_not_force_a_write():
    ours = {"database": {"budget": 27, "guarded": True}, "replicas": 2}
    live = {"status": {"database": {"budget": 27, "guarded": True, "serverConnections": 12},
                       "replicas": 2}}
    assert not status_changed(live, ours)
    ours["database"]["budget"] = 26
    assert status_changed(live, ours)
    assert status_changed({"status": {}}, {"replicas": 0})


def test_the_crd_declares_every_status_database_field_both_writers_set():
    from djangoscale.autoscaling.collector import database_figures
    from tests.unit.test_budget_guard_rules import reading

    declared = spec.crd_version()["schema"]["openAPIV3Schema"]["properties"]["status"][
        "properties"]["database"]["properties"]
    # A stray comma in a flow mapping would declare a field named by half a description.
    assert all(set(schema) <= {"type", "description"} for schema in declared.values())
    written = set(database_of()) | set(database_of(pooling={"mode": "external"}))
    written |= set(database_figures(reading(3)) or {})
    assert written <= set(declared)
