"""The load step of `djangoscale dev`: once the example is Ready, offer the load steps to its
Service, show the live view while they run, then write the PNG timeline.

Load goes through the Service, as users' traffic does, so it needs pods that serve: a real
node. On KWOK fake nodes nothing listens behind a Service, and this step says so and skips;
it never fakes traffic or figures.

Only argparse at import time (`configure_load` builds part of `dev`'s parser).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

SAMPLE_SECONDS = 1.0  # between two reads of the cluster once the load has ended
# A new HPA reads its metric after a sync or two; a load that started before it would show a
# late scale-up for reasons that are not the autoscaler's.
HPA_METRICS_WAIT_SECONDS = 60.0

if TYPE_CHECKING:
    from djangoscale_dev.live import ClusterSampler, ClusterSnapshot, Reader
    from djangoscale_dev.load import LoadSettings, Step


def configure_load(parser: argparse.ArgumentParser) -> None:
    """`djangoscale dev`'s load options."""
    from djangoscale_dev.load import DEFAULT_RPS, DEFAULT_STEP_SECONDS

    parser.add_argument("--no-load", action="store_true",
                        help="once Ready, only print the objects (no load, no live view)")
    parser.add_argument("--rps", default=DEFAULT_RPS,
                        help="load steps, requests per second (default: %(default)s)")
    parser.add_argument("--step-seconds", type=float, default=DEFAULT_STEP_SECONDS,
                        help="length of each load step (default: %(default)s)")
    parser.add_argument("--load-path", default="/items/",
                        help="path the load requests (default: %(default)s, a database read)")
    parser.add_argument("--settle-seconds", type=float, default=120.0,
                        help="after the load, watch at most this long for the scale-down "
                        "(default: %(default)s)")


def real_nodes(read: Reader) -> list[str]:
    """Ready nodes that run pods for real (a kubelet), not KWOK's fakes."""
    from djangoscale_dev.cluster.flags import KWOK_NODE_ANNOTATION

    names = []
    for node in (read("/api/v1/nodes") or {}).get("items") or []:
        metadata = node.get("metadata") or {}
        if KWOK_NODE_ANNOTATION in (metadata.get("annotations") or {}):
            continue
        conditions = (node.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            names.append(str(metadata.get("name")))
    return names


def load_url(read: Reader, namespace: str, name: str, path: str) -> tuple[str | None, str]:
    """(URL of the DjangoService's Service, "") when a real node can serve it, else
    (None, why not)."""
    if not real_nodes(read):
        return None, ("load skipped: it needs the real node (this cluster has only KWOK fake "
                      "nodes, where no pod serves)")
    service = read(f"/api/v1/namespaces/{namespace}/services/{name}")
    if service is None:
        return None, f"load skipped: no Service {namespace}/{name}"
    spec = service.get("spec") or {}
    ip = spec.get("clusterIP")
    port = next((p.get("port") for p in spec.get("ports") or [] if p.get("name") == "http"),
                None)
    if not ip or ip == "None" or port is None:
        return None, f"load skipped: Service {namespace}/{name} has no ClusterIP and http port"
    return f"http://{ip}:{port}{path}", ""


def step_marks(steps: list[Step]) -> tuple[list[tuple[float, str]], float | None, float | None]:
    """Timeline marks at each step's start; the start of the first step up and of the last
    step when it goes down (where scale-up and scale-down are measured from)."""
    marks, start = [], 0.0
    up = down = None
    for index, step in enumerate(steps):
        marks.append((start, f"{step.rps:g} RPS"))
        if index and step.rps > steps[index - 1].rps and up is None:
            up = start
        if index == len(steps) - 1 and index and step.rps < steps[index - 1].rps:
            down = start
        start += step.seconds
    return marks, up, down


def run_load(args: argparse.Namespace, service: dict[str, Any], out_dir: Path, *,
             started: float | None = None) -> dict[str, Any] | None:
    """Load the DjangoService through its Service with the live view, then write the PNG and
    the summary (`watch_load`); None when the load was skipped (and why is printed)."""
    from kubernetes.client.exceptions import ApiException

    from djangoscale_dev import load
    from djangoscale_dev.live import ClusterSampler, kubeconfig_reader, pg_connections_in_use

    namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
    read = kubeconfig_reader(os.environ.get("KUBECONFIG"))
    try:
        url, why_not = load_url(read, namespace, name, args.load_path)
    except ApiException as error:
        url, why_not = None, f"load skipped: cannot read the nodes or the Service: {error.reason}"
    if url is None:
        print(why_not)
        return None
    try:
        load.check_target(url, allow_remote=False)
        settings = load.LoadSettings(url, load.plan(load.parse_rps(args.rps), args.step_seconds))
    except load.LoadError as error:
        print(f"load skipped: {error}")
        return None
    wait_for_hpa_metrics(read, namespace, name)
    secret_name = (service.get("spec", {}).get("database") or {}).get("secretName")
    secret = read(f"/api/v1/namespaces/{namespace}/secrets/{secret_name}") if secret_name else None
    sampler = ClusterSampler(read, namespace, name,
                             pg_connections_in_use(secret) if secret else None)
    print(f"load: {args.rps} RPS, {args.step_seconds:g} s a step, against {url}")
    return watch_load(settings, sampler, out_dir, settle_seconds=args.settle_seconds,
                      target_per_pod=_target(service), started=started)


def hpa_reads_metrics(read: Reader, namespace: str, name: str) -> bool:
    """The HPA computed replicas from its metric (ScalingActive)."""
    hpa = read(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}")
    return any(c.get("type") == "ScalingActive" and c.get("status") == "True"
               for c in ((hpa or {}).get("status") or {}).get("conditions") or [])


def wait_for_hpa_metrics(read: Reader, namespace: str, name: str) -> None:
    """Before the load, until the HPA reads the pods' RPS (bounded: the view shows why not)."""
    deadline = time.monotonic() + HPA_METRICS_WAIT_SECONDS
    if not hpa_reads_metrics(read, namespace, name):
        print("waiting for the HPA to read the pods' RPS...")
    while not hpa_reads_metrics(read, namespace, name) and time.monotonic() < deadline:
        time.sleep(1)


def watch_load(settings: LoadSettings, sampler: ClusterSampler, out_dir: Path, *,
               settle_seconds: float, target_per_pod: float | None,
               started: float | None = None) -> dict[str, Any]:
    """Run the load with the live view (the generator's counters and `sampler`'s cluster
    figures, once a second), watch the scale-down after it for up to `settle_seconds`, then
    print the per-step table and write the timeline (CSV and PNG) and its summary
    (load-summary.json: every request counted, the scale events) into `out_dir`.

    `started`: when `djangoscale dev` started (monotonic), so the summary also says how long
    after the command the first scale-up came. Returns the summary (`png`: None when nothing
    was recorded). KeyboardInterrupt still writes the PNG of what ran, then propagates."""
    from rich.console import Console

    from djangoscale_dev import load, timeline
    from djangoscale_dev.live import LiveView, Snapshot, load_snapshot, step_table

    recorder = load.Recorder(settings.steps)
    rows: list[dict[str, float | None]] = []
    load_started = time.monotonic()
    interrupted = False
    try:
        with LiveView() as view:
            async def every_second(elapsed: float) -> ClusterSnapshot:
                cluster = await asyncio.to_thread(sampler.sample)
                snapshot = Snapshot(load=load_snapshot(recorder, elapsed, settings.url),
                                    cluster=cluster)
                rows.append(timeline.row(snapshot, elapsed))
                view.show(snapshot)
                return cluster

            async def load_then_settle() -> None:
                elapsed = await load.run(settings, recorder, every_second)
                # Keep watching after the last step until the HPA is back at its minimum
                # (bounded), so the timeline shows the scale-down too.
                settling = time.monotonic()
                while time.monotonic() - settling < settle_seconds:
                    await asyncio.sleep(SAMPLE_SECONDS)
                    cluster = await every_second(elapsed + time.monotonic() - settling)
                    if cluster.desired is not None and cluster.desired <= (
                            cluster.min_replicas or 1):
                        break

            asyncio.run(load_then_settle())
    except KeyboardInterrupt:
        interrupted = True
    Console().print(step_table(recorder))
    print(load.closing_line(recorder.total(), time.monotonic() - load_started))
    out_dir.mkdir(parents=True, exist_ok=True)
    marks, up, down = step_marks(settings.steps)
    load_end = sum(step.seconds for step in settings.steps)
    summary: dict[str, Any] = {
        "url": settings.url, "rps": [step.rps for step in settings.steps],
        "step_seconds": [step.seconds for step in settings.steps],
        "interrupted": interrupted, "requests": recorder.total().summary(),
        "steps": [tally.summary() for tally in recorder.by_step],
        **timeline.scale_events(timeline.columns_of(rows), up_after=up, load_end=load_end),
        "load_started_after_command": (None if started is None
                                       else round(load_started - started, 1)),
        "png": None,
    }
    if started is not None and summary["first_scale_up"] is not None:
        summary["first_scale_up_after_command"] = round(
            load_started - started + summary["first_scale_up"], 1)
        print(f"first scale-up {summary['scale_up_delay']:.1f} s after the step up, "
              f"{summary['first_scale_up_after_command']:.0f} s after the command started")
    png = None
    if rows:
        timeline.write_csv(rows, out_dir / "load-timeline.csv")
        profile = ",".join(f"{step.rps:g}" for step in settings.steps)
        png = timeline.plot_timeline(
            timeline.columns_of(rows), out_dir / "load-timeline.png",
            f"{sampler.namespace}/{sampler.name} under {profile} RPS "
            f"({settings.steps[0].seconds:g} s steps)",
            marks=marks, load_window=(0.0, load_end),
            target_per_pod=target_per_pod, scale_up_after=up, scale_down_after=down)
        print(f"timeline: {png}")
        summary["png"] = str(png)
    else:
        print("timeline: nothing recorded", file=sys.stderr)
    (out_dir / "load-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _target(service: dict[str, Any]) -> float | None:
    value = ((service.get("spec") or {}).get("autoscaling") or {}).get("targetRPSPerPod")
    return float(value) if value is not None else None
