"""The operator-wide loops: they run only on the active kopf peer, survive a failed round or a
failed object, and read every DjangoService from the index."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from djangoscale import background
from djangoscale.autoscaling.handlers import ActivePeerLabel
from djangoscale.context import OperatorContext, PeeringSeat
from djangoscale.contract import ACTIVE_PEER_LABEL
from djangoscale.peering import active_peer_patch, is_active, is_active_peer, live_peers
from djangoscale.settings import OperatorSettings
from tests.fixtures.fake_api import FakeApi

NOW = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.UTC)
LOGGER = logging.getLogger("test")


def record(priority: int, seconds_ago: float) -> dict[str, Any]:
    seen = (NOW - datetime.timedelta(seconds=seconds_ago)).replace(tzinfo=None)
    return {"priority": priority, "lifetime": 20, "lastseen": seen.isoformat()}


def test_only_the_highest_live_priority_is_active():
    status = {"pod-0": record(0, 2), "pod-1": record(1, 3)}
    assert live_peers(status, NOW) == [(1, "pod-1"), (0, "pod-0")]
    assert is_active(status, 1, NOW)
    assert not is_active(status, 0, NOW)
    # pod-1's record expired (it crashed): pod-0 takes over.
    assert is_active({"pod-0": record(0, 2), "pod-1": record(1, 30)}, 0, NOW)
    # Two at the same priority: kopf pauses both, so do the loops.
    assert not is_active({"a": record(1, 1), "b": record(1, 1)}, 1, NOW)
    assert is_active(None, 0, NOW)  # no record yet


def test_the_active_peer_is_known_by_its_own_live_record():
    status = {"pod-0": record(0, 2), "pod-1": record(1, 3)}
    assert is_active_peer(status, "pod-1", NOW)
    assert not is_active_peer(status, "pod-0", NOW)
    # Before kopf wrote our record, a starting pod is not active (is_active would say so).
    assert not is_active_peer({"pod-1": record(1, 3)}, "pod-0", NOW)
    assert not is_active_peer(None, "pod-0", NOW)
    # The other's record expired: a takeover. A tie: kopf pauses both.
    assert is_active_peer({"pod-0": record(0, 2), "pod-1": record(1, 30)}, "pod-0", NOW)
    assert not is_active_peer({"a": record(1, 1), "b": record(1, 1)}, "a", NOW)
    assert active_peer_patch(True) == {"metadata": {"labels": {ACTIVE_PEER_LABEL: "true"}}}
    assert active_peer_patch(False) == {"metadata": {"labels": {ACTIVE_PEER_LABEL: None}}}


class PodPatches(FakeApi):
    """Records the raw merge patches of pods (the label writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[tuple[str, Any]] = []

    def call(self, method: str, path: str, body: Any = None,
             query: list[tuple[str, str]] | None = None,
             content_type: str = "application/json") -> Any:
        if method == "PATCH" and "/pods/" in path:
            assert content_type == "application/merge-patch+json"
            self.patches.append((path, body))
            return {}
        return super().call(method, path, body, query, content_type)


def test_the_active_peer_labels_its_pod_and_unlabels_it_on_standby():
    api = PodPatches()
    context = OperatorContext.create(OperatorSettings(), api)
    context.peering = PeeringSeat("djangoscale", 0)
    label = ActivePeerLabel(context, "ops", "djangoscale-0")
    path = "/api/v1/namespaces/ops/pods/djangoscale-0"

    def peers(**records: dict[str, Any]) -> None:
        api.put({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                 "metadata": {"name": "djangoscale"}, "status": records})
        context._peering = (float("-inf"), None)  # read it again now

    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None).isoformat()
    peers(**{"djangoscale-0": {"priority": 0, "lifetime": 20, "lastseen": now},
             "djangoscale-1": {"priority": 1, "lifetime": 20, "lastseen": now}})
    asyncio.run(label.round())
    # The first round writes either way: a restarted container may find its old label.
    assert api.patches == [(path, active_peer_patch(False))]
    asyncio.run(label.round())
    assert len(api.patches) == 1  # nothing changed, nothing written
    peers(**{"djangoscale-0": {"priority": 0, "lifetime": 20, "lastseen": now}})
    asyncio.run(label.round())
    assert api.patches[-1] == (path, active_peer_patch(True))
    peers(**{"djangoscale-0": {"priority": 0, "lifetime": 20, "lastseen": now},
             "djangoscale-1": {"priority": 1, "lifetime": 20, "lastseen": now}})
    asyncio.run(label.round())
    assert api.patches[-1] == (path, active_peer_patch(False))
    assert len(api.patches) == 3


def test_the_context_asks_the_peering_object():
    api = FakeApi()
    context = OperatorContext.create(OperatorSettings(), api)
    assert asyncio.run(context.active())  # standalone: always
    now = datetime.datetime.now(datetime.UTC)
    seen = now.replace(tzinfo=None).isoformat()
    api.put({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
             "metadata": {"name": "djangoscale"},
             "status": {"pod-0": {"priority": 0, "lifetime": 20, "lastseen": seen},
                        "pod-1": {"priority": 1, "lifetime": 20, "lastseen": seen}}})
    context.peering = PeeringSeat("djangoscale", 0)
    assert not asyncio.run(context.active())
    context.peering, context._peering = PeeringSeat("djangoscale", 1), (float("-inf"), None)
    assert asyncio.run(context.active())


def test_a_loop_works_only_while_active_and_survives_a_failed_round():
    calls: list[str] = []
    active = [False]

    async def work() -> None:
        calls.append("round")
        if len(calls) == 1:
            raise RuntimeError("one bad round")

    async def is_on() -> bool:
        return active[0]

    async def scenario() -> None:
        task = asyncio.create_task(background.run_every(0.01, work, LOGGER, "test",
                                                        active=is_on))
        await asyncio.sleep(0.1)
        assert calls == []  # a standby does nothing
        active[0] = True
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    assert len(calls) >= 3  # went on after the failed first round


def test_one_failing_object_does_not_stop_the_others():
    done: list[int] = []

    async def work(item: int) -> None:
        if item == 2:
            raise ValueError("broken object")
        done.append(item)

    asyncio.run(background.each([1, 2, 3], work, LOGGER, "test", concurrency=2))
    assert sorted(done) == [1, 3]


def test_latest_reads_one_body_per_service():
    index = {("web", "shop"): [{"metadata": {"name": "shop"}}], ("web", "gone"): []}
    assert background.latest(index) == {("web", "shop"): {"metadata": {"name": "shop"}}}  # type: ignore[arg-type]
