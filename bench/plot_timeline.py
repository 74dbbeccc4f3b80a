"""Plot a load-step timeline: RPS per pod and replicas over time.

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

The plotting is `djangoscale_dev.timeline.plot_timeline`, the one `djangoscale dev` draws its
load-run timeline with (a timeline CSV that `djangoscale dev` wrote plots here too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from djangoscale_dev.timeline import plot_timeline, read_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--load-start", type=float, default=0.0)
    parser.add_argument("--load-stop", type=float, default=30.0)
    parser.add_argument("--target", type=float, default=20.0, help="target RPS per pod")
    parser.add_argument("--title", default="Load step: 100 RPS for 30 s on 2 pods "
                        "(target 20 RPS per pod, min 2, max 10)")
    args = parser.parse_args()
    out = plot_timeline(
        read_csv(args.csv), args.out, args.title,
        marks=[(args.load_start, "load starts"), (args.load_stop, "load stops")],
        load_window=(args.load_start, args.load_stop), target_per_pod=args.target,
        scale_up_after=args.load_start, scale_down_after=args.load_stop,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
