"""RPS autoscaling end to end: real HPA controller, real aggregation layer, real launcher.

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

    def __init__(self, api: ApiClient, namespace: str, log_dir: Path) -> None:
        self.api, self.namespace, self.log_dir = api, namespace, log_dir
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
                "--server", "cherrypy", "--workers", "1", "--threads", "8",
                "--bind", f"{ip}:{HTTP_PORT}", "--metrics-bind", f"{ip}:{METRICS_PORT}"]
        process = subprocess.Popen(argv, cwd=SAMPLEAPP, env=launcher_env({}), stdout=log,
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

    def fail(self, cause: str) -> None:
        self.failed += 1
        self.errors[cause] = self.errors.get(cause, 0) + 1


def run_load(rate: float, seconds: float, endpoints: Callable[[], list[str]],
             max_in_flight: int = 200, stop: threading.Event | None = None) -> LoadResult:
    """Open-loop GETs of /hello/ at `rate` per second for `seconds` (or until `stop`), spread
    over endpoints."""
    result = LoadResult()

    async def hit(session: aiohttp.ClientSession, ip: str) -> None:
        try:
            async with session.get(f"http://{ip}:{HTTP_PORT}/hello/") as response:
                await response.read()
                if response.status == 200:
                    result.ok += 1
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
class Timeline:
    """HPA desired replicas and reported RPS, sampled every half second."""

    api: ApiClient
    namespace: str
    started: float = field(default_factory=time.monotonic)
    # (time, HPA desired replicas, status.rps.stable, status.rps.panic, status.desiredReplicas)
    rows: list[tuple[float, int, float, float, int]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(ApiError, OSError):
                desired = hpa_desired(self.api, self.namespace)
                observed = status(self.api, self.namespace)
                rps = observed.get("rps", {})
                self.rows.append((time.monotonic(), desired, float(rps.get("stable", 0)),
                                  float(rps.get("panic", 0)),
                                  int(observed.get("desiredReplicas") or 0)))
            self.stopping.wait(0.5)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

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


def start_service(api: ApiClient, namespace: str, harness: PodHarness) -> None:
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", djangoservice(namespace))
    wait_for("2 pods served", lambda: len(harness.endpoints()) >= 2, timeout=120)
    wait_for("the HPA to read the metric", lambda: scaling_active(api, namespace), timeout=60)


def pod_metrics(api: ApiClient, namespace: str) -> dict[str, Any]:
    selector = quote("app.kubernetes.io/instance=shop")
    result: dict[str, Any] = api.get(
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{RPS_METRIC}"
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


def pod_values(api: ApiClient, namespace: str) -> dict[str, float]:
    """What the HPA reads, per pod, through the aggregator (quantities in milli-units)."""
    return {item["describedObject"]["name"]: float(item["value"].rstrip("m")) / 1000
            for item in pod_metrics(api, namespace)["items"]}


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
