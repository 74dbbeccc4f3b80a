"""Autoscaling end to end (RPS, concurrency, queue time): real HPA controller, real
aggregation layer, real launcher.

The operator serves `custom.metrics.k8s.io` on the host; the APIService reaches it through the
local cluster's route. KWOK pods get loopback IPs, and a harness runs one real
`djangoscale serve` (the sample project, cherrypy) bound to each Running pod's IP on the
DjangoService's http and metrics ports, started and stopped as pods come and go. A bounded
open-loop load generator spreads requests over the served pods, as a Service would.

Windows are shortened (stable 20 s, panic 4 s, scrape 1 s, HPA sync 2 s, scale-down
stabilization 10 s) so a run takes minutes; the figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from djangoscale.contract import RPS_METRIC
from djangoscale.spec import GROUP, VERSION, crd
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.cluster.pki import PkiPaths
from djangoscale_dev.registration import (
    register_metrics_apiservice,
    unregister_metrics_apiservice,
)
from tests.e2e.helpers import HPA_SYNC_PERIOD, OperatorProcess, start_operator
from tests.fixtures.launcher import SAMPLE_WSGI, SAMPLEAPP, launcher_env
from tests.fixtures.polling import wait_for
from tests.fixtures.services import free_port
from tests.tools.chart_install import operator_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

API = f"{GROUP}/{VERSION}"
TARGET_RPS = 20
STABLE_WINDOW, PANIC_WINDOW, SCRAPE_INTERVAL = 20, 4, 1
SCALE_DOWN_STABILIZATION = 10
TIMELINE_INTERVAL = 0.5  # Timeline samples the HPA this often
# Any one step below may run this late on a 2-core machine shared by the load generator, up to
# 10 serve processes, the control plane and the operator.
SCHEDULING_SLACK = 6.0
LOAD_RATE, LOAD_SECONDS = 100.0, 30.0  # 5x what 2 pods take at TARGET_RPS each
# Bounds of the load step, derived (seconds after the step starts or stops):
# - first scale-up: the panic window's per-pod value passes the target within one
#   PANIC_WINDOW of the step (50 RPS a pod against 20), the next scrape publishes it
#   (SCRAPE_INTERVAL), the HPA's next sync reads it (HPA_SYNC_PERIOD), the next Timeline
#   sample sees it (TIMELINE_INTERVAL): 4 + 1 + 2 + 0.5 + slack = 13.5 s.
UP_BOUND = PANIC_WINDOW + SCRAPE_INTERVAL + HPA_SYNC_PERIOD + TIMELINE_INTERVAL + SCHEDULING_SLACK
# - >= 4 replicas, the proof of the burst path: the stable window alone, whose per-pod value
#   after t s of LOAD_RATE / 2 per pod is (LOAD_RATE / 2) t / STABLE_WINDOW, asks for more than
#   3 pods only once 2 pods x that > 3 x TARGET_RPS, i.e. t > 3 TARGET_RPS STABLE_WINDOW /
#   LOAD_RATE = 12 s (and later still, after a scrape and a sync). Reaching 4 by then took the
#   panic window.
STABLE_ONLY_AT_4 = 3 * TARGET_RPS * STABLE_WINDOW / LOAD_RATE
# - back to 2: never before the HPA's scale-down stabilization window (it keeps the highest
#   recommendation of that window); at the latest, once the stable window holds no traffic
#   (STABLE_WINDOW), a scrape publishes it, the stabilization window passes, the HPA syncs
#   and the Timeline samples: 20 + 1 + 10 + 2 + 0.5 + slack = 39.5 s.
DOWN_BOUND = (STABLE_WINDOW + SCRAPE_INTERVAL + SCALE_DOWN_STABILIZATION + HPA_SYNC_PERIOD
              + TIMELINE_INTERVAL + SCHEDULING_SLACK)
# Pod IPs are the same in every local cluster (127.1.<node>.<n>): random ports keep two test
# sessions on one machine from colliding.
HTTP_PORT = random.randrange(20000, 30000)
METRICS_PORT = HTTP_PORT + 10000


# -- fixtures: CRD, APIService, operator ------------------------------------------------------


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> ApiClient:
    client = cluster.client()
    client.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                 f"{crd()['metadata']['name']}", crd())

    def established() -> bool:
        live = client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                          f"{crd()['metadata']['name']}")
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (live.get("status") or {}).get("conditions") or [])

    wait_for("the CRD to be established", established)
    return client


@pytest.fixture(scope="module")
def metrics_api(cluster: LocalCluster, api: ApiClient) -> Iterator[tuple[int, Path, Path]]:
    port = free_port()
    cert, key = register_metrics_apiservice(api, cluster.dir, port)
    yield port, cert, key
    with contextlib.suppress(ApiError):
        unregister_metrics_apiservice(api)


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, api: ApiClient, metrics_api: tuple[int, Path, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    port, cert, key = metrics_api
    directory = tmp_path_factory.mktemp("operator")
    log = directory / "operator.log"
    # Exactly the Helm chart's RBAC: its ServiceAccount's token.
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, directory / "sa" / "kubeconfig")
    with start_operator(
        kubeconfig, log, "--metrics-api-port", str(port), "--metrics-api-cert-file", str(cert),
        "--metrics-api-key-file", str(key), "--scrape-interval", str(SCRAPE_INTERVAL),
        resync_seconds=5,
    ) as running:

        def available() -> bool:
            if running.process.poll() is not None:
                raise AssertionError(f"operator exited:\n{log.read_text()[-3000:]}")
            live = api.get(
                "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io")
            return any(c["type"] == "Available" and c["status"] == "True"
                       for c in (live.get("status") or {}).get("conditions") or [])

        wait_for("the metrics APIService to be Available", available, timeout=60)
        yield running
    text = log.read_text(errors="replace")
    # The chart's RBAC was enough: pods watched, the request-header ConfigMap read, status
    # written.
    assert "Forbidden" not in text and " 403" not in text, text[-3000:]
    assert "serving custom.metrics.k8s.io/v1beta2" in text


@pytest.fixture
def namespace(api: ApiClient) -> Iterator[str]:
    name = f"as-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": name}})
    yield name
    # The DjangoService first (kopf releases its finalizer), then the namespace: a reconcile
    # racing a terminating namespace gets 403 Forbidden, which would read as missing RBAC.
    path = f"/apis/{API}/namespaces/{name}/djangoservices/shop"
    with contextlib.suppress(ApiError):
        api.delete(path)

    def gone() -> bool:
        try:
            api.get(path)
        except ApiError as error:
            return error.status == 404
        return False

    with contextlib.suppress(AssertionError):
        wait_for("the DjangoService to be deleted", gone, timeout=30)
    with contextlib.suppress(ApiError):
        api.delete(f"/api/v1/namespaces/{name}")


def djangoservice(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop:1.4.2",
            "wsgiApp": SAMPLE_WSGI,
            "port": HTTP_PORT,
            "metricsPort": METRICS_PORT,
            "server": {"type": "cherrypy", "threads": 8, "maxThreads": 8},
            "replicas": {"min": 2, "max": 10},
            "autoscaling": {
                "targetRPSPerPod": TARGET_RPS,
                "stableWindowSeconds": STABLE_WINDOW,
                "panicWindowSeconds": PANIC_WINDOW,
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 0, "maxPercentPerPeriod": 1000,
                                "maxPodsPerPeriod": 10, "periodSeconds": 5},
                    "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION,
                                  "maxPercentPerPeriod": 100, "maxPodsPerPeriod": 10,
                                  "periodSeconds": 5},
                },
            },
        },
    }


# -- the pods' real processes ------------------------------------------------------------------


class PodHarness:
    """One real `djangoscale serve` per Running pod, bound to the pod's IP."""

    def __init__(self, api: ApiClient, namespace: str, log_dir: Path, threads: int = 8,
                 env_for: Callable[[str], dict[str, str]] | None = None) -> None:
        self.api, self.namespace, self.log_dir = api, namespace, log_dir
        self.threads = threads  # the pods' cherrypy threads (as the DjangoService says)
        # The launcher's environment for a pod, by name (the pod's pgbouncer, if it has one).
        self.env_for = env_for or (lambda name: launcher_env({}))
        self.processes: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self.healthy: set[str] = set()
        self.frozen = False  # when True, dead processes are not restarted (metrics outage)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodHarness:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        with self.lock:
            for name in list(self.processes):
                self._stop(name)

    def endpoints(self) -> list[str]:
        with self.lock:
            return [ip for name, (ip, _) in self.processes.items() if name in self.healthy]

    def kill_all(self) -> None:
        """A metrics outage: every serve process dies and none comes back."""
        with self.lock:
            self.frozen = True
            for _, process in self.processes.values():
                process.kill()
            self.healthy.clear()

    def _pods(self) -> dict[str, str]:
        selector = quote("app.kubernetes.io/instance=shop,app.kubernetes.io/component=web")
        items = self.api.get(f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}")
        return {
            pod["metadata"]["name"]: pod["status"]["podIP"]
            for pod in items["items"]
            if pod.get("status", {}).get("phase") == "Running" and pod["status"].get("podIP")
            and not pod["metadata"].get("deletionTimestamp")
        }

    def _start(self, name: str, ip: str) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        argv = [sys.executable, "-m", "djangoscale.cli", "serve", SAMPLE_WSGI,
                "--server", "cherrypy", "--workers", "1", "--threads", str(self.threads),
                "--max-threads", str(self.threads),
                "--bind", f"{ip}:{HTTP_PORT}", "--metrics-bind", f"{ip}:{METRICS_PORT}"]
        process = subprocess.Popen(argv, cwd=SAMPLEAPP, env=self.env_for(name), stdout=log,
                                   stderr=subprocess.STDOUT)
        log.close()
        self.processes[name] = (ip, process)

    def _stop(self, name: str) -> None:
        _, process = self.processes.pop(name)
        self.healthy.discard(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                pods = self._pods()
            except (ApiError, OSError):
                pods = None
            if pods is not None:
                with self.lock:
                    for name in [n for n in self.processes if n not in pods]:
                        self._stop(name)
                    if not self.frozen:
                        for name, ip in pods.items():
                            if name not in self.processes:
                                self._start(name, ip)
                    pending = [(n, ip) for n, (ip, p) in self.processes.items()
                               if n not in self.healthy and p.poll() is None]
                for name, ip in pending:
                    # The kubelet's readiness probe: /readyz on the http port. (The metrics
                    # port answers as soon as the launcher starts, before the WSGI server
                    # listens: load sent then was refused.)
                    if _answers(ip, HTTP_PORT, "/readyz"):
                        with self.lock:
                            self.healthy.add(name)
            self.stopping.wait(0.5)


def _answers(ip: str, port: int, path: str) -> bool:
    import http.client

    connection = http.client.HTTPConnection(ip, port, timeout=0.5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# -- load and observation --------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # not sent: no endpoint, or too many in flight
    errors: dict[str, int] = field(default_factory=dict)  # failures by cause
    seconds: list[float] = field(default_factory=list, repr=False)  # each answered request's

    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0

    def fail(self, cause: str) -> None:
        self.failed += 1
        self.errors[cause] = self.errors.get(cause, 0) + 1


def run_load(rate: float, seconds: float, endpoints: Callable[[], list[str]],
             max_in_flight: int = 200, stop: threading.Event | None = None,
             path: Callable[[], str] = lambda: "/hello/") -> LoadResult:
    """Open-loop GETs of `path()` (/hello/) at `rate` per second for `seconds` (or until
    `stop`), spread over endpoints."""
    result = LoadResult()

    async def hit(session: aiohttp.ClientSession, ip: str) -> None:
        started = time.monotonic()
        try:
            async with session.get(f"http://{ip}:{HTTP_PORT}{path()}") as response:
                await response.read()
                if response.status == 200:
                    result.ok += 1
                    result.seconds.append(time.monotonic() - started)
                else:
                    result.fail(f"HTTP {response.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            result.fail(type(error).__name__)

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        connector = aiohttp.TCPConnector(limit=max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            started, n = time.monotonic(), 0
            while (elapsed := time.monotonic() - started) < seconds and not (
                    stop is not None and stop.is_set()):
                targets = endpoints()
                while n < int(elapsed * rate):
                    n += 1
                    if not targets or len(tasks) >= max_in_flight:
                        result.skipped += 1
                        continue
                    task = asyncio.create_task(hit(session, targets[n % len(targets)]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    result.sent += 1
                await asyncio.sleep(0.01)
            if tasks:
                await asyncio.wait(tasks, timeout=6)

    asyncio.run(main())
    return result


@dataclass
class Sampler:
    """Reads the cluster every half second on a thread of its own until stopped."""

    api: ApiClient
    namespace: str
    started: float = field(default_factory=time.monotonic)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(ApiError, OSError, ValueError):
                self.sample()
            self.stopping.wait(TIMELINE_INTERVAL)

    def sample(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


@dataclass
class Timeline(Sampler):
    """HPA desired replicas and reported RPS, sampled every half second."""

    # (time, HPA desired replicas, status.rps.stable, status.rps.panic, status.desiredReplicas)
    rows: list[tuple[float, int, float, float, int]] = field(default_factory=list)

    def sample(self) -> None:
        desired = hpa_desired(self.api, self.namespace)
        observed = status(self.api, self.namespace)
        rps = observed.get("rps", {})
        self.rows.append((time.monotonic(), desired, float(rps.get("stable", 0)),
                          float(rps.get("panic", 0)),
                          int(observed.get("desiredReplicas") or 0)))

    def first(self, after: float, test: Callable[[tuple[float, int, float, float, int]], bool]
              ) -> float | None:
        return next((row[0] - after for row in self.rows if row[0] >= after and test(row)),
                    None)

    def csv(self) -> str:
        lines = ["seconds,desired_replicas,rps_stable_per_pod,rps_panic_per_pod,status_desired"]
        lines += [f"{t - self.started:.1f},{d},{s},{p},{sd}" for t, d, s, p, sd in self.rows]
        return "\n".join(lines) + "\n"


def hpa_desired(api: ApiClient, namespace: str) -> int:
    hpa = api.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/shop")
    return int(hpa.get("status", {}).get("desiredReplicas") or 0)


def status(api: ApiClient, namespace: str) -> dict[str, Any]:
    live = api.get(f"/apis/{API}/namespaces/{namespace}/djangoservices/shop")
    return dict(live.get("status") or {})


def metrics_condition(api: ApiClient, namespace: str) -> dict[str, Any]:
    conditions = status(api, namespace).get("conditions", [])
    return next((c for c in conditions if c["type"] == "MetricsAvailable"), {})


def scaling_active(api: ApiClient, namespace: str) -> bool:
    with contextlib.suppress(ApiError):
        hpa = api.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/shop")
        return any(c["type"] == "ScalingActive" and c["status"] == "True"
                   for c in hpa.get("status", {}).get("conditions", []))
    return False


def start_service(api: ApiClient, namespace: str, harness: PodHarness,
                  body: dict[str, Any] | None = None) -> None:
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices",
               body or djangoservice(namespace))
    wait_for("2 pods served", lambda: len(harness.endpoints()) >= 2, timeout=120)
    wait_for("the HPA to read the metric", lambda: scaling_active(api, namespace), timeout=60)


def pod_metrics(api: ApiClient, namespace: str, metric: str = RPS_METRIC) -> dict[str, Any]:
    selector = quote("app.kubernetes.io/instance=shop")
    result: dict[str, Any] = api.get(
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{metric}"
        f"?labelSelector={selector}")
    return result


# -- the tests -------------------------------------------------------------------------------


def readyz(port: int) -> int:
    """The metrics API's readiness, asked as the kubelet asks: HTTPS, no client cert."""
    import http.client

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    finally:
        connection.close()


def test_load_step_scales_up_through_the_burst_path_and_back_down(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path,
    metrics_api: tuple[int, Path, Path],
) -> None:
    with PodHarness(api, namespace, tmp_path) as harness:
        start_service(api, namespace, harness)
        assert readyz(metrics_api[0]) == 200  # a collector runs here
        # Idle for a whole stable window first, so that window holds zero traffic and only
        # the panic window can see the step at once.
        time.sleep(STABLE_WINDOW)
        assert hpa_desired(api, namespace) == 2
        timeline = Timeline(api, namespace)
        rate, seconds = LOAD_RATE, LOAD_SECONDS
        load_started = time.monotonic()
        load = run_load(rate, seconds, harness.endpoints)
        load_stopped = time.monotonic()
        up = timeline.first(load_started, lambda row: row[1] > 2)
        big = timeline.first(load_started, lambda row: row[1] >= 4)
        peak = max(row[1] for row in timeline.rows)
        served_while_loaded = pod_metrics(api, namespace)

        down = wait_for("scale back to 2", lambda: hpa_desired(api, namespace) == 2 and
                        time.monotonic() - load_stopped, timeout=120)
        timeline.stop()
        (tmp_path / "timeline.csv").write_text(timeline.csv())
        print(f"\nload: {load}; first scale-up {up and round(up, 1)} s after the step, "
              f">= 4 replicas after {big and round(big, 1)} s, peak {peak}, back to 2 after "
              f"{down:.1f} s; timeline in {tmp_path}/timeline.csv")

    # Every request of the open loop was sent on schedule and answered: none lost while pods
    # were added.
    assert load.failed == 0 and load.skipped == 0, load
    assert load.ok == load.sent >= 0.99 * rate * seconds, load
    assert up is not None and up <= UP_BOUND, f"no scale-up within {UP_BOUND} s ({up})"
    # The burst path: the stable window alone could not ask for 4 pods this early.
    assert big is not None and big <= STABLE_ONLY_AT_4, f">= 4 replicas only after {big} s"
    assert any(panic >= 2 * stable for _, _, stable, panic, _ in timeline.rows if panic > 0)
    # The DjangoService's status follows the HPA (kubectl get djs shows it).
    assert max(row[4] for row in timeline.rows) >= 4
    assert peak <= 10
    assert len(served_while_loaded["items"]) >= 2
    # Down: not before the scale-down stabilization window, and within a bound.
    assert down >= SCALE_DOWN_STABILIZATION
    assert down <= DOWN_BOUND, f"back to 2 only after {down:.1f} s"


def test_metrics_outage_holds_replicas_and_says_why(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    with PodHarness(api, namespace, tmp_path) as harness:
        start_service(api, namespace, harness)
        stop_load = threading.Event()
        load = threading.Thread(target=run_load, args=(100.0, 180.0, harness.endpoints),
                                kwargs={"stop": stop_load})
        load.start()
        wait_for("a scale-up under load", lambda: hpa_desired(api, namespace) >= 4, timeout=40)
        # Settled, and every pod already serving: a pod that joined just before the outage has
        # no rate yet, its held value is 0, and the HPA would rightly count it as idle.
        before = wait_for("replicas settled and every pod serving",
                          lambda: settled_and_serving(api, namespace), timeout=60, interval=0)
        # The outage, under load: every pod's metrics vanish and none come back.
        harness.kill_all()
        wait_for("MetricsAvailable=False",
                 lambda: metrics_condition(api, namespace).get("reason") == "ScrapeFailed",
                 timeout=20)
        held = pod_values(api, namespace)
        # Longer than the stable window and the scale-down stabilization together: were zeros
        # reported instead of held values, the HPA would be back at 2 by now.
        lowest = before
        hold = STABLE_WINDOW + SCALE_DOWN_STABILIZATION + 10
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            lowest = min(lowest, hpa_desired(api, namespace))
            time.sleep(1)
        condition = metrics_condition(api, namespace)
        after = pod_values(api, namespace)
        stop_load.set()
        load.join()
        print(f"\noutage: replicas {before} before, lowest {lowest} during {hold} s; "
              f"per-pod values {held} -> {after}; condition {condition.get('message')}")

    assert lowest > 2 and lowest >= before - 1, (before, lowest)
    # Every pod still there reports what it did when its metrics vanished, not zero.
    kept = set(held) & set(after)
    assert kept and all(after[pod] == held[pod] for pod in kept), (held, after)
    assert all(value > 0 for value in after.values())
    assert condition["status"] == "False"
    assert "holding" in condition["message"]


def pod_values(api: ApiClient, namespace: str, metric: str = RPS_METRIC) -> dict[str, float]:
    """What the HPA reads, per pod, through the aggregator (quantities in milli-units)."""
    return {item["describedObject"]["name"]: float(item["value"].rstrip("m")) / 1000
            for item in pod_metrics(api, namespace, metric)["items"]}


def settled_and_serving(api: ApiClient, namespace: str) -> int:
    """`settled`'s replicas once every one of them reports a rate above zero, else 0."""
    replicas = settled(api, namespace)
    values = pod_values(api, namespace)
    serving = len(values) >= replicas and all(value > 0 for value in values.values())
    return replicas if replicas and serving else 0


def settled(api: ApiClient, namespace: str, seconds: float = 6.0) -> int:
    """The HPA's desired replicas once unchanged for `seconds`, else 0."""
    first = hpa_desired(api, namespace)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        if hpa_desired(api, namespace) != first:
            return 0
    return first


def test_metrics_api_answers_only_the_front_proxy(
    cluster: LocalCluster, api: ApiClient, operator: OperatorProcess,
    metrics_api: tuple[int, Path, Path],
) -> None:
    port = metrics_api[0]
    pki = PkiPaths(cluster.dir / "pki")
    path = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/{RPS_METRIC}"

    def get_with(cert: str | None) -> int:
        import http.client

        context = ssl.create_default_context(cafile=str(pki.ca))
        context.check_hostname = False
        if cert is not None:
            context.load_cert_chain(str(pki.cert(cert)), str(pki.key(cert)))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()

    assert get_with("front-proxy-client") == 200
    assert get_with(None) == 403  # no cert: TLS lets it in (for the kubelet's /readyz), no more
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        get_with("admin")  # a cluster-admin cert, but not from the front-proxy CA
    # Through the aggregator, the admin (authorized by RBAC) gets the list.
    listed = api.get(path)
    assert listed["kind"] == "MetricValueList"


def test_burst_preset_and_tolerance_reach_the_hpa(
    api: ApiClient, operator: subprocess.Popen[bytes], namespace: str,
) -> None:
    body = djangoservice(namespace)
    body["spec"]["autoscaling"]["behavior"] = {"preset": "burst",
                                               "scaleUp": {"tolerance": 0.05},
                                               "scaleDown": {"tolerance": 0.2}}
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", body)
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/shop"

    def hpa() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = api.get(path)
        except ApiError:
            return None
        return found

    live = wait_for("the HPA", hpa, timeout=30)
    behavior = live["spec"]["behavior"]
    # Kept by the API server: HPAConfigurableTolerance is on in this control plane (beta, on by
    # default in 1.35); with the gate off the field would be dropped.
    assert behavior["scaleUp"]["tolerance"] == "50m", behavior
    assert behavior["scaleDown"]["tolerance"] == "200m", behavior
    assert {(p["type"], p["value"]) for p in behavior["scaleUp"]["policies"]} == {
        ("Percent", 900), ("Pods", 100)}
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["selectPolicy"] == "Max"


# -- concurrency and queue time beside RPS ----------------------------------------------------
# Each pod runs cherrypy with 2 threads, so a pod takes 40 RPS of a 50 ms view but only 10 of
# a 200 ms one. Under 30 RPS a view that slows from 50 to 200 ms leaves requests per second
# where they were (RPS does not scale; the pods are overloaded), while the requests in each pod
# and their wait for a thread rise (concurrency and queue time scale, until the value is back
# under its target). A load step at a constant 100 ms scales all three.

THREADS = 2
RATE = 30.0  # 15 RPS a pod on 2 pods: under the RPS target whatever the view costs
FAST, SLOW = 0.05, 0.2
TARGET_CONCURRENCY, TARGET_QUEUE_MS = 1, 50  # RPS: TARGET_RPS, as above
STEP_TARGET_RPS = 10
TARGETS: dict[str, dict[str, int]] = {
    "rps": {},
    "concurrency": {"targetConcurrency": TARGET_CONCURRENCY},
    "queueTime": {"targetQueueTimeMilliseconds": TARGET_QUEUE_MS},
}
TARGET_OF = {"rps": TARGET_RPS, "concurrency": TARGET_CONCURRENCY, "queueTime": TARGET_QUEUE_MS}
FAST_PHASE = 20.0  # one stable window at 50 ms
SLOW_PHASE = 60.0  # how long RPS is watched not scaling
SCALE_UP_WITHIN = 45.0  # after the slowdown or the step
SETTLE_WITHIN = 120.0  # for the wait (or the concurrency) to be back under target
# The HPA leaves replicas alone within 10 % of the target.
HPA_TOLERANCE = 0.1


def service(namespace: str, metric: str, target_rps: int = TARGET_RPS) -> dict[str, Any]:
    body = djangoservice(namespace)
    body["spec"]["server"] = {"type": "cherrypy", "threads": THREADS, "maxThreads": THREADS}
    body["spec"]["autoscaling"].update({"metric": metric, "targetRPSPerPod": target_rps,
                                        **TARGETS[metric]})
    return body


def scaling_value(api: ApiClient, namespace: str) -> float | None:
    """status.scaling.value as a number (queue time in ms)."""
    value = (status(api, namespace).get("scaling") or {}).get("value")
    return None if value is None else float(str(value).removesuffix("ms"))


@dataclass
class Samples(Sampler):
    """HPA desired replicas and status.scaling.value every half second, written as CSV."""

    rows: list[tuple[float, int, float | None]] = field(default_factory=list)

    def sample(self) -> None:
        self.rows.append((time.monotonic(), hpa_desired(self.api, self.namespace),
                          scaling_value(self.api, self.namespace)))

    def write(self, path: Path) -> None:
        lines = ["seconds,desired_replicas,value"] + [
            f"{t - self.started:.1f},{d},{'' if v is None else v}" for t, d, v in self.rows]
        path.write_text("\n".join(lines) + "\n")

    def most(self, since: float) -> int:
        return max((d for t, d, _ in self.rows if t >= since), default=0)


class PhaseEnd(threading.Event):
    """Set when the load stops or its rate changes (run_load asks `is_set` as it goes)."""

    def __init__(self, stop: threading.Event, rate: list[float]) -> None:
        super().__init__()
        self.stop, self.rate, self.current = stop, rate, rate[0]

    def is_set(self) -> bool:
        return self.stop.is_set() or self.rate[0] != self.current


@contextlib.contextmanager
def loaded(harness: PodHarness, rate: list[float], delay: list[float]):
    """Open-loop load of /sleep/?s=delay[0] at rate[0] per second (both read as they change)
    until the block ends; yields the LoadResults, one per rate."""
    stop = threading.Event()
    results: list[Any] = []

    def run() -> None:
        while not stop.is_set():
            results.append(run_load(rate[0], 3600, harness.endpoints,
                                    stop=PhaseEnd(stop, rate),
                                    path=lambda: f"/sleep/?s={delay[0]}"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield results
    finally:
        stop.set()
        thread.join(15)


@pytest.mark.parametrize("metric", ["rps", "concurrency", "queueTime"])
def test_a_view_that_slows_down_scales_on_concurrency_and_queue_time_not_rps(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path, metric: str,
) -> None:
    with PodHarness(api, namespace, tmp_path, threads=THREADS) as harness:
        start_service(api, namespace, harness, service(namespace, metric))
        samples = Samples(api, namespace)
        delay = [FAST]
        with loaded(harness, [RATE], delay):
            time.sleep(FAST_PHASE)
            fast_most = samples.most(samples.started)
            fast_value = scaling_value(api, namespace)
            delay[0] = SLOW
            slowed = time.monotonic()
            if metric == "rps":
                time.sleep(SLOW_PHASE)
                up = None
            else:
                up = wait_for("a scale-up after the slowdown",
                              lambda: hpa_desired(api, namespace) > 2
                              and time.monotonic() - slowed, timeout=SCALE_UP_WITHIN)
                settled = wait_for(
                    f"{metric} back under its target",
                    lambda: (v := scaling_value(api, namespace)) is not None
                    and v <= TARGET_OF[metric] * (1 + HPA_TOLERANCE) and v,
                    timeout=SETTLE_WITHIN)
            slow_most = samples.most(slowed)
        samples.stop()
        samples.write(tmp_path / f"slowdown-{metric}.csv")
    print(f"\n{metric}: 50 ms value {fast_value}, replicas <= {fast_most}; after the slowdown "
          f"up after {up and round(up, 1)} s, peak {slow_most}"
          + ("" if metric == "rps" else f", back under target at {settled}")
          + f"; samples in {tmp_path}")
    assert fast_most == 2, "nothing should scale while the view takes 50 ms"
    if metric == "rps":
        assert slow_most == 2, "requests per second did not change: RPS must not scale"
    else:
        assert slow_most > 2


@pytest.mark.parametrize("metric", ["rps", "concurrency", "queueTime"])
def test_a_load_step_at_constant_latency_scales_every_metric(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path, metric: str,
) -> None:
    with PodHarness(api, namespace, tmp_path, threads=THREADS) as harness:
        # 2 threads take 20 RPS of a 100 ms view: a pod overloaded serves no more than that,
        # so RPS's target sits under it, as a user's would.
        start_service(api, namespace, harness, service(namespace, metric, STEP_TARGET_RPS))
        samples = Samples(api, namespace)
        rate = [10.0]
        with loaded(harness, rate, [0.1]):
            time.sleep(FAST_PHASE)
            before = samples.most(samples.started)
            rate[0] = 50.0  # 25 RPS a pod of a 100 ms view: past what 2 threads take
            stepped = time.monotonic()
            up = wait_for("a scale-up after the step",
                          lambda: hpa_desired(api, namespace) > 2
                          and time.monotonic() - stepped, timeout=SCALE_UP_WITHIN)
        samples.stop()
        samples.write(tmp_path / f"step-{metric}.csv")
    print(f"\n{metric}: step 10 -> 50 RPS at 100 ms, up after {up:.1f} s")
    assert before == 2


def test_a_full_thread_pool_on_an_idle_cpu_puts_advice_in_status(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    """status.recommendations from what real launchers measure: 2 threads a pod kept full by
    a view that waits (sleeps) 200 ms instead of computing, then idle again."""
    body = service(namespace, "rps", target_rps=100)  # far above the load: nothing scales
    body["spec"]["replicas"] = {"min": 2, "max": 2}
    with PodHarness(api, namespace, tmp_path, threads=THREADS) as harness:
        start_service(api, namespace, harness, body)
        idle = status(api, namespace).get("recommendations")
        # 12 RPS a pod of 200 ms: 2.4 threads' worth, past the 2 each pod has.
        with loaded(harness, [24.0], [0.2]) as loads:
            advice = wait_for("a recommendation in status", lambda: status(
                api, namespace).get("recommendations"), timeout=3 * STABLE_WINDOW)
        cleared = wait_for("the recommendation gone once idle", lambda: not status(
            api, namespace).get("recommendations"), timeout=3 * STABLE_WINDOW)
    print(f"\nadvice under load: {advice}; idle before: {idle!r}; gone after: {cleared}; "
          f"load {loads}")
    assert not idle  # idle pods: nothing to advise
    assert len(advice) == 1 and "raise spec.server.maxThreads" in advice[0], advice
    assert cleared


# -- the database ceiling ------------------------------------------------------------------------
# Real PostgreSQL behind real pgbouncers with the operator's ini, a tiny budget and a view that
# holds a server connection 50 ms: a pool of N server connections takes about 20 x N requests
# per second, and the pods' 8 threads each queue for them beyond that.
#
# pooler: one pgbouncer stands for the pooler's one pod (replicas 1, budget 6: a pool of 2, so
# 40 RPS whatever the app pods); more app pods bring the database nothing, which is where the
# ceiling claims to help. pgbouncer: a sidecar per pod, budget 14 over 6 pods + 1 surge pod, one
# connection each kept while draining: a pool of 1 per pod, so each new pod brings 20 RPS.

CEILING_MAX_CONNECTIONS = {"pooler": 9, "pgbouncer": 17}
CEILING_REPLICAS_MAX = 6
# 1.5x what the two starting pods' pools take (40 RPS in both modes): under it the pools keep
# up on a quiet machine and no client waits.
CEILING_RATE, CEILING_SECONDS = 60.0, 30.0


def ceiling_service(namespace: str, ceiling: bool, mode: str = "pgbouncer") -> dict[str, Any]:
    body = djangoservice(namespace)
    body["spec"]["replicas"] = {"min": 2, "max": CEILING_REPLICAS_MAX}
    body["spec"]["autoscaling"].update({"metric": "concurrency", "targetConcurrency": 4,
                                        "databaseCeiling": ceiling})
    body["spec"]["database"] = {"secretName": "shop-db",
                                "maxConnections": CEILING_MAX_CONNECTIONS[mode]}
    body["spec"]["migrations"] = {"enabled": False}
    if mode == "pooler":
        body["spec"]["pooling"] = {"mode": "pooler",
                                   "pooler": {"replicas": {"min": 1, "max": 1}}}
    return body


def condition(api: ApiClient, namespace: str, kind: str) -> dict[str, Any]:
    return next((c for c in status(api, namespace).get("conditions", [])
                 if c["type"] == kind), {})


def events(api: ApiClient, namespace: str, reason: str) -> list[dict[str, Any]]:
    items = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in items if e.get("reason") == reason]


@dataclass
class CeilingSamples(Sampler):
    """HPA desired replicas, DatabaseSaturated and the pods' pgbouncer figures over time."""

    rows: list[tuple[float, int, str, Any]] = field(default_factory=list)

    def sample(self) -> None:
        live = status(self.api, self.namespace)
        saturated = next((c for c in live.get("conditions", [])
                          if c["type"] == "DatabaseSaturated"), {})
        self.rows.append((time.monotonic() - self.started, hpa_desired(self.api, self.namespace),
                          saturated.get("status", "-"), live.get("database", {}).get(
                              "serverConnections")))

    def most(self) -> int:
        return max((row[1] for row in self.rows), default=0)


@pytest.mark.parametrize(("mode", "ceiling"), [
    ("pooler", True), ("pooler", False), ("pgbouncer", True)],
    ids=["pooler-ceiling", "pooler-no-ceiling", "sidecar-below-max"])
def test_the_database_ceiling_holds_replicas_while_clients_wait_for_the_database(
    api: ApiClient, operator: OperatorProcess, namespace: str, tmp_path: Path,
    postgres_factory: Any, mode: str, ceiling: bool,
) -> None:
    """Behind the pooler the ceiling holds the pods while clients wait (more would bring the
    database nothing); with a sidecar per pod below replicas.max it stays off and the pods,
    each with its own pool, scale out."""
    from djangoscale import spec as spec_module
    from djangoscale.budget import size_pool
    from djangoscale.builders import build_children
    from djangoscale.builders.pgbouncer import DatabaseCredentials, render_ini, render_userlist
    from djangoscale.contract import PGBOUNCER_ADDRESS_ENV, POOLER_STATS_ADDRESS_ENV
    from tests.e2e.test_budget_guard import database_secret, migrated_postgres
    from tests.e2e.test_pooler_mode import drain_file, pooler_ini
    from tests.fixtures import services

    body = ceiling_service(namespace, ceiling, mode)
    ds = spec_module.parse(body)
    pool = size_pool(ds).pool_size_per_pod
    with migrated_postgres(postgres_factory, max_connections=40) as pg, \
            contextlib.ExitStack() as bouncers:
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        ini, userlist = render_ini(ds, credentials), render_userlist(credentials)
        if mode == "pooler":
            # The web pods' env names the pooler's Service for its figures; here the one
            # pgbouncer standing for the pooler's pod is that address.
            children = {f"{c['kind']}/{c['metadata']['name']}": c
                        for c in build_children(ds, credentials)}
            (app,) = children["Deployment/shop"]["spec"]["template"]["spec"]["containers"]
            assert POOLER_STATS_ADDRESS_ENV in {item["name"] for item in app["env"]}
            (tmp_path / "pooler").mkdir()
            pooler = bouncers.enter_context(services.pgbouncer(
                pooler_ini(ini, bouncers.enter_context(drain_file())), userlist,
                tmp_path / "pooler"))

        def env_for(pod: str) -> dict[str, str]:
            if mode == "pooler":
                return launcher_env(pooler.database_env(),
                                    {POOLER_STATS_ADDRESS_ENV: f"{pooler.host}:{pooler.port}"})
            (tmp_path / pod).mkdir(exist_ok=True)
            bouncer = bouncers.enter_context(services.pgbouncer(ini, userlist, tmp_path / pod))
            return launcher_env(bouncer.database_env(),
                                {PGBOUNCER_ADDRESS_ENV: f"{bouncer.host}:{bouncer.port}"})

        secret = database_secret(namespace, pg)
        api.create(f"/api/v1/namespaces/{namespace}/secrets", secret)
        with PodHarness(api, namespace, tmp_path, env_for=env_for) as harness:
            start_service(api, namespace, harness, body)
            samples = CeilingSamples(api, namespace)
            load = run_load(CEILING_RATE, CEILING_SECONDS, harness.endpoints,
                            path=lambda: "/slow/")
            loaded_until = time.monotonic() - samples.started
            loaded_most = samples.most()
            saturated = condition(api, namespace, "DatabaseSaturated")
            warnings = events(api, namespace, "DatabaseSaturated")
            engaged = ceiling and mode == "pooler"
            cleared = not engaged or wait_for(
                "DatabaseSaturated to clear", lambda: condition(
                    api, namespace, "DatabaseSaturated").get("status") == "False", timeout=90)
            samples.stop()
            (tmp_path / "ceiling.csv").write_text("".join(
                f"{t:.1f},{d},{c},{n}\n" for t, d, c, n in samples.rows))
    held = [row for row in samples.rows if row[2] == "True"]
    first_held = min((row[0] for row in held), default=None)
    print(f"\n{mode}, ceiling {'on' if ceiling else 'off'}: pool {pool} per "
          f"{'pooler pod' if mode == 'pooler' else 'pod'}, {CEILING_RATE:.0f} RPS of /slow/ for "
          f"{CEILING_SECONDS:.0f} s: replicas <= {loaded_most}, p95 {load.p95() * 1000:.0f} ms, "
          f"{load}; DatabaseSaturated True in {len(held)} of {len(samples.rows)} samples "
          f"(first at {first_held} s), at the end: {saturated.get('status')} "
          f"{saturated.get('message', '')!r}")
    if engaged:
        assert loaded_most == 2, "the ceiling must keep the HPA from adding pods"
        assert held
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert cleared
    else:
        assert loaded_most > 2, "without the ceiling, concurrency asks for more pods"
    if not ceiling:
        assert saturated == {}
    if mode == "pgbouncer":
        # Below replicas.max each new pod brings its own pool: the ceiling stays off.
        assert not [row for row in held if row[0] < loaded_until and row[1] < CEILING_REPLICAS_MAX]


# -- the dashboard ---------------------------------------------------------------------------------


def exported_names(text: str) -> set[str]:
    """Every sample name and metric family a /metrics page declares."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def test_every_dashboard_query_names_a_metric_the_parts_export(
    operator: OperatorProcess, postgres_factory: Any, tmp_path: Path,
) -> None:
    """The launcher (with its pod's pgbouncer, the operator's ini) and the operator, scraped
    live: each name a panel's query uses is on one of their /metrics pages."""
    import json
    import re
    import urllib.request

    from djangoscale import spec as spec_module
    from djangoscale.builders.pgbouncer import DatabaseCredentials, render_ini, render_userlist
    from djangoscale.contract import PGBOUNCER_ADDRESS_ENV
    from tests.e2e.test_budget_guard import migrated_postgres
    from tests.fixtures import services
    from tests.fixtures.launcher import serve

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "charts" / "djangoscale"
                            / "dashboards" / "djangoscale.json").read_text())
    body = djangoservice("web")
    body["spec"]["database"] = {"secretName": "shop-db", "maxConnections": 40}
    with migrated_postgres(postgres_factory, max_connections=40) as pg:
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        (tmp_path / "bouncer").mkdir()
        with services.pgbouncer(render_ini(spec_module.parse(body), credentials),
                                render_userlist(credentials), tmp_path / "bouncer") as bouncer, \
                serve("cherrypy", bouncer.database_env(), tmp_path,
                      env={PGBOUNCER_ADDRESS_ENV: f"{bouncer.host}:{bouncer.port}"}) as served:
            assert served.get("/slow/").status == 200
            launcher = served.metrics_until(
                lambda s: "djangoscale_pgbouncer_max_wait_seconds" in s
                and s.get("djangoscale_request_queue_seconds_count", 0) >= 1)
            launcher_text = get_text(served.host, served.metrics_port)
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics",
                                timeout=5) as response:
        operator_text = response.read().decode()
    exported = exported_names(launcher_text) | exported_names(operator_text)
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bdjangoscale_\w+", query)}
    print(f"\n{len(dashboard['panels'])} panels, {len(queries)} queries, {len(used)} metric "
          f"names, all among {len(exported)} exported")
    assert len(launcher) > 0 and len(dashboard["panels"]) >= 6
    assert used - exported == set()
    # Each part contributes: the launcher, its pgbouncer figures, the operator.
    assert any(n.startswith("djangoscale_pgbouncer_") for n in used)
    assert any(n.startswith("djangoscale_operator_") for n in used)


def get_text(host: str, port: int) -> str:
    from tests.fixtures.launcher import get

    return get(host, port, "/metrics").body.decode()


PROMETHEUS_OPERATOR_CRDS = (Path(__file__).resolve().parents[1] / "tools"
                            / "prometheus-operator" / "fetch.sh")


def test_the_charts_monitors_pass_the_prometheus_operators_crds(api: ApiClient) -> None:
    """The PodMonitor and ServiceMonitor the chart renders, dry-run on the real API server
    with the monitoring.coreos.com CRDs (from the Prometheus Operator's Go module) installed."""
    import yaml

    from tests.tools import install_manifests

    directory = Path(subprocess.run([str(PROMETHEUS_OPERATOR_CRDS)], check=True,
                                    capture_output=True, text=True).stdout.strip())
    for path in sorted(directory.glob("*.yaml")):
        definition = yaml.safe_load(path.read_text())
        api.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                  f"{definition['metadata']['name']}", definition)

        def established(name: str = definition["metadata"]["name"]) -> bool:
            live = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            return any(c["type"] == "Established" and c["status"] == "True"
                       for c in (live.get("status") or {}).get("conditions") or [])

        wait_for(f"{path.name} established", established)
    docs = install_manifests.documents(install_manifests.template(
        "--set", "monitoring.podMonitor.enabled=true",
        "--set", "monitoring.serviceMonitor.enabled=true",
        "--set", "monitoring.podMonitor.labels.release=prometheus"))
    monitors = [d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    assert sorted(d["kind"] for d in monitors) == ["PodMonitor", "ServiceMonitor"]
    for monitor in monitors:
        plural = monitor["kind"].lower() + "s"
        namespace = monitor["metadata"]["namespace"]
        with contextlib.suppress(ApiError):  # the chart's namespace, for the dry run
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}})
        answer = api.request(
            "POST", f"/apis/monitoring.coreos.com/v1/namespaces/{namespace}/{plural}"
            "?dryRun=All&fieldValidation=Strict", monitor)
        # Strict validation refused no field, and the API server kept what the chart wrote.
        assert answer["kind"] == monitor["kind"], answer
        assert {key: answer["spec"].get(key) for key in monitor["spec"]} == monitor["spec"]
