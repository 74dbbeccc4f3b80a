"""Requests per second per pod, from counter samples, as Knative's autoscaler computes it;
and, from the same scrapes, requests in the pod at once (concurrency) and the p95 queue time.

Why not just "rate over the last minute" (prometheus-adapter's way): a minute-long average
hides a burst for most of that minute. Knative keeps two windows, a stable one (~60 s) and a
panic one (~6 s), and acts on the short one when it shows at least twice what the running pods
can take at their target. We do the same, per DjangoService, and hand the chosen per-pod values
to the HPA.

Rules kept here, all pure (time is an argument) so they are tested without a cluster:
- a counter that goes down was reset (process restart): the new value counts as the increase
  since the reset, as Prometheus' `rate()` does, never as a negative rate;
- a pod seen once has no rate yet (one sample is not a rate); a pod gone from the pod list is
  forgotten (churn);
- a pod whose scrape failed keeps its last known rates (no new sample, so nothing changes):
  a metrics outage must never read as "zero traffic", which would collapse the service to its
  minimum;
- pods that are starting count as capacity on the way in the burst rule, so a burst does not
  keep asking for pods while the first ones start (an app that takes 20-30 s to start would
  otherwise be flooded with pods);
- an operator that takes over from another (failover, restart) starts from the values the
  DjangoService's status last gave (RPS, concurrency, queue time), blended out as its own
  samples cover the windows, so the HPA's values neither vanish nor drop during the takeover.

Concurrency is the rate of a counter too: the seconds requests spent in the pod (in the app
plus waiting for a thread), per second, is the average number in the pod (Little's law), so
it needs no sampling of a gauge that changes between scrapes. Queue time is the p95 of the
launcher's histogram over the window's bucket increases (as `histogram_quantile` over
`increase` does); a window without requests waited for nothing.

The window lengths and the threshold are per DjangoService (`spec.autoscaling`); the values
here are what a fresh `ServiceWindows` holds until the first collection sets them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from djangoscale.contract import CONCURRENCY, QUEUE_TIME

STABLE_WINDOW_SECONDS = 60.0
PANIC_WINDOW_SECONDS = 6.0
# The queue time the HPA reads is this quantile of the requests' waits.
QUEUE_TIME_QUANTILE = 0.95


@dataclass(frozen=True)
class Rates:
    """One pod's value (requests per second, requests at once, or p95 queue time) over the
    two windows."""

    stable: float
    panic: float


@dataclass
class PodCounter:
    """The samples of one pod's request counter, made monotonic across resets."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)
    last_raw: float | None = None
    offset: float = 0.0

    def observe(self, t: float, raw: float, keep_seconds: float) -> None:
        if self.samples and t <= self.samples[-1][0]:
            return  # out of order or duplicate: a rate needs time to pass
        if self.last_raw is not None and raw < self.last_raw:
            self.offset += self.last_raw  # reset: everything since counts as new requests
        self.last_raw = raw
        self.samples.append((t, raw + self.offset))
        # Keep one sample older than the window so the window is always fully covered.
        while len(self.samples) > 2 and self.samples[1][0] <= t - keep_seconds:
            self.samples.popleft()

    def span(self) -> float:
        """Seconds between the oldest and the newest sample kept."""
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0

    def rate(self, window: float) -> float | None:
        """Rate over the `window` seconds ending at the newest sample; None with one sample."""
        if len(self.samples) < 2:
            return None
        end_t, end_v = self.samples[-1]
        start = end_t - window
        base_t, base_v = self.samples[0]
        for t, v in self.samples:
            if t > start:
                break
            base_t, base_v = t, v
        if end_t <= base_t:
            base_t, base_v = self.samples[-2]
        return max(0.0, (end_v - base_v) / (end_t - base_t))

    @property
    def last_seen(self) -> float | None:
        return self.samples[-1][0] if self.samples else None


@dataclass
class PodHistogram:
    """The samples of one pod's cumulative histogram buckets, made monotonic across resets."""

    bounds: tuple[float, ...] = ()
    samples: deque[tuple[float, tuple[float, ...]]] = field(default_factory=deque)
    last_raw: tuple[float, ...] | None = None
    offset: tuple[float, ...] = ()

    def observe(self, t: float, bounds: tuple[float, ...], raw: tuple[float, ...],
                keep_seconds: float) -> None:
        if bounds != self.bounds:  # a new launcher with other buckets: start over
            self.bounds, self.samples, self.last_raw, self.offset = bounds, deque(), None, ()
        if self.samples and t <= self.samples[-1][0]:
            return
        if not self.offset:
            self.offset = (0.0,) * len(raw)
        if self.last_raw is not None and raw[-1] < self.last_raw[-1]:
            self.offset = tuple(o + v for o, v in zip(self.offset, self.last_raw, strict=True))
        self.last_raw = raw
        self.samples.append((t, tuple(v + o for v, o in zip(raw, self.offset, strict=True))))
        while len(self.samples) > 2 and self.samples[1][0] <= t - keep_seconds:
            self.samples.popleft()

    def span(self) -> float:
        """Seconds between the oldest and the newest sample kept."""
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0

    def quantile(self, q: float, window: float) -> float | None:
        """The q-quantile of what was observed over the window; None with one sample."""
        if len(self.samples) < 2:
            return None
        end_t, end = self.samples[-1]
        base = self.samples[0][1]
        for t, counts in self.samples:
            if t > end_t - window:
                break
            base = counts
        if base is end:
            base = self.samples[-2][1]
        increase = [max(0.0, e - b) for e, b in zip(end, base, strict=True)]
        return bucket_quantile(q, self.bounds, increase)


def bucket_quantile(q: float, bounds: tuple[float, ...], cumulative: list[float]) -> float:
    """Prometheus' `histogram_quantile`: linear within the bucket the rank falls in (the
    last bound is +Inf: a rank there reads as the largest finite bound); 0 with no count."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            share = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Decision:
    """What to report for one DjangoService at one moment."""

    per_pod: dict[str, float]  # the values the HPA sees, one per pod that has a rate
    stable_total: float
    panic_total: float
    panic: bool  # True when the burst rule chose the panic window

    @property
    def stable_per_pod(self) -> float:
        return self.stable_total / len(self.per_pod) if self.per_pod else 0.0

    @property
    def panic_per_pod(self) -> float:
        return self.panic_total / len(self.per_pod) if self.per_pod else 0.0


def in_panic(panic_total: float, pods: int, target_per_pod: float, threshold: float) -> bool:
    """The burst rule: the short window asks for >= `threshold` times what the pods can take."""
    capacity = pods * target_per_pod
    return capacity > 0 and panic_total >= threshold * capacity


def decide(rates: dict[str, Rates], pods: int, target_per_pod: float, threshold: float,
           starting: int = 0) -> Decision:
    """Choose the stable or the panic value for every pod (one choice for the whole service).

    `pods` is how many pods can take traffic now (ready pods), `starting` how many more are on
    their way (created, not yet ready). The burst rule counts both: once enough pods are
    starting, the service leaves panic and the HPA reads the stable window, which asks for no
    more pods than the load needs. In panic the larger of the two values is reported, so a
    burst that eases for a moment does not undo the scale-up at once (Knative never scales
    down while panicking either).
    """
    stable_total = sum(r.stable for r in rates.values())
    panic_total = sum(r.panic for r in rates.values())
    panic = in_panic(panic_total, pods + starting, target_per_pod, threshold)
    per_pod = {
        pod: max(r.stable, r.panic) if panic else r.stable for pod, r in rates.items()
    }
    return Decision(per_pod, stable_total, panic_total, panic)


def blend(carried: float, measured: float | None, covered: float, window: float) -> float:
    """A window's rate while this operator's own samples cover only `covered` of its seconds:
    the carried rate stands for the part not covered yet, as it would in the window."""
    if measured is None:
        return carried
    weight = min(1.0, covered / window) if window > 0 else 1.0
    return carried * (1.0 - weight) + measured * weight


@dataclass(frozen=True)
class CeilingState:
    """The database ceiling across rounds: since when the pools have waited without a break,
    whether the ceiling holds, since when they have not waited while it holds, and when they
    last waited."""

    waiting_since: float | None = None
    held: bool = False
    clear_since: float | None = None
    last_waited: float | None = None

    @property
    def holding_scale_up(self) -> bool:
        """The ceiling holds, or the pools waited within the last `engage_after` seconds."""
        return self.held or self.last_waited is not None


CEILING_OFF = CeilingState()


def next_ceiling(state: CeilingState, waiting: bool, t: float, engage_after: float,
                 release_after: float) -> CeilingState:
    """The ceiling holds once the pools have waited in every round for `engage_after` seconds,
    and lets go once they have not waited for `release_after` seconds.

    Before it holds, a round without a wait (or without a pool that answered) starts the
    count over but keeps scale-up held back until `engage_after` seconds after the last
    wait: the burst path's averages still count the requests that waited for the database
    until then. Letting go at the first quiet round let a loaded machine's one missed read
    show the HPA those inflated averages (2 pods to 6 in a CI run)."""
    if waiting:
        since = t if state.waiting_since is None else state.waiting_since
        return CeilingState(since, state.held or t - since >= engage_after, last_waited=t)
    if not state.held:
        if state.last_waited is not None and t - state.last_waited < engage_after:
            return CeilingState(last_waited=state.last_waited)
        return CEILING_OFF
    since = t if state.clear_since is None else state.clear_since
    if t - since >= release_after:
        return CEILING_OFF
    return CeilingState(None, True, since, state.last_waited)


@dataclass
class ServiceWindows:
    """Every pod's counter (or, from Prometheus, its rate) for one DjangoService.

    `carried` is the per-pod average an earlier operator last reported (the DjangoService's
    `status.rps`). The pods ready at the first collection start from it; it fades out as the
    samples cover each window, and a pod created later never gets it. `carried_values` does
    the same for concurrency and queue time (by spec metric name, from `status.scaling`).
    """

    stable_window: float = STABLE_WINDOW_SECONDS
    panic_window: float = PANIC_WINDOW_SECONDS
    carried: Rates | None = None
    counters: dict[str, PodCounter] = field(default_factory=dict)
    given: dict[str, Rates] = field(default_factory=dict)  # rates read from Prometheus
    seeded: dict[str, Rates] = field(default_factory=dict)  # pods still blending `carried`
    carried_values: dict[str, Rates] = field(default_factory=dict)
    # By metric: the pods still blending `carried_values`.
    seeded_values: dict[str, dict[str, Rates]] = field(default_factory=dict)
    started: bool = False
    # Seconds requests spent in the pod (a counter), and the queue-time histogram, per pod.
    busy: dict[str, PodCounter] = field(default_factory=dict)
    queues: dict[str, PodHistogram] = field(default_factory=dict)
    # Seconds in the app and CPU seconds, per pod: what the advice on threads reads.
    in_app: dict[str, PodCounter] = field(default_factory=dict)
    cpu: dict[str, PodCounter] = field(default_factory=dict)
    # The database ceiling's state (see `next_ceiling`).
    ceiling: CeilingState = CEILING_OFF

    def start(self, pods: Iterable[str]) -> None:
        """At the first collection: the pods ready now start from the carried rates."""
        if self.started:
            return
        self.started = True
        ready = list(pods)
        if self.carried is not None:
            self.seeded = dict.fromkeys(ready, self.carried)
        self.seeded_values = {metric: dict.fromkeys(ready, carried)
                              for metric, carried in self.carried_values.items()}

    def forget_missing(self, pods: Iterable[str]) -> None:
        """Pod churn: drop the pods that are gone."""
        alive = set(pods)
        stores: tuple[dict[str, Any], ...] = (
            self.counters, self.given, self.seeded, self.busy, self.queues, self.in_app,
            self.cpu, *self.seeded_values.values())
        for store in stores:
            for name in [name for name in store if name not in alive]:
                del store[name]

    def observe_counter(self, pod: str, t: float, value: float) -> None:
        counter = self.counters.setdefault(pod, PodCounter())
        counter.observe(t, value, keep_seconds=max(self.stable_window, self.panic_window))

    def observe_busy(self, pod: str, t: float, seconds: float) -> None:
        counter = self.busy.setdefault(pod, PodCounter())
        counter.observe(t, seconds, keep_seconds=max(self.stable_window, self.panic_window))

    def observe_usage(self, pod: str, t: float, app_seconds: float, cpu_seconds: float) -> None:
        keep = max(self.stable_window, self.panic_window)
        self.in_app.setdefault(pod, PodCounter()).observe(t, app_seconds, keep_seconds=keep)
        self.cpu.setdefault(pod, PodCounter()).observe(t, cpu_seconds, keep_seconds=keep)

    def usage(self) -> dict[str, tuple[float, float]]:
        """Per pod over the stable window: (threads busy on average, CPU cores used)."""
        found = {}
        for pod, counter in self.in_app.items():
            busy = counter.rate(self.stable_window)
            cores = self.cpu[pod].rate(self.stable_window) if pod in self.cpu else None
            if busy is not None and cores is not None:
                found[pod] = (busy, cores)
        return found

    def observe_queue(self, pod: str, t: float, bounds: tuple[float, ...],
                      cumulative: tuple[float, ...]) -> None:
        histogram = self.queues.setdefault(pod, PodHistogram())
        histogram.observe(t, bounds, cumulative,
                          keep_seconds=max(self.stable_window, self.panic_window))

    def concurrency(self) -> dict[str, Rates]:
        """Requests in each pod at once, averaged over the two windows (pods whose scrape
        failed keep their last values)."""
        return self._carried_over(self.seeded_values.get(CONCURRENCY, {}), self.busy,
                                  lambda c, w: c.rate(w))

    def queue_time(self) -> dict[str, Rates]:
        """The p95 wait (seconds) of each pod's requests over the two windows."""
        return self._carried_over(self.seeded_values.get(QUEUE_TIME, {}), self.queues,
                                  lambda h, w: h.quantile(QUEUE_TIME_QUANTILE, w))

    def observe_rate(self, pod: str, rate: float) -> None:
        """A rate computed elsewhere (Prometheus): both windows take it as it is."""
        self.given[pod] = Rates(rate, rate)
        self.seeded.pop(pod, None)  # Prometheus's own window covers the takeover

    def rates(self) -> dict[str, Rates]:
        """Every pod that has a rate; pods whose scrape failed keep their last one."""
        return {**self.given,
                **self._carried_over(self.seeded, self.counters, lambda c, w: c.rate(w))}

    def _carried_over(self, seeded: dict[str, Rates], series: dict[str, Any],
                      value: Callable[[Any, float], float | None]) -> dict[str, Rates]:
        """Each pod's value over the two windows from its own samples, blended with the
        carried value while `seeded` holds the pod (and dropped from it once its samples
        cover the stable window); a seeded pod with no sample yet has the carried value."""
        result = dict(seeded)
        for pod, one in series.items():
            stable, panic = value(one, self.stable_window), value(one, self.panic_window)
            carried = seeded.get(pod)
            if carried is not None:
                covered = one.span()
                stable = blend(carried.stable, stable, covered, self.stable_window)
                panic = blend(carried.panic, panic, covered, self.panic_window)
                if covered >= self.stable_window:
                    del seeded[pod]  # its own samples cover both windows now
            if stable is not None and panic is not None:
                result[pod] = Rates(stable, panic)
        return result


def round_rps(value: float) -> float:
    """Two significant digits (at least one decimal below 10 RPS), so status does not flap."""
    if value <= 0 or not math.isfinite(value):
        return 0.0
    if value < 10:
        return round(value, 1)
    digits = math.floor(math.log10(value)) - 1
    return float(round(value, -digits))


def format_rps(value: float) -> str:
    rounded = round_rps(value)
    return f"{rounded:.1f}" if rounded < 10 else f"{rounded:.0f}"


def quantity(value: float) -> str:
    """A Kubernetes quantity in milli-units: 12.5 -> "12500m" (the HPA's own resolution)."""
    return f"{max(0, round(value * 1000))}m"
