"""Plot a load-step timeline: RPS per pod and replicas over time, on two y-axes.

The input is the `timeline.csv` that
`tests/e2e/test_autoscaling.py::test_load_step_scales_up_through_the_burst_path_and_back_down`
writes into its pytest temp dir, one row per ~0.5 s:

    seconds,desired_replicas,rps_stable_per_pod,rps_panic_per_pod,status_desired

`desired_replicas` is the HPA's `status.desiredReplicas`; `status_desired` is what the
DjangoService's status shows (`kubectl get djs`); the RPS columns are the operator's stable
and short (panic) window values per pod, as the HPA reads them. The CSV does not record the
load step itself: the test starts its load right after the timeline (t = 0) and runs it for
30 s, which are the defaults of --load-start and --load-stop.

    python bench/plot_timeline.py CSV OUT.png [--load-start 0] [--load-stop 30] [--target 20]

matplotlib is needed for this script only (not a test or runtime dependency).
"""

from __future__ import annotations

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: str) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def first_time(columns: dict[str, list[float]], after: float, test) -> float | None:  # type: ignore[no-untyped-def]
    for t, desired in zip(columns["seconds"], columns["desired_replicas"], strict=True):
        if t >= after and test(desired):
            return t
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("out")
    parser.add_argument("--load-start", type=float, default=0.0)
    parser.add_argument("--load-stop", type=float, default=30.0)
    parser.add_argument("--target", type=float, default=20.0, help="target RPS per pod")
    parser.add_argument("--title", default="Load step: 100 RPS for 30 s on 2 pods "
                        "(target 20 RPS per pod, min 2, max 10)")
    args = parser.parse_args()

    c = read(args.csv)
    t = c["seconds"]
    fig, rps_axis = plt.subplots(figsize=(10, 5.8), dpi=110)
    replicas_axis = rps_axis.twinx()

    rps_axis.axvspan(args.load_start, args.load_stop, color="0.92", zorder=0)
    for x, label in ((args.load_start, "load starts"), (args.load_stop, "load stops")):
        rps_axis.axvline(x, color="0.35", linestyle=":", linewidth=1.2)
        rps_axis.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(4, -14), textcoords="offset points", fontsize=9,
                          color="0.25")
    rps_axis.plot(t, c["rps_panic_per_pod"], color="tab:orange", linewidth=1.4,
                  label="RPS per pod, short (panic) window")
    rps_axis.plot(t, c["rps_stable_per_pod"], color="tab:blue", linewidth=1.8,
                  label="RPS per pod, stable window")
    rps_axis.axhline(args.target, color="tab:blue", linestyle="--", linewidth=0.9, alpha=0.7,
                     label=f"target {args.target:g} RPS per pod")
    rps_axis.set_xlabel("seconds since the load step")
    rps_axis.set_ylabel("requests per second per pod")
    rps_axis.set_ylim(bottom=0)
    rps_axis.set_xlim(min(t), max(t) + 2)

    replicas_axis.step(t, c["desired_replicas"], where="post", color="tab:green",
                       linewidth=2.2, label="replicas: HPA desired")
    replicas_axis.step(t, c["status_desired"], where="post", color="tab:red",
                       linewidth=1.2, linestyle="--",
                       label="replicas: DjangoService status (kubectl get djs)")
    top = max(max(c["desired_replicas"]), max(c["status_desired"]))
    replicas_axis.set_ylim(0, top * 1.6)
    replicas_axis.set_ylabel("replicas")
    replicas_axis.yaxis.get_major_locator().set_params(integer=True)

    up = first_time(c, args.load_start, lambda d: d > c["desired_replicas"][0])
    if up is not None:
        replicas_axis.annotate(f"first scale-up\n{up - args.load_start:.1f} s after the step",
                               (up, c["desired_replicas"][t.index(up)]),
                               xytext=(25, 40), textcoords="offset points", fontsize=9,
                               arrowprops={"arrowstyle": "->", "color": "tab:green"})

    start = c["desired_replicas"][0]
    down = first_time(c, args.load_stop, lambda d: d <= start)
    if down is not None:
        replicas_axis.annotate(f"back to {start:g}\n{down - args.load_stop:.1f} s after load stops",
                               (down, start), xytext=(-150, 45), textcoords="offset points",
                               fontsize=9,
                               arrowprops={"arrowstyle": "->", "color": "tab:green"})

    handles = rps_axis.get_legend_handles_labels()
    more = replicas_axis.get_legend_handles_labels()
    fig.legend(handles[0] + more[0], handles[1] + more[1], loc="lower center", ncol=3,
               fontsize=8.5, frameon=False)
    rps_axis.set_title(args.title, fontsize=11)
    rps_axis.grid(True, alpha=0.3)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
