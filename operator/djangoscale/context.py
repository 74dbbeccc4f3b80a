"""What the handlers share, built once at startup and passed to every handler as kopf's `memo`.

`djangoscale run` builds an `OperatorContext` from the settings and hands it to
`kopf.operator(memo=...)`. kopf gives each resource object a shallow copy of it, so the objects
it holds (the API, the metrics stores, the caches) are the same for every handler, and no module
keeps state of its own. The metrics API server and the operator-wide loops started by startup
handlers are kept here too, and everything is closed at cleanup.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from djangoscale.autoscaling.apiserver import MetricsStore
from djangoscale.autoscaling.collector import Scraper
from djangoscale.autoscaling.windows import STABLE_WINDOW_SECONDS
from djangoscale.contract import (
    CONCURRENCY_METRIC,
    QUEUE_LENGTH_METRIC,
    QUEUE_TIME_METRIC,
    RPS_METRIC,
)
from djangoscale.k8s import Api, ApiError
from djangoscale.peering import is_active, is_active_peer, live_peers
from djangoscale.rollouts import RolloutGate
from djangoscale.settings import OperatorSettings

if TYPE_CHECKING:
    from aiohttp import web


# Seconds a reading of the peering object is trusted: the loops ask every round.
PEERING_CHECK_SECONDS = 5.0
# Seconds a peer's pod IP is trusted (a replaced pod comes back with another).
PEER_IP_SECONDS = 15.0


@dataclass(frozen=True)
class PeeringSeat:
    """This operator's place in kopf peering: the peering object and its priority."""

    name: str
    priority: int
    # The namespace of a namespaced KopfPeering (the first watched one); None: cluster-wide.
    namespace: str | None = None


@dataclass
class OperatorContext:
    settings: OperatorSettings
    api: Api
    # Per-pod RPS, written by the collectors, read by the metrics API server.
    rps: MetricsStore
    # Per-pod queue lengths of the worker groups, served beside RPS.
    queue_lengths: MetricsStore
    # Per-pod requests at once and p95 queue time, for the DjangoServices that scale on them.
    concurrency: MetricsStore
    queue_time: MetricsStore
    scraper: Scraper
    # Slots for the rollouts nobody asked for (an operator upgrade): a few at a time.
    rollouts: RolloutGate
    # The last spec generation seen per child uid: a new one is a spec edit (ours, the HPA's
    # or a hand edit), worth a re-apply; anything else is status progress.
    child_generations: dict[str, int] = field(default_factory=dict)
    # (namespace, name) of the DjangoServices this operator manages, for its gauge.
    managed: set[tuple[str, str]] = field(default_factory=set)
    # (uid, generation) each DjangoService's children were last pruned at: only a new spec
    # (or a new operator process) can make a child obsolete, so a resync of an unchanged
    # object skips the list calls of the prune.
    pruned: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)
    # Set by the startup handler that starts the metrics API server (before any copy is made).
    metrics_server: web.AppRunner | None = None
    # Set by the startup handler that starts the sharded collection's reading endpoint.
    shard_server: web.AppRunner | None = None
    # The operator-wide loops (`djangoscale.background`), cancelled at cleanup.
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # With peering, the loops run only while this operator is the active peer.
    peering: PeeringSeat | None = None
    # (monotonic time read, the peering object's status) of the last reading.
    _peering: tuple[float, dict[str, Any] | None] = (float("-inf"), None)
    # Other operator pods' IPs by name, with when each was read (sharded collection).
    _peer_ips: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    # One reconcile of an object at a time: the resync daemon, the change handlers and a
    # migration Job's event may all fire at once, and each decides on a Warning event from
    # the status the one before it wrote.
    reconcile_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: OperatorSettings, api: Api) -> OperatorContext:
        return cls(
            settings=settings,
            api=api,
            rps=MetricsStore(window_seconds=int(STABLE_WINDOW_SECONDS)),
            queue_lengths=MetricsStore(window_seconds=int(settings.queue_poll_seconds)),
            concurrency=MetricsStore(window_seconds=int(STABLE_WINDOW_SECONDS)),
            queue_time=MetricsStore(window_seconds=int(STABLE_WINDOW_SECONDS)),
            scraper=Scraper(settings.scrape_concurrency, settings.scrape_timeout),
            rollouts=RolloutGate(settings.max_concurrent_rollouts),
        )

    def reconcile_lock(self, namespace: str, name: str) -> threading.Lock:
        return self.reconcile_locks.setdefault((namespace, name), threading.Lock())

    @property
    def extra_pod_metrics(self) -> dict[str, MetricsStore]:
        """Pod metrics the metrics API server serves beside RPS, by name."""
        return {QUEUE_LENGTH_METRIC: self.queue_lengths, CONCURRENCY_METRIC: self.concurrency,
                QUEUE_TIME_METRIC: self.queue_time}

    @property
    def web_stores(self) -> dict[str, MetricsStore]:
        """The web pods' stores, by served metric name."""
        return {RPS_METRIC: self.rps, CONCURRENCY_METRIC: self.concurrency,
                QUEUE_TIME_METRIC: self.queue_time}

    async def active(self) -> bool:
        """Whether the operator-wide loops should work now: always when standalone; with
        peering, only on the active peer. kopf pauses a standby's watches and handlers, not
        these loops, and a peer demoted after a while would keep working from its last
        view of the objects."""
        if self.peering is None:
            return True
        status, now = await self._peering_status()
        return is_active(status, self.peering.priority, now)

    async def active_pod(self, pod_name: str) -> bool:
        """Whether this operator, whose kopf identity is its pod's name, is the active peer
        (standalone: always)."""
        if self.peering is None:
            return True
        status, now = await self._peering_status()
        return is_active_peer(status, pod_name, now)

    async def live_peer_names(self) -> list[str]:
        """The kopf identities (pod names, in the chart) of the live peers; [] standalone."""
        if self.peering is None:
            return []
        status, now = await self._peering_status()
        return [identity for _, identity in live_peers(status, now)]

    async def peer_ip(self, pod_name: str) -> str | None:
        """A peer's pod IP (it runs in this operator's namespace), read at most every
        PEER_IP_SECONDS; None when there is no such pod or it has no IP yet."""
        read_at, ip = self._peer_ips.get(pod_name, (float("-inf"), None))
        namespace = self.settings.pod_namespace
        if namespace is None or time.monotonic() - read_at < PEER_IP_SECONDS:
            return ip
        try:
            pod = await asyncio.to_thread(self.api.get, "v1", "Pod", namespace, pod_name)
        except ApiError:
            return ip  # keep the last reading through an API hiccup
        ip = ((pod or {}).get("status") or {}).get("podIP") or None
        self._peer_ips[pod_name] = (time.monotonic(), ip)
        return ip

    async def _peering_status(self) -> tuple[dict[str, Any] | None, datetime.datetime]:
        """The peering object's status, read at most every PEERING_CHECK_SECONDS."""
        assert self.peering is not None
        checked_at, status = self._peering
        now = datetime.datetime.now(datetime.UTC)
        if time.monotonic() - checked_at < PEERING_CHECK_SECONDS:
            return status, now
        seat = self.peering
        kind = "ClusterKopfPeering" if seat.namespace is None else "KopfPeering"
        try:
            peering = await asyncio.to_thread(self.api.get, "kopf.dev/v1", kind,
                                              seat.namespace, seat.name)
        except ApiError:
            return status, now  # keep the last reading through an API hiccup
        status = (peering or {}).get("status")
        self._peering = (time.monotonic(), status)
        return status, now

    def start(self, name: str, loop: Coroutine[Any, Any, None]) -> None:
        """Run one of the operator-wide loops until cleanup."""
        self.background.append(asyncio.create_task(loop, name=name))

    async def close(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background.clear()
        for server in (self.metrics_server, self.shard_server):
            if server is not None:
                await server.cleanup()
        await self.scraper.close()
        closer: Any = getattr(self.api, "close", None)
        if closer is not None:
            closer()


def context_of(memo: object) -> OperatorContext:
    """The context from a handler's `memo`; a clear error when the operator was started some
    other way than `djangoscale run` (which builds it)."""
    if not isinstance(memo, OperatorContext):
        raise RuntimeError("start the operator with `djangoscale run`: it builds the context "
                           "the handlers share")
    return memo
