"""Time from a load step to the HPA's first scale-up: our metrics path vs a prometheus-adapter one.

A simulation, not a cluster run (the end-to-end figure on the real control plane is printed by
`tests/e2e/test_autoscaling.py`). Both paths see the same counter and the same HPA rule
(scale up when the per-pod value exceeds the target by the HPA's 10 % tolerance, read once per
sync period); only what stands between the counter and the HPA differs:

- ours: the operator scrapes every 2 s and reports through `djangoscale.autoscaling.windows`
  (60 s stable window, 6 s panic window, burst rule at 2x capacity, and at 1.2x as
  DJANGOSCALE_PANIC_THRESHOLD=1.2 would set it) - the real code, not a model;
- prometheus-adapter-like: Prometheus scrapes every 30 s (the pessimistic end, two samples a
  window) or every 15 s (a well-tuned setup, four) and the adapter answers each HPA read with
  `rate(counter[1m])` (Prometheus' extrapolation is left out, which flatters the adapter a
  little as it only ever under-reads a rising rate less).

Phases (when the step falls relative to each scrape and HPA tick) are drawn at random; the
table gives the median and the 90th percentile over the runs.

    python bench/bench_metrics_latency.py [--runs 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable

from djangoscale.autoscaling.windows import ServiceWindows, decide

PODS = 2
TARGET = 20.0  # RPS per pod
BASE_RPS = 10.0  # total before the step: a quarter of what the pods take at target
TOLERANCE = 0.1  # the HPA's default --horizontal-pod-autoscaler-tolerance
HORIZON = 300.0  # give up after this many seconds


def counter_at(t: float, step_rps: float) -> float:
    """Requests served by all pods by time t (the step is at t = 0), split evenly per pod."""
    start = 1000.0  # seconds of history before the step
    before = BASE_RPS * (min(t, 0.0) + start)
    return (before + step_rps * max(t, 0.0)) / PODS


def first_scale_up(read: Callable[[float], float], hpa_period: float, phase: float) -> float:
    """Seconds from the step to the first HPA tick whose read asks for more pods."""
    t = phase
    while t < HORIZON:
        if read(t) > TARGET * (1 + TOLERANCE):
            return t
        t += hpa_period
    return float("inf")


def ours(step_rps: float, hpa_period: float, rng: random.Random,
         scrape: float = 2.0, threshold: float = 2.0) -> float:
    windows = ServiceWindows(stable_window=60.0, panic_window=6.0)
    scrape_phase = rng.uniform(0, scrape)
    # Scrape times from 90 s before the step, so the windows are full of the base load.
    times = [scrape_phase - 90.0 + i * scrape for i in range(int((HORIZON + 90) / scrape))]
    latest: dict[float, float] = {}
    last_value = 0.0
    for t in times:
        for pod in range(PODS):
            windows.observe_counter(f"pod-{pod}", t, counter_at(t, step_rps))
        decision = decide(windows.rates(), PODS, TARGET, threshold)
        last_value = sum(decision.per_pod.values()) / PODS
        latest[t] = last_value

    def read(at: float) -> float:
        # The HPA sees the value of the newest scrape at or before `at`.
        done = [t for t in times if t <= at]
        return latest[done[-1]] if done else 0.0

    return first_scale_up(read, hpa_period, rng.uniform(0, hpa_period))


def adapter(step_rps: float, hpa_period: float, rng: random.Random,
            scrape: float = 30.0, window: float = 60.0) -> float:
    scrape_phase = rng.uniform(0, scrape)

    def read(at: float) -> float:
        # Prometheus samples in (at - window, at], then (last - first) / (t_last - t_first).
        first_index = int((at - window - scrape_phase) // scrape) + 1
        count = int(window // scrape) + 1
        samples = [scrape_phase + i * scrape for i in range(first_index, first_index + count)]
        samples = [t for t in samples if at - window < t <= at]
        if len(samples) < 2:
            return 0.0
        t0, t1 = samples[0], samples[-1]
        return (counter_at(t1, step_rps) - counter_at(t0, step_rps)) / (t1 - t0)

    return first_scale_up(read, hpa_period, rng.uniform(0, hpa_period))


def summarize(values: list[float]) -> str:
    finite = sorted(v for v in values if v != float("inf"))
    if not finite:
        return "never"
    p90 = finite[min(len(finite) - 1, int(0.9 * len(finite)))]
    missed = len(values) - len(finite)
    return f"{statistics.median(finite):5.1f} s / {p90:5.1f} s" + (
        f" ({missed} never)" if missed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    capacity = PODS * TARGET
    print(f"{PODS} pods at {TARGET:g} RPS each, {BASE_RPS:g} RPS before the step; "
          f"median / p90 of time to the first scale-up over {args.runs} runs")
    print(f"{'step':>18} {'HPA sync':>9} {'djangoscale (2x)':>22} {'djangoscale (1.2x)':>22} "
          f"{'adapter, 30 s scrape, 1m':>26} {'adapter, 15 s scrape, 1m':>26}")
    for multiple in (1.5, 3.0, 10.0):
        step = multiple * capacity
        for period in (15.0, 5.0):
            mine = [ours(step, period, rng) for _ in range(args.runs)]
            eager = [ours(step, period, rng, threshold=1.2) for _ in range(args.runs)]
            theirs = [adapter(step, period, rng) for _ in range(args.runs)]
            tuned = [adapter(step, period, rng, scrape=15.0) for _ in range(args.runs)]
            label = f"{multiple:g}x ({step:g} RPS)"
            print(f"{label:>18} {period:>8g}s {summarize(mine):>22} {summarize(eager):>22} "
                  f"{summarize(theirs):>26} {summarize(tuned):>26}")


if __name__ == "__main__":
    main()
