"""Plot the concurrency / queue-time runs: HPA desired replicas per metric, both scenarios.

The inputs are the CSVs `tests/e2e/test_autoscaling.py` writes into each test's pytest temp
dir (`seconds,desired_replicas,value`, one row per ~0.5 s from the moment the load starts):
`slowdown-<metric>.csv` from
`test_a_view_that_slows_down_scales_on_concurrency_and_queue_time_not_rps` and
`step-<metric>.csv` from `test_a_load_step_at_constant_latency_scales_every_metric`. In both
the change comes FAST_PHASE (20 s) after the load starts.

    python bench/plot_metric_runs.py OUT.png CSV... [--change-at 20]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"rps": "tab:blue", "concurrency": "tab:orange", "queueTime": "tab:green"}
TITLES = {
    "slowdown": "The view slows from 50 to 200 ms at a constant 30 RPS",
    "step": "A load step from 10 to 50 RPS at a constant 100 ms",
}


def read(path: Path) -> tuple[list[float], list[int]]:
    with path.open() as file:
        rows = list(csv.DictReader(file))
    return [float(r["seconds"]) for r in rows], [int(r["desired_replicas"]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("csvs", type=Path, nargs="+")
    parser.add_argument("--change-at", type=float, default=20.0)
    args = parser.parse_args()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for axis, scenario in zip(axes, TITLES, strict=True):
        for path in sorted(p for p in args.csvs if p.name.startswith(f"{scenario}-")):
            metric = path.stem.split("-", 1)[1]
            seconds, replicas = read(path)
            axis.step(seconds, replicas, where="post", label=metric,
                      color=COLOURS.get(metric), linewidth=2)
        axis.axvline(args.change_at, color="grey", linestyle="--", linewidth=1)
        axis.set_title(TITLES[scenario], fontsize=10)
        axis.set_xlabel("seconds since the load started (dashed: the change)")
        axis.grid(alpha=0.3)
        axis.legend(title="autoscaling.metric")
    axes[0].set_ylabel("HPA desired replicas")
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
