"""Collection: read each ready pod's request counter (or Prometheus) every few seconds.

The launcher exposes `djangoscale_requests_total{method,status_class}` on the pod's `metrics`
port; summed over its labels it is the pod's request count. Scrapes run concurrently under a
semaphore with a short timeout, so one hung pod costs one timeout, not a stalled loop, and a
thousand pods do not open a thousand sockets at once.

The same scrape reads the pods' pgbouncer figures (exported by the launcher from SHOW POOLS),
terminating pods included, for the budget guard. With pooling.mode pooler the app's pods hold
no server connection: the pooler pods' pgbouncers do, and they run no launcher, so the collector
asks their admin consoles for SHOW POOLS itself, as the app's user (one of their admin_users).

Also here, as pure functions: the DjangoService status this module owns (`status.rps`, the
`MetricsAvailable` condition, the measured part of `status.database`, and `Degraded` while
the pods hold more server connections than the budget), rounded so that a settled object is
not rewritten.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from djangoscale.autoscaling.advice import recommendations
from djangoscale.autoscaling.windows import (
    Decision,
    Rates,
    ServiceWindows,
    decide,
    format_rps,
)
from djangoscale.builders.pgbouncer import LISTEN_PORT
from djangoscale.conditions import (
    BUDGET_EXCEEDED,
    CLIENTS_WAITING,
    DATABASE_SATURATED,
    METRICS_AVAILABLE,
    Condition,
    budget_exceeded,
    degraded,
    find,
    merge_conditions,
    not_degraded,
    now_rfc3339,
)
from djangoscale.contract import (
    CONCURRENCY,
    CPU_SECONDS_NAME,
    METRICS_PATH,
    PGBOUNCER_CLIENTS_WAITING,
    PGBOUNCER_MAX_WAIT,
    PGBOUNCER_SERVER_CONNECTIONS,
    PGBOUNCER_SERVERS_ACTIVE,
    QUEUE_TIME,
    REQUEST_DURATION_NAME,
    REQUEST_QUEUE_NAME,
    REQUESTS_COUNTER,
    RPS,
    SERVED_METRICS,
)
from djangoscale.serve.config import Address, PgBouncerAdmin
from djangoscale.serve.pgbouncer import read_pools
from djangoscale.spec import DjangoService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PodTarget:
    """A pod as the collector needs it: where to scrape and what the selector sees."""

    name: str
    ip: str
    ready: bool
    labels: tuple[tuple[str, str], ...] = ()
    starting: bool = False  # created and not yet ready: capacity on the way

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


def pod_starting(status: dict[str, Any], meta: dict[str, Any], ready: bool) -> bool:
    """Not ready yet, but neither terminating nor finished: it will take traffic soon."""
    return not ready and not meta.get("deletionTimestamp") and status.get("phase") in (
        None, "Pending", "Running")


def carried_rates(body: dict[str, Any]) -> Rates | None:
    """The per-pod rates the DjangoService's status last gave (`status.rps`), if it has them:
    what an operator taking over starts from."""
    rps = (body.get("status") or {}).get("rps") or {}
    try:
        return Rates(float(rps["stable"]), float(rps["panic"]))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class PodScrape:
    """What one read of a pod's metrics port gives."""

    requests_total: float
    # Server connections its pgbouncer holds; None when the pod exports no figure (no
    # sidecar, or pgbouncer did not answer the launcher).
    server_connections: int | None = None
    # Seconds requests spent in the pod so far: in the app plus waiting for a thread.
    busy_seconds: float = 0.0
    # Seconds requests spent in the app (threads busy), and the serving processes' CPU time.
    app_seconds: float = 0.0
    cpu_seconds: float = 0.0
    # The queue-time histogram: upper bounds (the last +Inf) and cumulative counts; empty
    # when the server records no waits.
    queue_bounds: tuple[float, ...] = ()
    queue_counts: tuple[float, ...] = ()
    # pgbouncer: the longest a client has waited for a server connection, and how many wait.
    max_wait_seconds: float | None = None
    clients_waiting: int | None = None
    servers_active: int | None = None


def parse_pod_metrics(text: str) -> PodScrape:
    """`djangoscale_requests_total` summed over its label sets, the time spent in the pod,
    the queue-time buckets and the pgbouncer figures.

    A labelled counter has no sample until its first request, so a pod that answered without
    one has served nothing yet: 0, not a failed read.
    """
    total = busy = app = cpu = 0.0
    buckets: dict[float, float] = {}
    pgbouncer: dict[str, float] = {}
    sums = (f"{REQUEST_DURATION_NAME}_sum", f"{REQUEST_QUEUE_NAME}_sum")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS_COUNTER:
                total += sample.value
            elif sample.name in sums:
                busy += sample.value
                if sample.name == sums[0]:
                    app += sample.value
            elif sample.name == f"{CPU_SECONDS_NAME}_total":
                cpu += sample.value
            elif sample.name == f"{REQUEST_QUEUE_NAME}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name in PGBOUNCER_FIGURES:
                pgbouncer[sample.name] = sample.value
    bounds = tuple(sorted(buckets))

    def figure(name: str) -> int | None:
        return int(pgbouncer[name]) if name in pgbouncer else None

    return PodScrape(
        total, figure(PGBOUNCER_SERVER_CONNECTIONS), busy_seconds=busy, app_seconds=app,
        cpu_seconds=cpu, queue_bounds=bounds, queue_counts=tuple(buckets[b] for b in bounds),
        max_wait_seconds=pgbouncer.get(PGBOUNCER_MAX_WAIT),
        clients_waiting=figure(PGBOUNCER_CLIENTS_WAITING),
        servers_active=figure(PGBOUNCER_SERVERS_ACTIVE),
    )


PGBOUNCER_FIGURES = (PGBOUNCER_SERVER_CONNECTIONS, PGBOUNCER_MAX_WAIT, PGBOUNCER_CLIENTS_WAITING,
                     PGBOUNCER_SERVERS_ACTIVE)


def requests_total(text: str) -> float:
    """The pod's request count (see `parse_pod_metrics`)."""
    return parse_pod_metrics(text).requests_total


class Scraper:
    """Concurrent, bounded, short-timeout GETs of the pods' metrics endpoints."""

    def __init__(self, concurrency: int = 64, timeout: float = 2.0) -> None:
        self.semaphore = asyncio.Semaphore(concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A collector still mid-round when the operator stops must not open a session
            # nobody will close (asyncio logs it as an error at exit): its reads fail, it holds.
            raise aiohttp.ClientConnectionError("the scraper is closed: the operator is stopping")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()

    async def pod_scrape(self, ip: str, port: int) -> PodScrape | None:
        """The pod's figures, or None if they could not be read (the caller holds)."""
        url = f"http://{ip}:{port}{METRICS_PATH}"
        async with self.semaphore:
            try:
                async with self.session.get(url) as response:
                    if response.status != 200:
                        return None
                    text = await response.text()
            except (TimeoutError, aiohttp.ClientError, OSError):
                return None
        try:
            return parse_pod_metrics(text)
        except ValueError:
            return None

    async def pooler_server_connections(self, ip: str, login: tuple[str, str]) -> int | None:
        """Server connections a pooler pod's pgbouncer holds (SHOW POOLS on its admin console,
        as `login`, the app's user and password), or None if it did not answer."""
        admin = PgBouncerAdmin(Address(ip, LISTEN_PORT), *login)
        async with self.semaphore:
            figures = await asyncio.to_thread(read_pools, admin)
        return None if figures is None else figures.server_connections

    async def prometheus_rates(self, address: str, query: str) -> dict[str, float] | None:
        """Per-pod RPS from a Prometheus instant query (a vector with a `pod` label)."""
        url = address.rstrip("/") + "/api/v1/query"
        async with self.semaphore:
            try:
                async with self.session.get(url, params={"query": query}) as response:
                    if response.status != 200:
                        return None
                    payload = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                return None
        return prometheus_vector(payload)


def prometheus_vector(payload: Any) -> dict[str, float] | None:
    """{pod: value} from a Prometheus API answer; None unless it is a successful vector."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return None
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        return None
    rates = {}
    for item in data.get("result") or []:
        pod = (item.get("metric") or {}).get("pod")
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if pod and not math.isnan(value):  # NaN (no traffic yet in rate()) is skipped
            rates[pod] = max(0.0, value)
    return rates


# A pgbouncer client that has waited this long for a server connection is waiting on the
# database, not on a connection being opened.
SATURATED_WAIT_SECONDS = 0.1


@dataclass(frozen=True)
class Saturation:
    """The pods' pgbouncers as the database ceiling sees them."""

    waiting_pods: int  # pods whose clients waited >= SATURATED_WAIT_SECONDS
    reporting: int
    max_wait_seconds: float
    clients_waiting: int
    servers_active: int
    held: bool  # the ceiling is on (see `database_saturation`)


@dataclass
class Reading:
    """One collection round for one DjangoService."""

    decision: Decision
    pods: int  # ready pods
    failed: list[str] = field(default_factory=list)  # pods (or "prometheus") that did not answer
    source: str = "pods"
    # The budget guard: server connections summed over every pod whose pgbouncer reported,
    # terminating and starting pods included; None when the spec has no pgbouncer budget.
    budget: int | None = None
    server_connections: int = 0
    pods_reporting: int = 0
    # Every metric in use (RPS always, for status.rps), by spec name.
    decisions: dict[str, Decision] = field(default_factory=dict)
    saturation: Saturation | None = None
    # Per ready pod: (threads busy on average, CPU cores used) over the stable window.
    usage: dict[str, tuple[float, float]] = field(default_factory=dict)


async def collect(ds: DjangoService, pods: Iterable[PodTarget], windows: ServiceWindows,
                  scraper: Scraper, now: float | None = None,
                  poolers: Iterable[PodTarget] = (),
                  pooler_login: tuple[str, str] | None = None) -> Reading:
    """Scrape (or query) once, feed the windows, and decide what the HPA sees. With the
    pooler, `poolers` are its pods and `pooler_login` the app's user and password (None when
    the database Secret could not be read: the pooler's figures are then left out)."""
    pods = list(pods)
    ready = sorted((p for p in pods if p.ready and p.ip), key=lambda p: p.name)
    starting = sum(1 for p in pods if p.starting)
    windows.stable_window = ds.autoscaling.stable_window_seconds
    windows.panic_window = ds.autoscaling.panic_window_seconds
    windows.start(p.name for p in ready)
    windows.forget_missing(p.name for p in ready)
    failed: list[str] = []
    t = time.monotonic() if now is None else now
    source = ds.autoscaling.prometheus
    if source is not None:
        rates = await scraper.prometheus_rates(source.address,
                                               source.query_for(ds.namespace, ds.name))
        if rates is None:
            failed.append("prometheus")
        else:
            for pod in ready:
                if pod.name in rates:
                    windows.observe_rate(pod.name, rates[pod.name])
    guarded = ds.uses_pgbouncer and ds.database is not None
    # The pods to read: the ready ones for requests (unless Prometheus gives them), and for
    # the budget guard every pod with an address, since a terminating pod still holds its pool.
    if source is None:
        targets = ready + ([p for p in pods if p.ip and not p.ready] if guarded else [])
    else:
        targets = sorted((p for p in pods if p.ip), key=lambda p: p.name) if guarded else []
    scrapes = await asyncio.gather(*(scraper.pod_scrape(p.ip, ds.metrics_port)
                                     for p in targets))
    by_pod = dict(zip((p.name for p in targets), scrapes, strict=True))
    if source is None:
        for pod in ready:
            scrape = by_pod[pod.name]
            if scrape is None:
                failed.append(pod.name)
            else:
                windows.observe_counter(pod.name, t, scrape.requests_total)
                windows.observe_busy(pod.name, t, scrape.busy_seconds)
                windows.observe_usage(pod.name, t, scrape.app_seconds, scrape.cpu_seconds)
                if scrape.queue_bounds:
                    windows.observe_queue(pod.name, t, scrape.queue_bounds, scrape.queue_counts)
    autoscaling = ds.autoscaling

    def decision_of(metric: str, rates: dict[str, Rates]) -> Decision:
        return decide(rates, len(ready), autoscaling.target_of(metric),
                      autoscaling.panic_threshold, starting)

    decisions = {RPS: decision_of(RPS, windows.rates())}
    if CONCURRENCY in autoscaling.metrics:
        decisions[CONCURRENCY] = decision_of(CONCURRENCY, windows.concurrency())
    if QUEUE_TIME in autoscaling.metrics:
        decisions[QUEUE_TIME] = decision_of(QUEUE_TIME, windows.queue_time())
    reported = [s.server_connections for s in by_pod.values()
                if s is not None and s.server_connections is not None]
    pooled = ds.uses_pooler and ds.database is not None
    if pooled and pooler_login is not None:
        # Every pooler pod with an address, terminating ones included, like the sidecars.
        counts = await asyncio.gather(*(scraper.pooler_server_connections(p.ip, pooler_login)
                                        for p in sorted(poolers, key=lambda p: p.name) if p.ip))
        reported += [count for count in counts if count is not None]
    saturation = None
    if guarded and autoscaling.database_ceiling:
        saturation = database_saturation(windows, [s for s in by_pod.values() if s], t,
                                         autoscaling.panic_window_seconds)
    return Reading(
        decisions[RPS], len(ready), failed, "prometheus" if source else "pods",
        budget=ds.database.pool_budget if (guarded or pooled) and ds.database else None,
        server_connections=sum(reported), pods_reporting=len(reported),
        decisions=decisions, saturation=saturation, usage=windows.usage(),
    )


def database_saturation(windows: ServiceWindows, scrapes: list[PodScrape], t: float,
                        release_seconds: float) -> Saturation:
    """Whether the ceiling is on: from the first round in which most reporting pods have a
    client that waited SATURATED_WAIT_SECONDS for a server connection (a wait that long is a
    queue, not a blip, and the burst path would ask for pods in the next round), until the
    waiting has stopped for `release_seconds` (so it does not flap). Tracked in `windows`."""
    reporting = [s for s in scrapes if s.max_wait_seconds is not None]
    waiting = [s for s in reporting if (s.max_wait_seconds or 0.0) >= SATURATED_WAIT_SECONDS]
    if reporting and 2 * len(waiting) > len(reporting):
        if windows.saturated_since is None:
            windows.saturated_since = t
        windows.unsaturated_since = None
    elif windows.saturated_since is not None:
        if windows.unsaturated_since is None:
            windows.unsaturated_since = t
        if t - windows.unsaturated_since >= release_seconds:
            windows.saturated_since = windows.unsaturated_since = None
    return Saturation(
        waiting_pods=len(waiting), reporting=len(reporting),
        max_wait_seconds=max((s.max_wait_seconds or 0.0 for s in reporting), default=0.0),
        clients_waiting=sum(s.clients_waiting or 0 for s in reporting),
        servers_active=sum(s.servers_active or 0 for s in reporting),
        held=windows.saturated_since is not None,
    )


def served_values(ds: DjangoService, reading: Reading) -> dict[str, dict[str, float]]:
    """Per-pod values by served metric name, for the metrics in use. While the database
    ceiling holds, each is capped at its target: the HPA then sees the pods at (or under)
    capacity and asks for no more."""
    capped = reading.saturation is not None and reading.saturation.held
    served = {}
    for metric in ds.autoscaling.metrics:
        decision = reading.decisions.get(metric)
        if decision is None:
            continue
        target = ds.autoscaling.target_of(metric)
        served[SERVED_METRICS[metric]] = {
            pod: min(value, target) if capped else value
            for pod, value in decision.per_pod.items()
        }
    return served


def metrics_condition(reading: Reading) -> Condition:
    """True when every ready pod answered; False says which did not and that values hold."""
    if reading.source == "prometheus" and reading.failed:
        return Condition(METRICS_AVAILABLE, "False", "PrometheusUnavailable",
                         "the Prometheus query failed; holding the last known values")
    if reading.pods == 0:
        return Condition(METRICS_AVAILABLE, "False", "NoReadyPods", "no ready pod to read")
    if reading.failed:
        names = ", ".join(reading.failed[:5]) + (" ..." if len(reading.failed) > 5 else "")
        return Condition(
            METRICS_AVAILABLE, "False", "ScrapeFailed",
            f"{len(reading.failed)} of {reading.pods} pods did not answer ({names}); "
            "holding their last known values",
        )
    origin = "Prometheus" if reading.source == "prometheus" else "the pods' metrics port"
    return Condition(METRICS_AVAILABLE, "True", "Collected", f"read from {origin}")


def rps_status(reading: Reading) -> dict[str, str]:
    """`status.rps`: per-pod averages over the two windows, rounded (printer column RPS)."""
    return {
        "stable": format_rps(reading.decision.stable_per_pod),
        "panic": format_rps(reading.decision.panic_per_pod),
    }


def database_figures(reading: Reading) -> dict[str, int] | None:
    """`status.database`'s measured part: server connections in use, from how many pods."""
    if reading.budget is None:
        return None
    return {"serverConnections": reading.server_connections,
            "podsReporting": reading.pods_reporting}


def reading_budget_exceeded(reading: Reading) -> tuple[str, str] | None:
    if reading.pods_reporting == 0:
        return None
    return budget_exceeded(reading.budget, reading.server_connections, reading.pods_reporting)


def budget_conditions(live: list[dict[str, Any]], reading: Reading) -> list[Condition]:
    """Degraded as the budget guard sees it: True while over the budget; back to False once
    under it, only if it was the guard that set it (a rollout failure is the reconciler's)."""
    exceeded = reading_budget_exceeded(reading)
    if exceeded is not None:
        return degraded(*exceeded)
    if (find(live, "Degraded") or {}).get("reason") == BUDGET_EXCEEDED:
        return not_degraded()
    return []


def budget_warning(body: dict[str, Any], reading: Reading) -> tuple[str, str] | None:
    """(reason, message) of the one Warning event when the pods go over the budget."""
    exceeded = reading_budget_exceeded(reading)
    live = find((body.get("status") or {}).get("conditions") or [], "Degraded") or {}
    if exceeded is None or live.get("reason") == BUDGET_EXCEEDED:
        return None
    return exceeded


def saturation_condition(live: list[dict[str, Any]], saturation: Saturation) -> Condition:
    """DatabaseSaturated: True (with the figures when it turned True) while the ceiling holds."""
    if saturation.held:
        found = find(live, DATABASE_SATURATED) or {}
        if found.get("status") == "True":
            return Condition(DATABASE_SATURATED, "True", CLIENTS_WAITING, found.get("message", ""))
        return Condition(
            DATABASE_SATURATED, "True", CLIENTS_WAITING,
            f"in {saturation.waiting_pods} of {saturation.reporting} pods clients waited up to "
            f"{saturation.max_wait_seconds * 1000:.0f} ms for a server connection "
            f"({saturation.clients_waiting} waiting, {saturation.servers_active} server "
            "connections active): no scale-up while they wait, more pods would only add "
            "waiters")
    return Condition(DATABASE_SATURATED, "False", "ClientsNotWaiting",
                     "no pod's clients wait for a server connection")


def saturation_warning(body: dict[str, Any], reading: Reading) -> tuple[str, str] | None:
    """(reason, message) of the one Warning event as the database ceiling comes on."""
    if reading.saturation is None or not reading.saturation.held:
        return None
    live = (body.get("status") or {}).get("conditions") or []
    if (find(live, DATABASE_SATURATED) or {}).get("status") == "True":
        return None
    condition = saturation_condition(live, reading.saturation)
    return DATABASE_SATURATED, condition.message


def format_value(metric: str, value: float) -> str:
    """A per-pod value as status shows it: RPS and concurrency with two significant digits,
    queue time in milliseconds."""
    if metric == QUEUE_TIME:
        return f"{format_rps(value * 1000)}ms"
    return format_rps(value)


def scaling_status(ds: DjangoService, reading: Reading) -> dict[str, str]:
    """`status.scaling`: each metric in use as the HPA reads it (the per-pod average), and the
    one asking for the most pods against its target (printer columns Metric and Value)."""
    averages = {}
    for metric in ds.autoscaling.metrics:
        decision = reading.decisions.get(metric)
        if decision is not None:
            values = list(decision.per_pod.values())
            averages[metric] = sum(values) / len(values) if values else 0.0
    if not averages:
        return {}
    leading = max(averages, key=lambda m: averages[m] / ds.autoscaling.target_of(m))
    status = {"metric": leading, "value": format_value(leading, averages[leading])}
    status.update({m: format_value(m, v) for m, v in averages.items()})
    return status


def _says(live: list[dict[str, Any]], condition: Condition) -> bool:
    found = find(live, condition.type) or {}
    return (found.get("status"), found.get("reason"), found.get("message")) == (
        condition.status, condition.reason, condition.message)


def status_patch(body: dict[str, Any], reading: Reading,
                 ds: DjangoService | None = None) -> dict[str, Any] | None:
    """The status merge patch this module owns, or None when the object already says it."""
    status = body.get("status") or {}
    rps = rps_status(reading)
    previous = status.get("conditions") or []
    conditions = [metrics_condition(reading), *budget_conditions(previous, reading)]
    if reading.saturation is not None:
        conditions.append(saturation_condition(previous, reading.saturation))
    scaling = scaling_status(ds, reading) if ds is not None else {}
    advice = None if ds is None else recommendations(ds.server, reading.usage)
    database = database_figures(reading)
    live_database = status.get("database") or {}
    same_database = database is None or all(
        live_database.get(key) == value for key, value in database.items())
    if status.get("rps") == rps and same_database and all(
            _says(previous, c) for c in conditions) and (
            not scaling or status.get("scaling") == scaling) and (
            advice is None or (status.get("recommendations") or []) == advice):
        return None
    generation = body.get("metadata", {}).get("generation")
    patch: dict[str, Any] = {
        "rps": rps,
        "conditions": merge_conditions(previous, conditions, generation, now_rfc3339()),
    }
    if database is not None:
        patch["database"] = database
    if scaling:
        patch["scaling"] = scaling
    if advice is not None:
        patch["recommendations"] = advice
    return patch
