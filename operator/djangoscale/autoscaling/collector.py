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
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from djangoscale.autoscaling.advice import recommendations
from djangoscale.autoscaling.podhttp import PodConnections, PodHttpError
from djangoscale.autoscaling.windows import (
    Decision,
    Rates,
    ServiceWindows,
    decide,
    format_rps,
    next_ceiling,
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
    QUEUE_TIME,
    RPS,
    SERVED_METRICS,
)
from djangoscale.pod_figures import (
    FIGURES_CONTENT_TYPE,
    FIGURES_PATH,
    PodScrape,
    decode_figures,
    pod_scrape_from_samples,
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
    uid: str = ""  # what sharding hashes (the name where a caller has no UID)

    @property
    def shard_key(self) -> str:
        return self.uid or self.name

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


def carried_values(body: dict[str, Any]) -> dict[str, Rates]:
    """Concurrency and queue time per pod as the status last gave them (`status.scaling`,
    what the HPA read), by spec metric name: what an operator taking over starts them from,
    as `carried_rates` does RPS. The status keeps one value, so both windows start from it."""
    scaling = (body.get("status") or {}).get("scaling") or {}
    carried = {}
    for metric in (CONCURRENCY, QUEUE_TIME):
        value = parse_value(metric, scaling.get(metric))
        if value is not None:
            carried[metric] = Rates(value, value)
    return carried


def parse_pod_metrics(text: str) -> PodScrape:
    """The pod's figures from its Prometheus text (a launcher older than the compact form)."""
    return pod_scrape_from_samples(
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text) for sample in family.samples)


def requests_total(text: str) -> float:
    """The pod's request count (see `parse_pod_metrics`)."""
    return parse_pod_metrics(text).requests_total


class Scraper:
    """Concurrent, bounded, short-timeout GETs of the pods' metrics endpoints."""

    def __init__(self, concurrency: int = 64, timeout: float = 2.0,
                 path: str = FIGURES_PATH) -> None:
        # `path`: the launcher's compact figures; METRICS_PATH reads its Prometheus text.
        self.path = path
        self.semaphore = asyncio.Semaphore(concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.read_timeout = timeout
        # The pod reads (`podhttp`); the session is for Prometheus and the operator's peers.
        self.pods = PodConnections()
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
        await self.pods.close()
        if self._session is not None:
            await self._session.close()

    async def pod_scrape(self, ip: str, port: int) -> PodScrape | None:
        """The pod's figures, or None if they could not be read (the caller holds)."""
        if self._closed:
            return None  # the operator is stopping: no new connection
        async with self.semaphore:
            try:
                async with asyncio.timeout(self.read_timeout):
                    response = await self.pods.get(ip, port, self.path)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, PodHttpError):
                return None
        if response.status != 200:
            return None
        try:
            if response.content_type == FIGURES_CONTENT_TYPE:
                return decode_figures(response.body)
            # A launcher older than the compact form answers every path with its text.
            return parse_pod_metrics(response.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
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
    # The pools wait (the ceiling's window is counting) or the ceiling holds: no scale-up.
    holding_scale_up: bool = False


# A DjangoService's pods read by a peer: (monotonic time here, figures), by pod name.
PeerSamples = Mapping[str, tuple[float, PodScrape]]


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
    # What this replica read itself, by pod: (monotonic time, figures), for its peers.
    samples: dict[str, tuple[float, PodScrape]] = field(default_factory=dict)


async def collect(ds: DjangoService, pods: Iterable[PodTarget], windows: ServiceWindows,
                  scraper: Scraper, now: float | None = None,
                  mine: Callable[[PodTarget], bool] | None = None,
                  remote: PeerSamples | Awaitable[PeerSamples] | None = None,
                  poolers: Iterable[PodTarget] = (),
                  pooler_login: tuple[str, str] | None = None) -> Reading:
    """Scrape (or query) once, feed the windows, and decide what the HPA sees.

    Sharded (`djangoscale.autoscaling.sharding`), this replica reads only the pods `mine`
    accepts; the others' figures come from its peers (`remote`, a mapping or an awaitable one,
    on this replica's clock), and a pod in neither counts as a failed read (its values
    hold). With the pooler, `poolers` are its pods and `pooler_login` the app's user and
    password (None when the database Secret could not be read: the pooler's figures are then
    left out)."""
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
    ceiling = (guarded or ds.uses_pooler) and ds.autoscaling.database_ceiling
    targets = read_targets(ds, pods)
    read = targets if mine is None else [p for p in targets if mine(p)]
    scrapes = await asyncio.gather(*(scraper.pod_scrape(p.ip, ds.metrics_port) for p in read))
    samples = {p.name: (t, s) for p, s in zip(read, scrapes, strict=True) if s is not None}
    given = dict((await remote) if inspect.isawaitable(remote) else (remote or {}))
    given.update(samples)  # what this replica read itself wins over a peer's older read
    by_pod = {p.name: given[p.name][1] if p.name in given else None for p in targets}
    if source is None:
        for pod in ready:
            if pod.name not in given:
                failed.append(pod.name)
            else:
                observe(windows, pod.name, *given[pod.name])
    autoscaling = ds.autoscaling
    # Behind the pooler every web pod exports the pooler's own figures (for the ceiling), so
    # the server connections are counted once, from the pooler's pods.
    reported = [] if ds.uses_pooler else [
        s.server_connections for s in by_pod.values()
        if s is not None and s.server_connections is not None]
    pooled = ds.uses_pooler and ds.database is not None
    if pooled and pooler_login is not None:
        # Every pooler pod with an address, terminating ones included, like the sidecars.
        counts = await asyncio.gather(*(scraper.pooler_server_connections(p.ip, pooler_login)
                                        for p in sorted(poolers, key=lambda p: p.name) if p.ip))
        reported += [count for count in counts if count is not None]
    saturation = None
    if ceiling:
        saturation = database_saturation(
            windows, [s for s in by_pod.values() if s], t,
            engage_after=autoscaling.panic_window_seconds,
            release_after=autoscaling.stable_window_seconds,
            applies=ceiling_applies(ds, len(ready) + starting), shared=ds.uses_pooler)
    # While the pools wait, the burst path is held back (and the values capped, see
    # `served_values`): the ceiling's window is counting, and requests waiting for the
    # database are no reason for pods that bring it nothing.
    threshold = math.inf if saturation is not None and saturation.holding_scale_up else (
        autoscaling.panic_threshold)

    def decision_of(metric: str, rates: dict[str, Rates]) -> Decision:
        return decide(rates, len(ready), autoscaling.target_of(metric), threshold, starting)

    decisions = {RPS: decision_of(RPS, windows.rates())}
    if CONCURRENCY in autoscaling.metrics:
        decisions[CONCURRENCY] = decision_of(CONCURRENCY, windows.concurrency())
    if QUEUE_TIME in autoscaling.metrics:
        decisions[QUEUE_TIME] = decision_of(QUEUE_TIME, windows.queue_time())
    return Reading(
        decisions[RPS], len(ready), failed, "prometheus" if source else "pods",
        budget=ds.database.pool_budget if (guarded or pooled) and ds.database else None,
        server_connections=sum(reported), pods_reporting=len(reported),
        decisions=decisions, saturation=saturation, usage=windows.usage(), samples=samples,
    )


def ceiling_applies(ds: DjangoService, pods: int) -> bool:
    """Whether more pods would bring the database no more server connections, so that the
    ceiling holds them back: always behind the pooler (its pods hold the server connections,
    however many app pods connect), and with a sidecar per pod only once the pods (ready and
    starting) are at `replicas.max`. Below it each new pod brings its own pool, its share of
    the budget: holding it back leaves the budget unused while clients wait."""
    return ds.uses_pooler or pods >= ds.max_replicas


def read_targets(ds: DjangoService, pods: Iterable[PodTarget]) -> list[PodTarget]:
    """The pods to read: the ready ones for requests (unless Prometheus gives them), and for
    the budget guard every pod with an address, since a terminating pod still holds its
    pool; with Prometheus, the ready ones too when the database ceiling reads their pools."""
    pods = list(pods)
    ready = sorted((p for p in pods if p.ready and p.ip), key=lambda p: p.name)
    guarded = ds.uses_pgbouncer and ds.database is not None
    ceiling = (guarded or ds.uses_pooler) and ds.autoscaling.database_ceiling
    if ds.autoscaling.prometheus is None:
        return ready + ([p for p in pods if p.ip and not p.ready] if guarded else [])
    return sorted((p for p in pods if p.ip and (p.ready or guarded)),
                  key=lambda p: p.name) if guarded or ceiling else []


def observe(windows: ServiceWindows, pod: str, t: float, scrape: PodScrape) -> None:
    """Feed one read of a pod into its windows."""
    windows.observe_counter(pod, t, scrape.requests_total)
    windows.observe_busy(pod, t, scrape.busy_seconds)
    windows.observe_usage(pod, t, scrape.app_seconds, scrape.cpu_seconds)
    if scrape.queue_bounds:
        windows.observe_queue(pod, t, scrape.queue_bounds, scrape.queue_counts)


def database_saturation(windows: ServiceWindows, scrapes: list[PodScrape], t: float,
                        engage_after: float, release_after: float, applies: bool = True,
                        shared: bool = False) -> Saturation:
    """Whether the ceiling is on, tracked in `windows` (see `next_ceiling`).

    The pools wait in a round when most reporting pods have a client that waited
    SATURATED_WAIT_SECONDS for a server connection, and the ceiling `applies`. It comes on
    once they have waited in every round for `engage_after` seconds (the panic window: a wait
    that outlasts the burst path's own window is a queue, not a pool opening connections at a
    step; the burst path is held back meanwhile), and lets go once they have not waited for
    `release_after` seconds (the stable window: until then its averages still count requests
    that waited for the database, and would ask for pods on their account).

    While the window counts, scale-up is held back already (`holding_scale_up`): requests
    queued for the database push the stable window past its target within seconds too (on
    the local control plane, concurrency went from 2 to 5 pods before a 4 s window was up).
    The difference from the ceiling itself: a wait shorter than the window lets go a panic
    window after it ends, and sets no condition and posts no event.

    `shared`: the pods read one pooler's figures (pooler mode), so clients waiting and
    server connections are the most any pod saw, not a sum over pods.
    """
    reporting = [s for s in scrapes if s.max_wait_seconds is not None]
    waiting = [s for s in reporting if (s.max_wait_seconds or 0.0) >= SATURATED_WAIT_SECONDS]
    pools_wait = applies and bool(reporting) and 2 * len(waiting) > len(reporting)
    windows.ceiling = next_ceiling(windows.ceiling, pools_wait, t, engage_after, release_after)

    def total(values: list[int]) -> int:
        return max(values, default=0) if shared else sum(values)

    return Saturation(
        waiting_pods=len(waiting), reporting=len(reporting),
        max_wait_seconds=max((s.max_wait_seconds or 0.0 for s in reporting), default=0.0),
        clients_waiting=total([s.clients_waiting or 0 for s in reporting]),
        servers_active=total([s.servers_active or 0 for s in reporting]),
        held=windows.ceiling.held,
        holding_scale_up=windows.ceiling.holding_scale_up,
    )


def served_values(ds: DjangoService, reading: Reading) -> dict[str, dict[str, float]]:
    """Per-pod values by served metric name, for the metrics in use. While the database
    ceiling holds (or its window counts), each is capped at its target: the HPA then sees the
    pods at (or under) capacity and asks for no more."""
    capped = reading.saturation is not None and reading.saturation.holding_scale_up
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


def parse_value(metric: str, text: Any) -> float | None:
    """A per-pod value from the status (`format_value`'s inverse); None if it is not one."""
    if not isinstance(text, str):
        return None
    if metric == QUEUE_TIME:
        if not text.endswith("ms"):
            return None
        text = text.removesuffix("ms")
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value / 1000 if metric == QUEUE_TIME else value


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
