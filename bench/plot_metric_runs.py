"""Plot the concurrency / queue-time runs: HPA desired replicas per metric, both scenarios.

The inputs are the CSVs `tests/e2e/test_autoscaling.py` writes into each test's pytest temp
dir (`seconds,desired_replicas,value`, one row per ~0.5 s from the moment the load starts):
`slowdown-<metric>.csv` from
`test_a_view_that_slows_down_scales_on_concurrency_and_queue_time_not_rps` and
`step-<metric>.csv` from `test_a_load_step_at_constant_latency_scales_every_metric`. In both
the change comes FAST_PHASE (20 s) after the load starts. `tests/e2e/test_real_node_metrics.py`
writes the same files for the real node, with the change BEFORE_CHANGE (30 s) in.

    python bench/plot_metric_runs.py OUT.png CSV... [--change-at 20] \
        [--slowdown-rps 30 --step-rps 10,50 --where "real node" --targets queueTime=100,...]
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
    "slowdown": "The view slows from 50 to 200 ms at a constant {slowdown_rps} RPS",
    "step": "A load step from {step_rps[0]} to {step_rps[1]} RPS at a constant 100 ms",
}


def read(path: Path) -> tuple[list[float], list[int], list[float | None]]:
    with path.open() as file:
        rows = list(csv.DictReader(file))
    return ([float(r["seconds"]) for r in rows], [int(r["desired_replicas"]) for r in rows],
            [float(r["value"]) if r["value"] else None for r in rows])


def parse_targets(text: str) -> dict[str, float]:
    """`concurrency=2,queueTime=100` -> {"concurrency": 2.0, "queueTime": 100.0}."""
    targets = {}
    for part in filter(None, text.split(",")):
        metric, _, value = part.partition("=")
        if metric not in COLOURS or not value:
            raise SystemExit(f"--targets: {part!r} is not METRIC=VALUE with a metric of "
                             f"{', '.join(COLOURS)}")
        targets[metric] = float(value)
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("csvs", type=Path, nargs="+")
    parser.add_argument("--change-at", type=float, default=20.0)
    parser.add_argument("--slowdown-rps", default="30", help="the slowdown's rate, for its title")
    parser.add_argument("--step-rps", default="10,50", help="the step's two rates, for its title")
    parser.add_argument("--where", default="", help="said after each title (e.g. real node)")
    parser.add_argument("--targets", default="", help="METRIC=TARGET,...: adds a row of each "
                        "metric's value over its target (queue time in ms)")
    args = parser.parse_args()
    rates = {"slowdown_rps": args.slowdown_rps, "step_rps": args.step_rps.split(",")}
    targets = parse_targets(args.targets)
    rows = 2 if targets else 1
    figure, grid = plt.subplots(rows, 2, figsize=(12, 4.2 * rows), sharey="row", squeeze=False)
    for column, scenario in enumerate(TITLES):
        axis = grid[0][column]
        for path in sorted(p for p in args.csvs if p.name.startswith(f"{scenario}-")):
            metric = path.stem.split("-", 1)[1]
            seconds, replicas, values = read(path)
            axis.step(seconds, replicas, where="post", label=metric,
                      color=COLOURS.get(metric), linewidth=2)
            if metric in targets:
                # 0 is "no ready pod to read" (overloaded pods fail their probes): a gap.
                ratio = [v / targets[metric] if v else float("nan") for v in values]
                grid[1][column].plot(seconds, ratio, label=f"{metric} (target "
                                     f"{targets[metric]:g})", color=COLOURS.get(metric))
        title = TITLES[scenario].format(**rates)
        axis.set_title(f"{title} ({args.where})" if args.where else title, fontsize=10)
        axis.legend(title="autoscaling.metric")
        for row in range(rows):
            grid[row][column].axvline(args.change_at, color="grey", linestyle="--", linewidth=1)
            grid[row][column].grid(alpha=0.3)
        grid[rows - 1][column].set_xlabel("seconds since the load started (dashed: the change)")
        if targets:
            grid[1][column].axhline(1.0, color="black", linewidth=1)
            grid[1][column].set_yscale("log")
            grid[1][column].legend(fontsize=8)
    grid[0][0].set_ylabel("HPA desired replicas")
    if targets:
        grid[1][0].autoscale(axis="y")
        grid[1][0].set_ylim(bottom=0.05)  # after every column's data: the row shares it
        grid[1][0].set_ylabel("value the HPA reads / target (log)")
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
