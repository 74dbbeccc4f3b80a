"""`autoscaling.metric: rps | concurrency | queueTime` on the real node: real pods of the sample
app image that the operator wrote, a real HPA, load through each Service's ClusterIP.

Two scenarios, each with three DjangoServices side by side (one per metric, same pods, same
load) so one node session covers all three:

- a view that slows from 50 to 200 ms at a constant rate: requests per second stay where they
  were, so `rps` holds its pods while requests wait longer for a thread; `concurrency` and
  `queueTime` scale and bring their value back under the target;
- a load step at a constant 200 ms: all three scale.

The slow-view switch is the sample app's `/sleep/?s=` view: the load's URL changes at the
switch, so every pod serves the slower view at once. Each request opens its own connection:
kube-proxy picks a pod per connection, and kept-alive connections would stay on the pods that
existed when they were opened, leaving pods added under load idle.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from djangoscale_dev import load
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.dev_real import RealNodeStack, on_real_node
from djangoscale_dev.load import LoadSettings, Recorder, Step
from tests.e2e.helpers import API
from tests.fixtures.polling import wait_for

pytestmark = pytest.mark.timeout(1800)

NAMESPACE = "default"
SECRET = "shop-db"
METRICS = ("rps", "concurrency", "queueTime")
MIN_REPLICAS, MAX_REPLICAS = 2, 8
# Each pod runs cherrypy with 3 threads: it takes 60 RPS of the 50 ms view, 15 of the 200 ms
# one and 30 of the 100 ms one. The rates stay low: every pod, the operator, the control plane
# and the load share 2 cores. (With 2 threads, kube-proxy's random pick of a pod and the
# view's time stretched by the busy cores, the p95 wait stayed at 100-140 ms on 8 pods.)
THREADS = 3
# Short windows so a scenario takes minutes (production: 60 s and 6 s).
STABLE_WINDOW, PANIC_WINDOW = 20, 4
# Longer than a scenario: the HPA never takes a pod away while the test watches a value settle.
SCALE_DOWN_STABILIZATION = 300
TARGET_CONCURRENCY, TARGET_QUEUE_MS = 2, 100
# The HPA leaves replicas alone within 10 % of the target.
HPA_TOLERANCE = 0.1
BEFORE_CHANGE = 30.0  # one stable window and more at the first rate or view

# The slowdown: 12 RPS a pod on 2 pods, under the RPS target whatever the view costs; 80 % of
# what 2 pods take once the view takes 200 ms, so requests wait for a thread.
SLOW_RATE, FAST_VIEW, SLOW_VIEW = 24.0, 0.05, 0.2
SLOW_TARGET_RPS = 20
SLOW_PHASE = 120.0  # how long RPS is watched not scaling, and the others settling
# The step: 4 then 13 RPS a pod of the 200 ms view on 2 pods (87 % of what 3 threads take), so
# that requests wait for a thread. At 2/3 (20 RPS a pod of a 100 ms view) the p95 wait settled
# at 54-73 ms, under the 100 ms target, and queueTime rightly kept 2 pods; the slower view
# makes the waits longer at fewer requests (less CPU on the shared cores than more of them).
STEP_FROM, STEP_TO, STEP_VIEW = 8.0, 26.0, 0.2
STEP_TARGET_RPS = 8  # well under what a pod serves: an overloaded pod serves no more
STEP_PHASE = 45.0
SETTLED_SECONDS = 10.0  # the end of the slow phase over which "back under target" is read
SAMPLE_EVERY = 0.5


def service_name(scenario: str, metric: str) -> str:
    return f"{scenario}-{metric.lower()}"


def djangoservice(name: str, metric: str, target_rps: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "DjangoService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "image": "replaced by on_real_node",
            "wsgiApp": "sampleproject.wsgi:application",
            "server": {"type": "cherrypy", "threads": THREADS, "maxThreads": THREADS},
            "replicas": {"min": MIN_REPLICAS, "max": MAX_REPLICAS},
            "autoscaling": {
                "metric": metric,
                "targetRPSPerPod": target_rps,
                "targetConcurrency": TARGET_CONCURRENCY,
                "targetQueueTimeMilliseconds": TARGET_QUEUE_MS,
                "stableWindowSeconds": STABLE_WINDOW,
                "panicWindowSeconds": PANIC_WINDOW,
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "maxPercentPerPeriod": 1000,
                                "maxPodsPerPeriod": 10, "periodSeconds": 5},
                    "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION},
                },
            },
            # The pods' /readyz asks the database; the /sleep/ view never does. The least
            # budget pgbouncer takes for MAX_REPLICAS (2 x (8 + 1 surge) + 3 reserved).
            "database": {"secretName": SECRET, "maxConnections": 21},
            "pgbouncer": {"enabled": True, "poolMode": "transaction"},
            "migrations": {"enabled": False},
        },
    }


def secret() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET, "namespace": NAMESPACE}, "stringData": {}}


def djangoservice_path(name: str) -> str:
    return f"/apis/{API}/namespaces/{NAMESPACE}/djangoservices/{name}"


def hpa(api: ApiClient, name: str) -> dict[str, Any]:
    return api.get(f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/{name}")


def hpa_desired(api: ApiClient, name: str) -> int:
    return int((hpa(api, name).get("status") or {}).get("desiredReplicas") or 0)


def condition(body: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True"
               for c in (body.get("status") or {}).get("conditions") or [])


def scaling_value(api: ApiClient, name: str) -> float | None:
    """status.scaling.value as a number (queue time in ms)."""
    status = api.get(djangoservice_path(name)).get("status") or {}
    value = (status.get("scaling") or {}).get("value")
    return None if value is None else float(str(value).removesuffix("ms"))


def service_url(api: ApiClient, name: str, view_seconds: float) -> str:
    spec = api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")["spec"]
    port = next(p["port"] for p in spec["ports"] if p["name"] == "http")
    return f"http://{spec['clusterIP']}:{port}/sleep/?s={view_seconds}"



class LoadThread(threading.Thread):
    """`djangoscale load`'s open-loop generator at one URL in a thread of its own."""

    def __init__(self, url: str, step: Step) -> None:
        super().__init__(daemon=True)
        self.settings = LoadSettings(url, [step], keep_alive=False)
        self.recorder = Recorder([step])

    def run(self) -> None:
        asyncio.run(load.run(self.settings, self.recorder))


@dataclass
class Samples:
    """HPA desired replicas and status.scaling.value of each service every half second, from
    the moment the load starts, on a thread of its own."""

    api: ApiClient
    names: dict[str, str]  # metric -> DjangoService
    started: float = field(default_factory=time.monotonic)
    rows: dict[str, list[tuple[float, int, float | None]]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rows = {metric: [] for metric in self.names}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for metric, name in self.names.items():
                try:
                    row = (time.monotonic() - self.started, hpa_desired(self.api, name),
                           scaling_value(self.api, name))
                except (ApiError, OSError, ValueError):
                    continue
                self.rows[metric].append(row)
            self.stopping.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def most(self, metric: str, since: float, until: float = float("inf")) -> int:
        return max((d for t, d, _ in self.rows[metric] if since <= t < until), default=0)

    def first_up(self, metric: str, since: float) -> float | None:
        """Seconds after `since` at which the HPA first asked for more than MIN_REPLICAS."""
        return next((t - since for t, d, _ in self.rows[metric]
                     if t >= since and d > MIN_REPLICAS), None)

    def first_under(self, metric: str, since: float, target: float) -> float | None:
        return next((t - since for t, _, v in self.rows[metric]
                     if t >= since and v is not None and v <= target), None)

    def value_before(self, metric: str, until: float) -> float | None:
        return next((v for t, _, v in reversed(self.rows[metric]) if t < until), None)

    def values(self, metric: str, since: float) -> list[float]:
        return [v for t, _, v in self.rows[metric] if t >= since and v is not None]

    def write(self, directory: Path, scenario: str) -> None:
        """One CSV per metric, as bench/plot_metric_runs.py reads them."""
        for metric, rows in self.rows.items():
            lines = ["seconds,desired_replicas,value"] + [
                f"{t:.1f},{d},{'' if v is None else v}" for t, d, v in rows]
            (directory / f"{scenario}-{metric}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def scenario_services(real_node_stack: RealNodeStack) -> Iterator[tuple[ApiClient, list[str]]]:
    """Applies the DjangoServices a test lists (`apply`); deletes them when it ends and waits
    for their pods to go, so the next scenario starts on a quiet node."""
    client = real_node_stack.cluster.client()
    assert real_node_stack.database is not None
    (ready_secret,) = on_real_node([secret()], real_node_stack.database)
    client.apply(f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}", ready_secret)
    applied: list[str] = []
    yield client, applied
    for name in applied:
        client.delete(djangoservice_path(name))

    def pods_gone() -> bool:
        pods = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
        return not any(p["metadata"].get("labels", {}).get("app.kubernetes.io/instance")
                       in applied for p in pods)

    wait_for("the scenario's pods gone", pods_gone, timeout=180)


def apply_and_wait(stack: RealNodeStack, api: ApiClient, applied: list[str],
                   bodies: list[dict[str, Any]]) -> None:
    assert stack.database is not None
    for body in on_real_node(bodies, stack.database):
        name = body["metadata"]["name"]
        api.apply(djangoservice_path(name), body)
        applied.append(name)
    stack.wait_for_operator()
    for name in applied:
        wait_for(f"{name} Ready", lambda n=name: condition(api.get(djangoservice_path(n)),
                                                            "Ready"), timeout=300)
        wait_for(f"the HPA of {name} reading its metric",
                 lambda n=name: condition(hpa(api, n), "ScalingActive"), timeout=180)


def run_scenario(stack: RealNodeStack, services: tuple[ApiClient, list[str]], scenario: str,
                 target_rps: int, first: tuple[float, float], then: tuple[float, float, float],
                 directory: Path) -> tuple[Samples, dict[str, LoadThread], dict[str, LoadThread]]:
    """One DjangoService per metric, each loaded at `first` (rate, view seconds) for
    BEFORE_CHANGE s, then at `then` (rate, view seconds, for how long), sampled from the start
    to the end and written to `directory`; returns the samples and each phase's load by
    metric."""
    api, applied = services
    names = {metric: service_name(scenario, metric) for metric in METRICS}
    apply_and_wait(stack, api, applied, [djangoservice(names[m], m, target_rps) for m in METRICS])
    (rate, view), (next_rate, next_view, seconds) = first, then
    before = {m: LoadThread(service_url(api, names[m], view), Step(rate, BEFORE_CHANGE))
              for m in names}
    after = {m: LoadThread(service_url(api, names[m], next_view), Step(next_rate, seconds))
             for m in names}
    samples = Samples(api, names)
    for thread in before.values():
        thread.start()
    time.sleep(BEFORE_CHANGE - (time.monotonic() - samples.started))
    # The second phase's load takes over as the first one's schedule ends (its last answers
    # may still be on the way).
    for thread in after.values():
        thread.start()
    for thread in (*before.values(), *after.values()):
        thread.join(seconds + 60)
    samples.stop()
    samples.write(directory, scenario)
    return samples, before, after


def rounded(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}"


def target_of(metric: str) -> float:
    return {"concurrency": TARGET_CONCURRENCY, "queueTime": TARGET_QUEUE_MS}[metric]


def test_a_view_that_slows_down_scales_on_concurrency_and_queue_time_not_rps(
    real_node_stack: RealNodeStack, scenario_services: tuple[ApiClient, list[str]], tmp_path: Path,
) -> None:
    samples, fast, slow = run_scenario(
        real_node_stack, scenario_services, "slowdown", SLOW_TARGET_RPS,
        (SLOW_RATE, FAST_VIEW), (SLOW_RATE, SLOW_VIEW, SLOW_PHASE), tmp_path)
    end = samples.rows["rps"][-1][0]
    lines, settled = [], {}
    for metric in METRICS:
        total = slow[metric].recorder.total().summary()
        line = (f"{metric}: 50 ms value {samples.value_before(metric, BEFORE_CHANGE)}, replicas <= "
                f"{samples.most(metric, 0, BEFORE_CHANGE)}; after the slowdown up after "
                f"{rounded(samples.first_up(metric, BEFORE_CHANGE))} s, peak "
                f"{samples.most(metric, BEFORE_CHANGE)}")
        if metric != "rps":
            target = target_of(metric)
            settled[metric] = statistics.median(
                samples.values(metric, end - SETTLED_SECONDS) or [float("inf")])
            up = samples.first_up(metric, BEFORE_CHANGE)
            under = None if up is None else samples.first_under(
                metric, BEFORE_CHANGE + up, target)
            line += (f", under target {rounded(under)} s after the scale-up, last "
                     f"{SETTLED_SECONDS:.0f} s median {settled[metric]} (target {target})")
        lines.append(line + f"; slow-view load {total['ok']} ok / {total['failed']} failed "
                     f"{total['errors']}, p95 {total['p95']} ms, fast-view load "
                     f"{fast[metric].recorder.total().summary()}")
    print("\nslowdown on the real node, samples in", tmp_path, *lines, sep="\n")
    for metric in METRICS:
        assert samples.most(metric, 0, BEFORE_CHANGE) == MIN_REPLICAS, (
            f"{metric}: nothing should scale while the view takes 50 ms")
    assert samples.most("rps", BEFORE_CHANGE) == MIN_REPLICAS, (
        "requests per second did not change: rps must not scale")
    for metric in ("concurrency", "queueTime"):
        assert samples.most(metric, BEFORE_CHANGE) > MIN_REPLICAS, f"{metric} did not scale"
        assert settled[metric] <= target_of(metric) * (1 + HPA_TOLERANCE), (
            f"{metric} not back under its target at the end: {settled[metric]}")


def test_a_load_step_at_constant_latency_scales_every_metric(
    real_node_stack: RealNodeStack, scenario_services: tuple[ApiClient, list[str]], tmp_path: Path,
) -> None:
    samples, _, high = run_scenario(
        real_node_stack, scenario_services, "step", STEP_TARGET_RPS,
        (STEP_FROM, STEP_VIEW), (STEP_TO, STEP_VIEW, STEP_PHASE), tmp_path)
    lines = [f"{metric}: step {STEP_FROM:.0f} -> {STEP_TO:.0f} RPS at {STEP_VIEW * 1000:.0f} ms, "
             f"replicas <= "
             f"{samples.most(metric, 0, BEFORE_CHANGE)} before, up after "
             f"{rounded(samples.first_up(metric, BEFORE_CHANGE))} s, peak "
             f"{samples.most(metric, BEFORE_CHANGE)}; load after the step "
             f"{high[metric].recorder.total().summary()}" for metric in METRICS]
    print("\nload step on the real node, samples in", tmp_path, *lines, sep="\n")
    for metric in METRICS:
        assert samples.most(metric, 0, BEFORE_CHANGE) == MIN_REPLICAS, metric
        assert samples.most(metric, BEFORE_CHANGE) > MIN_REPLICAS, f"{metric} did not scale"
