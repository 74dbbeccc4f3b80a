"""What the HPA reads while a standby operator takes over: carried-over windows against a cold
start, simulated with the operator's own window code over many runs.

Steady load: 3 pods, each a Poisson stream of 50/3 RPS, target 20 RPS per pod, so the HPA
wants ceil(3 x 16.7 / 20) = 3 pods. The active operator scrapes every 2 s for two minutes and
leaves `status.rps` (rounded as the operator writes it); it dies; the standby takes over 16 s
later (the e2e failover run measured 15.6 s) and scrapes every 2 s. The HPA syncs every 15 s
(random phase) and reads the average per-pod value: no value is a failed read (it holds), a
value that asks for fewer than 3 pods is a dip.

Cold: the standby starts with empty windows (the behaviour before carrying them over).
Carried: it starts from the status's rates, blended out as its own samples fill the windows.

    .venv/bin/python bench/bench_takeover.py [--runs 2000]

Not a test: a simulation of the arrivals, with the real `djangoscale.autoscaling.windows`.
Recorded in docs/autoscaling.md.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator")]

from djangoscale.autoscaling.windows import (  # noqa: E402
    Rates,
    ServiceWindows,
    decide,
    format_rps,
)

PODS = 3
TARGET = 20.0
TOTAL_RPS = 50.0
SCRAPE = 2.0
HPA_PERIOD = 15.0
TOLERANCE = 0.1  # the HPA's default
BEFORE = 120.0
TAKEOVER = 16.0
WATCH = 120.0
STABLE, PANIC, THRESHOLD = 60.0, 6.0, 2.0


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method is slow for large means; a normal approximation is exact enough here."""
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def hpa_desired(value: float, current: int = PODS) -> int:
    ratio = value / TARGET
    if abs(ratio - 1.0) <= TOLERANCE:
        return current
    return math.ceil(current * ratio)


def one_run(rng: random.Random, carry: bool) -> tuple[int, int, float]:
    """(failed reads, dips, largest relative error of a read) in the watch after a takeover."""
    per_pod = TOTAL_RPS / PODS
    counters = [0.0] * PODS
    t = -BEFORE
    old = ServiceWindows(STABLE, PANIC)
    while t <= 0:
        for pod in range(PODS):
            counters[pod] += poisson(rng, per_pod * SCRAPE)
            old.observe_counter(f"p{pod}", t, counters[pod])
        t += SCRAPE
    decision = decide(old.rates(), PODS, TARGET, THRESHOLD)
    status = Rates(float(format_rps(decision.stable_per_pod)),
                   float(format_rps(decision.panic_per_pod)))
    new = ServiceWindows(STABLE, PANIC, carried=status if carry else None)
    new.start(f"p{pod}" for pod in range(PODS))
    # Requests keep arriving while no operator runs.
    served: list[tuple[float, float | None]] = []  # (time, value the metrics API serves)
    while t < TAKEOVER:
        for pod in range(PODS):
            counters[pod] += poisson(rng, per_pod * SCRAPE)
        t += SCRAPE
    while t < TAKEOVER + WATCH:
        for pod in range(PODS):
            counters[pod] += poisson(rng, per_pod * SCRAPE)
            new.observe_counter(f"p{pod}", t, counters[pod])
        now = decide(new.rates(), PODS, TARGET, THRESHOLD)
        served.append((t, sum(now.per_pod.values()) / PODS if now.per_pod else None))
        t += SCRAPE
    failed = dips = 0
    worst = 0.0
    sync = TAKEOVER + rng.uniform(0, HPA_PERIOD)
    while sync < TAKEOVER + WATCH:
        done = [value for at, value in served if at <= sync]
        value = done[-1] if done else None
        if value is None:
            failed += 1
        else:
            dips += hpa_desired(value) < PODS
            worst = max(worst, abs(value - per_pod) / per_pod)
        sync += HPA_PERIOD
    return failed, dips, worst


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    print(f"{PODS} pods at {TOTAL_RPS / PODS:.1f} RPS each (target {TARGET:.0f}), takeover "
          f"{TAKEOVER:.0f} s after the kill, scrape {SCRAPE:.0f} s, HPA sync {HPA_PERIOD:.0f} s, "
          f"{WATCH:.0f} s watched, {args.runs} runs")
    for carry in (False, True):
        rng = random.Random(args.seed)
        runs = [one_run(rng, carry) for _ in range(args.runs)]
        with_dip = sum(1 for _, dips, _ in runs if dips)
        failed = sum(f for f, _, _ in runs)
        worst = sorted(w for _, _, w in runs)
        print(f"{'carried' if carry else 'cold':8} runs where the HPA would ask for fewer pods: "
              f"{with_dip / len(runs):6.1%}; failed reads: {failed / len(runs):.2f} per run; "
              f"worst read off by {worst[len(worst) // 2]:.0%} (median run), "
              f"{worst[int(len(worst) * 0.99)]:.0%} (99th percentile)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
