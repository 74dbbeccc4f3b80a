"""Requests per second per pod, from counter samples, as Knative's autoscaler computes it.

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
  minimum.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

STABLE_WINDOW_SECONDS = 60.0
PANIC_WINDOW_SECONDS = 6.0
# Knative's default: panic when the short window wants at least twice the current capacity.
# Below it a moderate step waits for the stable window (see bench/bench_metrics_latency.py);
# lower reacts faster, and to noise too.
PANIC_THRESHOLD = 2.0


@dataclass(frozen=True)
class Rates:
    """Requests per second of one pod over the two windows."""

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


def in_panic(panic_total: float, pods: int, target_per_pod: float,
             threshold: float = PANIC_THRESHOLD) -> bool:
    """The burst rule: the short window asks for >= `threshold` times what the pods can take."""
    capacity = pods * target_per_pod
    return capacity > 0 and panic_total >= threshold * capacity


def decide(rates: dict[str, Rates], pods: int, target_per_pod: float,
           threshold: float = PANIC_THRESHOLD) -> Decision:
    """Choose the stable or the panic value for every pod (one choice for the whole service).

    `pods` is how many pods can take traffic now (ready pods). In panic the larger of the two
    values is reported, so a burst that eases for a moment does not undo the scale-up at once
    (Knative never scales down while panicking either).
    """
    stable_total = sum(r.stable for r in rates.values())
    panic_total = sum(r.panic for r in rates.values())
    panic = in_panic(panic_total, pods, target_per_pod, threshold)
    per_pod = {
        pod: max(r.stable, r.panic) if panic else r.stable for pod, r in rates.items()
    }
    return Decision(per_pod, stable_total, panic_total, panic)


@dataclass
class ServiceWindows:
    """Every pod's counter (or, from Prometheus, its rate) for one DjangoService."""

    stable_window: float = STABLE_WINDOW_SECONDS
    panic_window: float = PANIC_WINDOW_SECONDS
    counters: dict[str, PodCounter] = field(default_factory=dict)
    given: dict[str, Rates] = field(default_factory=dict)  # rates read from Prometheus

    def forget_missing(self, pods: Iterable[str]) -> None:
        """Pod churn: drop the pods that are gone."""
        alive = set(pods)
        for store in (self.counters, self.given):
            for name in [name for name in store if name not in alive]:
                del store[name]

    def observe_counter(self, pod: str, t: float, value: float) -> None:
        counter = self.counters.setdefault(pod, PodCounter())
        counter.observe(t, value, keep_seconds=max(self.stable_window, self.panic_window))

    def observe_rate(self, pod: str, rate: float) -> None:
        """A rate computed elsewhere (Prometheus): both windows take it as it is."""
        self.given[pod] = Rates(rate, rate)

    def rates(self) -> dict[str, Rates]:
        """Every pod that has a rate; pods whose scrape failed keep their last one."""
        result = dict(self.given)
        for pod, counter in self.counters.items():
            stable, panic = counter.rate(self.stable_window), counter.rate(self.panic_window)
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
