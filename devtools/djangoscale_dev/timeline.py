"""The PNG timeline of a load run: RPS offered and served, RPS per pod as the autoscaler sees
it, replicas, p95 latency and errors over time.

`djangoscale dev` records one row per second of its live view (`row`) and plots them at the end
or on Ctrl-C; `bench/plot_timeline.py` plots the e2e load-step test's CSV with the same
function. A panel is drawn only when its columns hold data, so a timeline without load (or
without a cluster) still plots what it has.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from djangoscale_dev.live import Snapshot

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

Columns = Mapping[str, Sequence[float | None]]

# Column -> (label, colour), per panel. Replicas share the first panel drawn (twin y-axis).
TOTAL_RPS = {"offered_rps": ("offered RPS", "0.55"), "served_rps": ("served RPS (2xx)", "tab:cyan")}
PER_POD_RPS = {
    "rps_panic_per_pod": ("RPS per pod, short (panic) window", "tab:orange"),
    "rps_stable_per_pod": ("RPS per pod, stable window", "tab:blue"),
    "hpa_reads": ("RPS per pod the HPA reads", "tab:purple"),
}
REPLICAS = {
    "desired_replicas": ("replicas: HPA desired", "tab:green"),
    "ready_replicas": ("replicas: ready", "tab:olive"),
    "status_desired": ("replicas: DjangoService status (kubectl get djs)", "tab:red"),
}
LATENCY = {"p95_ms": ("p95 latency (ms)", "tab:brown")}
ERRORS = {"errors": ("failed requests per second", "tab:red")}
COLUMNS = ("seconds", *TOTAL_RPS, *PER_POD_RPS, *REPLICAS, *LATENCY, *ERRORS)


def row(snapshot: Snapshot, seconds: float) -> dict[str, float | None]:
    """One timeline row from a live-view snapshot (None where it knows nothing)."""
    values: dict[str, float | None] = dict.fromkeys(COLUMNS)
    values["seconds"] = round(seconds, 2)
    if snapshot.load is not None:
        load = snapshot.load
        values.update(offered_rps=load.offered_rps, served_rps=load.served_rps,
                      p95_ms=load.p95_ms, errors=float(load.failed_last_second))
    if snapshot.cluster is not None:
        cluster = snapshot.cluster
        values.update(rps_stable_per_pod=cluster.rps_stable, rps_panic_per_pod=cluster.rps_panic,
                      hpa_reads=cluster.hpa_reads,
                      desired_replicas=_float(cluster.desired),
                      ready_replicas=_float(cluster.ready))
    return values


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


def columns_of(rows: Sequence[Mapping[str, float | None]]) -> dict[str, list[float | None]]:
    return {name: [r.get(name) for r in rows] for name in COLUMNS if any(
        r.get(name) is not None for r in rows)}


def write_csv(rows: Sequence[Mapping[str, float | None]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS}
                         for r in rows)


def read_csv(path: Path) -> dict[str, list[float | None]]:
    """Columns of a timeline CSV (this module's, or any with a `seconds` column)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) if r[key] not in ("", None) else None for r in rows]
            for key in rows[0]}


def _nan(values: Sequence[float | None]) -> list[float]:
    """None as NaN: matplotlib leaves a gap there."""
    return [math.nan if v is None else v for v in values]


def _known(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def first_time(t: Sequence[float], values: Sequence[float | None], after: float,
               test: Callable[[float], bool]) -> float | None:
    """The first time at or after `after` whose value passes `test`."""
    for when, value in zip(t, values, strict=True):
        if when >= after and value is not None and test(value):
            return when
    return None


def starting_count(desired: Sequence[float | None] | None) -> float | None:
    """The HPA's desired replicas before anything scaled: its first positive value (a new HPA
    reports 0 until its first sync; the minimum is at least 1)."""
    return next((v for v in _known(desired or []) if v > 0), None)


def scale_events(columns: Columns, *, up_after: float | None,
                 load_end: float) -> dict[str, float | None]:
    """The HPA's scale events in a timeline, from its desired replicas (seconds since the load
    started): `first_scale_up` (the first time above the starting count at or after
    `up_after`) and its delay `scale_up_delay`; `peak_desired`; `first_scale_down` (the first
    time below the peak after it); `back_to_start` (desired at the starting count again, at or
    after `load_end`) and its delay `scale_down_delay`. None where it did not happen."""
    events: dict[str, float | None] = dict.fromkeys(
        ("first_scale_up", "scale_up_delay", "peak_desired", "first_scale_down",
         "back_to_start", "scale_down_delay"))
    t = [float(v) for v in _known(columns.get("seconds", []))]
    desired = columns.get("desired_replicas")
    start = starting_count(desired)
    if desired is None or start is None or len(t) != len(desired):
        return events
    peak = max(_known(desired))
    if up_after is not None:
        up = first_time(t, desired, up_after, lambda d: d > start)
        events.update(first_scale_up=up, scale_up_delay=None if up is None else up - up_after)
    events["peak_desired"] = peak
    if peak > start:
        peak_at = first_time(t, desired, 0.0, lambda d: d >= peak)
        assert peak_at is not None
        events["first_scale_down"] = first_time(t, desired, peak_at, lambda d: d < peak)
        back = first_time(t, desired, max(load_end, peak_at), lambda d: d <= start)
        events.update(back_to_start=back,
                      scale_down_delay=None if back is None else back - load_end)
    return events


def plot_timeline(columns: Columns, out: Path, title: str, *,
                  marks: Sequence[tuple[float, str]] = (),
                  load_window: tuple[float, float] | None = None,
                  target_per_pod: float | None = None,
                  scale_up_after: float | None = None,
                  scale_down_after: float | None = None) -> Path:
    """Write the timeline PNG to `out` and return it.

    `marks`: vertical lines with a label (load starts, each step); `load_window`: shaded;
    `scale_up_after` / `scale_down_after`: annotate the first desired-replicas change after
    that time (up from the starting count, then back down to it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [float(v) for v in _known(columns["seconds"])]
    present = {name for name, values in columns.items() if _known(values)}
    panels = [group for group in (TOTAL_RPS, PER_POD_RPS, {**LATENCY, **ERRORS})
              if present & set(group)]
    if not panels:
        panels = [REPLICAS]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(10, 2.2 + 2.6 * len(panels)), dpi=110)
    handles: list[Artist] = []
    labels: list[str] = []
    for index, (axis, group) in enumerate(zip(axes[:, 0], panels, strict=True)):
        if load_window is not None:
            axis.axvspan(*load_window, color="0.93", zorder=0)
        for x, label in marks:
            axis.axvline(x, color="0.35", linestyle=":", linewidth=1.1)
            if index == 0:
                axis.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"),
                              xytext=(3, -12), textcoords="offset points", fontsize=8,
                              color="0.25")
        twin: Axes | None = None
        for name, (label, colour) in group.items():
            if name not in present:
                continue
            target = axis
            if name in ERRORS and present & set(LATENCY):
                twin = twin or axis.twinx()
                target = twin
                target.set_ylabel(label)
            if name == "errors":
                counts = [v or 0 for v in columns[name]]
                target.bar(t, counts, width=0.9, color=colour, alpha=0.6, label=label)
                # A run without errors shows an axis from 0, not matplotlib's -0.05..0.05.
                target.set_ylim(0, max(1.0, *counts) * 1.1)
            else:
                target.plot(t, _nan(columns[name]), color=colour, linewidth=1.6, label=label)
        if group is PER_POD_RPS and target_per_pod is not None:
            axis.axhline(target_per_pod, color="tab:blue", linestyle="--", linewidth=0.9,
                         alpha=0.7, label=f"target {target_per_pod:g} RPS per pod")
        axis.set_ylabel({id(TOTAL_RPS): "requests per second",
                         id(PER_POD_RPS): "RPS per pod"}.get(id(group), "p95 (ms)"))
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        if index == 0:
            twin = _plot_replicas(axis, t, columns, present, scale_up_after, scale_down_after)
        for part in (axis, twin):
            if part is not None:
                more = part.get_legend_handles_labels()
                handles += more[0]
                labels += more[1]
    bottom = axes[-1, 0]
    bottom.set_xlabel("seconds")
    if t:
        bottom.set_xlim(min([*t, *(x for x, _ in marks)]), max(t) + 1)
    axes[0, 0].set_title(title, fontsize=11)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    rows_of_legend = math.ceil(len(labels) / 3)
    fig.tight_layout(rect=(0, 0.01 + 0.2 * rows_of_legend / fig.get_size_inches()[1], 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _plot_replicas(axis: Axes, t: Sequence[float], columns: Columns, present: set[str],
                   scale_up_after: float | None, scale_down_after: float | None) -> Axes | None:
    """Replicas as steps on a twin axis of the first panel, with the scale events marked."""
    if not present & set(REPLICAS):
        return None
    replicas = axis.twinx()
    tops = []
    for name, (label, colour) in REPLICAS.items():
        if name in present:
            replicas.step(t, _nan(columns[name]), where="post", color=colour,
                          linewidth=2.2 if name == "desired_replicas" else 1.2,
                          linestyle="-" if name == "desired_replicas" else "--", label=label)
            tops.append(max(_known(columns[name])))
    replicas.set_ylim(0, max(tops) * 1.6)
    replicas.set_ylabel("replicas")
    from matplotlib.ticker import MaxNLocator

    replicas.yaxis.set_major_locator(MaxNLocator(integer=True))
    desired = columns.get("desired_replicas")
    start = starting_count(desired)
    if desired is None or start is None:
        return replicas
    arrow = {"arrowstyle": "->", "color": "tab:green"}
    if scale_up_after is not None:
        up = first_time(t, desired, scale_up_after, lambda d: d > start)
        if up is not None:
            replicas.annotate(f"first scale-up\n{up - scale_up_after:.1f} s after the step",
                              (up, desired[t.index(up)]), xytext=(25, 30),
                              textcoords="offset points", fontsize=8, arrowprops=arrow)
    if scale_down_after is not None:
        down = first_time(t, desired, scale_down_after, lambda d: d <= start)
        if down is not None:
            replicas.annotate(f"back to {start:g}\n{down - scale_down_after:.1f} s later",
                              (down, start), xytext=(-110, 35), textcoords="offset points",
                              fontsize=8, arrowprops=arrow)
    return replicas
