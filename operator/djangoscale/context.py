"""What the handlers share, built once at startup and passed to every handler as kopf's `memo`.

`djangoscale run` builds an `OperatorContext` from the settings and hands it to
`kopf.operator(memo=...)`. kopf gives each resource object a shallow copy of it, so the objects
it holds (the API, the metrics stores, the caches) are the same for every handler, and no module
keeps state of its own. The metrics API server started by a startup handler is kept here too,
and everything is closed at cleanup.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from djangoscale.autoscaling.apiserver import MetricsStore
from djangoscale.autoscaling.collector import Scraper
from djangoscale.contract import QUEUE_LENGTH_METRIC
from djangoscale.k8s import Api
from djangoscale.settings import OperatorSettings

if TYPE_CHECKING:
    import kopf
    from aiohttp import web

# How soon a pausing daemon notices it was stopped.
PAUSE_STEP_SECONDS = 0.5


async def pause(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Wait `seconds`, or until the daemon is stopped, leaving no task behind.

    Not `stopped.wait(seconds)`: that runs its timeout in a task of its own which, still
    pending when the operator exits, kopf collects and re-raises (a TimeoutError traceback and
    exit code 1 on SIGTERM). Short sleeps are cancelled cleanly."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stopped and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(PAUSE_STEP_SECONDS, left))


@dataclass
class OperatorContext:
    settings: OperatorSettings
    api: Api
    # Per-pod RPS, written by the collectors, read by the metrics API server.
    rps: MetricsStore
    # Per-pod queue lengths of the worker groups, served beside RPS.
    queue_lengths: MetricsStore
    scraper: Scraper
    # The last spec generation seen per child uid: a new one is a spec edit (ours, the HPA's
    # or a hand edit), worth a re-apply; anything else is status progress.
    child_generations: dict[str, int] = field(default_factory=dict)
    # (namespace, name) of the DjangoServices this operator manages, for its gauge.
    managed: set[tuple[str, str]] = field(default_factory=set)
    # Set by the startup handler that starts the metrics API server (before any copy is made).
    metrics_server: web.AppRunner | None = None

    @classmethod
    def create(cls, settings: OperatorSettings, api: Api) -> OperatorContext:
        return cls(
            settings=settings,
            api=api,
            rps=MetricsStore(window_seconds=int(settings.stable_window)),
            queue_lengths=MetricsStore(window_seconds=int(settings.queue_poll_seconds)),
            scraper=Scraper(settings.scrape_concurrency, settings.scrape_timeout),
        )

    @property
    def extra_pod_metrics(self) -> dict[str, MetricsStore]:
        """Pod metrics the metrics API server serves beside RPS, by name."""
        return {QUEUE_LENGTH_METRIC: self.queue_lengths}

    async def close(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.cleanup()
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
