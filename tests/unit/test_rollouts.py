"""Staggered rollouts: a pod template change nobody asked for (an operator upgrade) rolls one
DjangoService at a time (`RolloutGate`), the next only once the previous is Available; a spec
edit rolls at once."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest

from djangoscale.builders import build_children
from djangoscale.context import OperatorContext
from djangoscale.contract import API_VERSION, KIND
from djangoscale.controller import handlers
from djangoscale.controller import reconcile as reconcile_module
from djangoscale.controller.reconcile import reconcile, write_status
from djangoscale.rollouts import RolloutGate, user_asked
from djangoscale.settings import OperatorSettings
from tests.fixtures.fake_api import FakeApi

NEW_LABEL = ("builders.example/version", "2")
NAMES = ["a", "b", "c"]


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": name, "namespace": "web", "uid": f"uid-{name}", "generation": 1},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 2, "max": 4}},
    }


def test_gate_admits_up_to_its_limit_first_come_first_served():
    gate = RolloutGate(limit=1)
    assert gate.admit(("web", "a"))
    assert gate.admit(("web", "a"))  # holding its slot
    assert not gate.admit(("web", "b"))
    assert not gate.admit(("web", "c"))
    assert gate.waiting == [("web", "b"), ("web", "c")]
    assert gate.position(("web", "c")) == 2
    assert gate.finish(("web", "a")) == [("web", "b")]
    assert not gate.admit(("web", "c"))  # b was first in line
    assert gate.admit(("web", "b"))
    assert gate.rolling == [("web", "b")] and gate.waiting == [("web", "c")]


def test_gate_with_a_larger_limit_and_turned_off():
    gate = RolloutGate(limit=2)
    assert gate.admit(("x", "a")) and gate.admit(("x", "b"))
    assert not gate.admit(("x", "c"))
    assert gate.finish(("x", "a")) == [("x", "c")]
    off = RolloutGate(limit=0)
    assert all(off.admit(("x", name)) for name in NAMES)


def test_gate_forgets_deleted_services():
    gate = RolloutGate(limit=1)
    gate.admit(("web", "a"))
    gate.admit(("web", "b"))
    gate.admit(("web", "c"))
    # `a` was deleted mid-rollout: its slot goes to the next in line that still exists.
    assert gate.retain([("web", "c")]) == [("web", "c")]
    assert gate.rolling == [] and gate.waiting == [("web", "c")]


def test_user_asked_is_a_spec_newer_than_the_status():
    body = service("a")
    assert user_asked(body)  # never reconciled
    body["status"] = {"observedGeneration": 1}
    assert not user_asked(body)
    body["metadata"]["generation"] = 2
    assert user_asked(body)


# -- the reconciler with the gate, against the in-memory API ----------------------------------


def settle(api: FakeApi, name: str) -> None:
    """The Deployment controller's part: every pod up to date and available."""
    key = ("apps/v1", "Deployment", "web", name)
    live = api.objects[key]
    replicas = live["spec"].get("replicas", 1)
    live["status"] = {"observedGeneration": live["metadata"]["generation"],
                      "replicas": replicas, "updatedReplicas": replicas,
                      "readyReplicas": replicas, "availableReplicas": replicas}


def run(api: FakeApi, name: str, gate: RolloutGate) -> Any:
    body = api.get(API_VERSION, KIND, "web", name)
    assert body is not None
    outcome = reconcile(api, body, gate)
    write_status(api, body, outcome.status)
    return outcome


def template_labels(api: FakeApi, name: str) -> dict[str, str]:
    live = api.get("apps/v1", "Deployment", "web", name)
    assert live is not None
    return dict(live["spec"]["template"]["metadata"]["labels"])


def progressing(api: FakeApi, name: str) -> dict[str, Any]:
    live = api.get(API_VERSION, KIND, "web", name)
    assert live is not None
    return next(c for c in live["status"]["conditions"] if c["type"] == "Progressing")


@pytest.fixture
def upgraded(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """Three DjangoServices settled by the old builders, then builders that add a label."""
    api = FakeApi()
    gate = RolloutGate(limit=1)
    for name in NAMES:
        api.put(service(name))
        run(api, name, gate)
        settle(api, name)
        run(api, name, gate)
        assert progressing(api, name)["status"] == "False"

    def new_builders(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        children = build_children(*args, **kwargs)
        for child in children:
            if child["kind"] == "Deployment":
                child["spec"]["template"]["metadata"]["labels"][NEW_LABEL[0]] = NEW_LABEL[1]
        return children

    monkeypatch.setattr(reconcile_module, "build_children", new_builders)
    return api


def test_an_upgrade_rolls_one_service_at_a_time(upgraded):
    api, gate = upgraded, RolloutGate(limit=1)
    for name in NAMES:  # the operator's resume of every object after the upgrade
        run(api, name, gate)
    rolled = [name for name in NAMES if NEW_LABEL[0] in template_labels(api, name)]
    assert rolled == ["a"]
    assert progressing(api, "b")["reason"] == "RolloutQueued"
    assert "position 1" in progressing(api, "b")["message"]
    assert "position 2" in progressing(api, "c")["message"]

    # a's pods are not Available yet: a resync changes nothing.
    assert run(api, "a", gate).next_rollouts == []
    assert NEW_LABEL[0] not in template_labels(api, "b")

    settle(api, "a")
    assert run(api, "a", gate).next_rollouts == [("web", "b")]
    run(api, "b", gate)
    assert NEW_LABEL[0] in template_labels(api, "b")
    assert NEW_LABEL[0] not in template_labels(api, "c")
    settle(api, "b")
    assert run(api, "b", gate).next_rollouts == [("web", "c")]
    run(api, "c", gate)
    assert NEW_LABEL[0] in template_labels(api, "c")
    settle(api, "c")
    run(api, "c", gate)
    assert gate.rolling == [] and gate.waiting == []
    assert all(progressing(api, name)["status"] == "False" for name in NAMES)


def test_a_spec_edit_rolls_at_once_even_while_others_wait(upgraded):
    api, gate = upgraded, RolloutGate(limit=1)
    for name in NAMES:
        run(api, name, gate)
    assert gate.waiting == [("web", "b"), ("web", "c")]
    edited = api.get(API_VERSION, KIND, "web", "c")
    assert edited is not None
    edited = copy.deepcopy(edited)
    edited["spec"]["image"] = "shop:2"
    edited["metadata"]["generation"] = 2
    api.put(edited)
    run(api, "c", gate)
    live = api.get("apps/v1", "Deployment", "web", "c")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "shop:2"
    # ...and it no longer waits: b is next, and after b nobody.
    assert gate.waiting == [("web", "b")]


def test_the_child_event_that_completes_a_rollout_starts_the_next(upgraded):
    """Through the handlers: `a`'s Deployment becoming Available starts `b` at once (not at the
    next resync)."""
    api = upgraded
    context = OperatorContext.create(OperatorSettings(max_concurrent_rollouts=1), api)
    logger = logging.getLogger("test")
    for name in NAMES:
        live = api.get(API_VERSION, KIND, "web", name)
        handlers.on_change(body=kopf.Body(live), logger=logger, memo=context)
    assert context.rollouts.rolling == [("web", "a")]
    settle(api, "a")
    deployment = api.get("apps/v1", "Deployment", "web", "a")
    handlers.on_child_event(body=kopf.Body(deployment), event={"type": "MODIFIED"},
                            namespace="web", logger=logger, memo=context)
    assert context.rollouts.rolling == [("web", "b")]
    assert NEW_LABEL[0] in template_labels(api, "b")
    assert NEW_LABEL[0] not in template_labels(api, "c")
