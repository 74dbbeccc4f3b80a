"""The sample DjangoService on the real node: what the operator writes runs for real.

One cluster for this module (`real_cluster`: kubelet, containerd, runc, CNI, kube-proxy), the
project's images built from its own Dockerfiles and loaded into the node, a PostgreSQL on the
host listening on the bridge gateway (where pods reach the host), and the operator on the host.
The namespace enforces the restricted Pod Security Standard, so a pod the operator writes that
breaks it is refused by the apiserver, and one that cannot run under it fails on the kubelet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale.spec import crd
from djangoscale_dev.cluster import LocalCluster, nodeconfig
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.registration import register_metrics_apiservice
from tests.e2e.helpers import API, container_init_pid, djangoservice, start_operator
from tests.fixtures import services
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SAMPLE_APP = "djangoscale/sampleapp:dev"
PGBOUNCER = "djangoscale/pgbouncer:dev"
LOAD_CLIENT = "djangoscale/wrk:dev"
MISSING_IMAGE = "djangoscale/does-not-exist:dev"
NAME = "shop"
REPLICAS = 2
LOAD_CONNECTIONS = 200
LOAD_SECONDS = 20
MAX_CONNECTIONS = 40
STABLE_WINDOW, PANIC_WINDOW, SCRAPE_INTERVAL = 20, 4, 1
# Counts every response outside 2xx (wrk's own error count lets 3xx through).
WRK_SCRIPT = """
local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON{"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d,'
    .. '"p95_ms":%f}\\n', summary.requests, e.connect, e.read, e.write, e.timeout, non2xx,
    latency:percentile(95) / 1e3))
end
"""


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(real_cluster: LocalCluster) -> ApiClient:
    return with_crd(real_cluster.client())


def with_crd(client: ApiClient) -> ApiClient:
    """The client, once the DjangoService CRD is installed and established."""
    definition = crd()
    client.apply(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{definition['metadata']['name']}",
        definition,
    )
    wait_for(
        "the CRD to be established",
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in client.get(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                + definition["metadata"]["name"]
            ).get("status", {}).get("conditions") or []
        ),
    )
    return client


@pytest.fixture(scope="module")
def node_images(real_cluster: LocalCluster) -> list[str]:
    """The sample app (FROM app-base), pgbouncer and wrk images, built or found cached,
    loaded."""
    from djangoscale_dev.images import project

    archives = project.project_images(only={SAMPLE_APP, PGBOUNCER, LOAD_CLIENT})
    names = []
    for tag in (SAMPLE_APP, PGBOUNCER, LOAD_CLIENT):
        names += real_cluster.load_image(archives[tag])
    return names


@pytest.fixture(scope="module")
def gateway_postgres(real_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> (
    Iterator[services.Postgres]
):
    """PostgreSQL on the host, reachable from pods at the gateway with a password."""
    services.require(None if (services.PG_BIN / "postgres").exists() else "PostgreSQL missing")
    with services.postgres(
        tmp_path_factory.mktemp("pg"),
        max_connections=100,
        listen=("127.0.0.1", nodeconfig.GATEWAY),
        password_networks=(nodeconfig.POD_CIDR,),
    ) as pg:
        env = {
            "DATABASE_HOST": pg.host,
            "DATABASE_PORT": str(pg.port),
            "DATABASE_NAME": services.APP_DB,
            "DATABASE_USER": services.APP_USER,
            "DATABASE_PASSWORD": services.APP_PASSWORD,
        }
        services.migrate_sample_app(env, REPO / "tests" / "sampleapp", sys.executable)
        yield pg


@pytest.fixture(scope="module")
def operator(real_cluster: LocalCluster, api: ApiClient, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Path]:
    """The operator on the host, serving custom.metrics.k8s.io to the HPA controller and
    scraping the pods at their real IPs."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    port = services.free_port()
    cert, key = register_metrics_apiservice(api, real_cluster.dir, port)
    with start_operator(
        real_cluster.kubeconfig, log,
        "--metrics-api-port", str(port), "--metrics-api-cert-file", str(cert),
        "--metrics-api-key-file", str(key), "--scrape-interval", str(SCRAPE_INTERVAL),
    ):
        yield log
    text = log.read_text(errors="replace")
    assert services.APP_PASSWORD not in text


@pytest.fixture(scope="module")
def restricted_namespace(api: ApiClient) -> Iterator[str]:
    name = f"real-{uuid.uuid4().hex[:8]}"
    api.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
    )
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def shop(
    api: ApiClient,
    operator: Path,
    node_images: list[str],
    gateway_postgres: services.Postgres,
    restricted_namespace: str,
) -> dict[str, Any]:
    """The sample DjangoService, its database Secret pointing at the host's PostgreSQL."""
    namespace = restricted_namespace
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-db"},
            "stringData": {
                "host": nodeconfig.GATEWAY,
                "port": str(gateway_postgres.port),
                "dbname": services.APP_DB,
                "user": services.APP_USER,
                "password": services.APP_PASSWORD,
            },
        },
    )
    body = djangoservice(
        namespace,
        image=SAMPLE_APP,
        wsgiApp="sampleproject.wsgi:application",
        server={"type": "cherrypy", "threads": 16, "maxThreads": 24, "queueSize": 400},
        replicas={"min": REPLICAS, "max": 4},
        # The windows are per service now (the operator's flags for them are gone).
        autoscaling={"targetRPSPerPod": 1000, "stableWindowSeconds": STABLE_WINDOW,
                     "panicWindowSeconds": PANIC_WINDOW},
        database={"secretName": "shop-db", "maxConnections": MAX_CONNECTIONS},
        pgbouncer={"enabled": True, "poolMode": "transaction", "image": PGBOUNCER},
    )
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", body)
    try:
        wait_for(
            f"{REPLICAS} pods Running and Ready",
            lambda: len(ready_pods(api, namespace)) == REPLICAS,
            timeout=180,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pods_report(api, namespace)}") from None
    return body


def pods_report(api: ApiClient, namespace: str) -> str:
    """Each pod's container states and its app container's last log lines."""
    lines = []
    for pod in pods(api, namespace):
        name = pod["metadata"]["name"]
        statuses = pod.get("status", {}).get("containerStatuses", [])
        states = [(s["name"], s.get("state"), s.get("restartCount")) for s in statuses]
        lines.append(f"{name}: {states}")
        try:
            log = api.get(
                f"/api/v1/namespaces/{namespace}/pods/{name}/log?container=app&tailLines=30")
        except ApiError as error:
            log = str(error)
        lines.append(str(log))
    return "\n".join(lines)


# -- helpers -------------------------------------------------------------------------------


def pods(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance%3D{NAME},app.kubernetes.io/component%3Dweb"
    return list(api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"])


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def ready_since(pod: dict[str, Any]) -> str:
    return str(next(c["lastTransitionTime"] for c in pod["status"]["conditions"]
                    if c["type"] == "Ready"))


def ready_pods(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    return [p for p in pods(api, namespace) if is_ready(p) and not p["metadata"].get(
        "deletionTimestamp")]


def status_agrees_with_kubelet(api: ApiClient, namespace: str) -> tuple[int, int] | None:
    """(replicas, readyReplicas) when the DjangoService's status gives the pods the kubelet
    runs (not terminating) and those whose Ready condition the kubelet set True."""
    status = api.get(f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}").get(
        "status", {})
    live = [p for p in pods(api, namespace) if not p["metadata"].get("deletionTimestamp")]
    kubelet = (len(live), len(ready_pods(api, namespace)))
    reported = (status.get("replicas"), status.get("readyReplicas"))
    return kubelet if reported == kubelet else None


def service_url(api: ApiClient, namespace: str, path: str) -> str:
    service = api.get(f"/api/v1/namespaces/{namespace}/services/{NAME}")
    port = service["spec"]["ports"][0]["port"]
    return f"http://{service['spec']['clusterIP']}:{port}{path}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def run_wrk(url: str, connections: int, seconds: int, script: Path) -> dict[str, Any]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
         str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    line = next(x for x in output.splitlines() if x.startswith("JSON"))
    return dict(json.loads(line[4:]))


def run_wrk_in_pod(api: ApiClient, namespace: str, url: str, connections: int, seconds: int
                   ) -> dict[str, Any]:
    """wrk from a client pod on the node (the same counting script, from a ConfigMap): its
    connections go through the pod network and kube-proxy as another app's would."""
    name = f"wrk-{uuid.uuid4().hex[:8]}"
    api.create(f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"count.lua": WRK_SCRIPT}})
    api.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "wrk", "image": LOAD_CLIENT, "imagePullPolicy": "Never",
                "args": ["-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                         "-s", "/scripts/count.lua", url],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "scripts", "mountPath": "/scripts"}],
            }],
            "volumes": [{"name": "scripts", "configMap": {"name": name}}],
        },
    })

    def finished() -> str | None:
        phase = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = wait_for("the wrk pod to finish", finished, timeout=seconds + 90)
        output = str(api.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log"))
        assert phase == "Succeeded", output
        line = next(x for x in output.splitlines() if x.startswith("JSON"))
        return dict(json.loads(line[4:]))
    finally:
        api.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
        api.delete(f"/api/v1/namespaces/{namespace}/configmaps/{name}")


# -- tests ---------------------------------------------------------------------------------


def test_pods_run_ready_under_the_restricted_profile(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    running = ready_pods(api, namespace)
    assert len(running) == REPLICAS
    for pod in running:
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
            nodeconfig.POD_CIDR
        )
        assert pod["spec"]["nodeName"] == nodeconfig.NODE_NAME
        # The native sidecar was up (started and past its startup probe) before the app began.
        (sidecar,) = pod["status"]["initContainerStatuses"]
        (app,) = pod["status"]["containerStatuses"]
        assert sidecar["name"] == "pgbouncer" and sidecar["started"] and sidecar["ready"]
        sidecar_started = sidecar["state"]["running"]["startedAt"]
        app_started = app["state"]["running"]["startedAt"]
        assert sidecar_started <= app_started
        assert app["restartCount"] == 0 and sidecar["restartCount"] == 0
    # status tells the kubelet's truth.
    assert wait_for("status to agree with the kubelet",
                    lambda: status_agrees_with_kubelet(api, namespace), timeout=60) == (
        REPLICAS, REPLICAS)


def test_requests_reach_postgresql_through_the_sidecar(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str,
    gateway_postgres: services.Postgres,
) -> None:
    namespace = restricted_namespace
    deployment = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_HOST"] == "127.0.0.1"  # the pod's own pgbouncer
    body = get_json(service_url(api, namespace, "/slow/"))
    assert body["slept_ms"] == 50
    # The server connection PostgreSQL sees comes from a pod (through its pgbouncer).
    clients = gateway_postgres.execute(
        "SELECT DISTINCT client_addr::text FROM pg_stat_activity "
        f"WHERE datname = '{services.APP_DB}' AND client_addr IS NOT NULL"
    )
    pod_ips = {p["status"]["podIP"] for p in ready_pods(api, namespace)}
    assert {row[0].split("/")[0] for row in clients} & pod_ips


@pytest.mark.parametrize("client", ["host", "pod"])
def test_200_connections_through_the_cluster_ip_for_20s(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str,
    gateway_postgres: services.Postgres, tmp_path: Path, client: str,
) -> None:
    """From the host, and from a client pod on the node (through the pod network and
    kube-proxy, as another app's requests go)."""
    namespace = restricted_namespace
    live = api.get(f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}")
    pool_per_pod = live["status"]["database"]["poolSizePerPod"]
    serving = {p["metadata"]["name"]: ready_since(p) for p in ready_pods(api, namespace)}
    url = service_url(api, namespace, "/slow/")
    sampler = services.PeakSampler(gateway_postgres, interval=0.05)
    sampler.start()
    started = time.monotonic()
    if client == "pod":
        report = run_wrk_in_pod(api, namespace, url, LOAD_CONNECTIONS, LOAD_SECONDS)
    else:
        script = tmp_path / "count.lua"
        script.write_text(WRK_SCRIPT)
        report = run_wrk(url, LOAD_CONNECTIONS, LOAD_SECONDS, script)
    peak = sampler.stop()
    print(f"ClusterIP load from the {client}: {report} in {time.monotonic() - started:.1f}s, "
          f"peak server connections {peak}")
    assert report["requests"] > 0
    errors = {k: report[k] for k in ("connect", "read", "write", "timeout", "status")}
    assert errors == dict.fromkeys(errors, 0), report
    # No pod left the Service under load (its probes queue behind the requests it holds).
    after = {p["metadata"]["name"]: ready_since(p) for p in ready_pods(api, namespace)}
    assert after == serving
    assert 0 < peak <= pool_per_pod * len(serving)


def test_an_image_that_does_not_exist_is_the_reason_in_the_status(
    api: ApiClient, operator: Path, restricted_namespace: str,
) -> None:
    """The kubelet cannot pull it (no registry is reachable from here): the DjangoService
    says so with the kubelet's reason and message, and posts one Warning event."""
    namespace, name = restricted_namespace, "ghost"
    body = djangoservice(namespace, name=name, image=MISSING_IMAGE,
                         imagePullPolicy="IfNotPresent", wsgiApp="sampleproject.wsgi:application",
                         replicas={"min": 1, "max": 2})
    del body["spec"]["database"]
    path = f"/apis/{API}/namespaces/{namespace}/djangoservices/{name}"
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", body)
    pull_failures = {"ImagePullBackOff", "ErrImagePull"}

    def conditions() -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in api.get(path).get("status", {}).get("conditions", [])}

    def warnings() -> list[dict[str, Any]]:
        events = api.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        return [e for e in events if e["involvedObject"].get("name") == name
                and e["involvedObject"].get("kind") == "DjangoService"
                and e.get("reason") in pull_failures]

    try:
        wait_for("Ready=False with the kubelet's pull failure",
                 lambda: conditions().get("Ready", {}).get("reason") in pull_failures,
                 timeout=120)
        found = conditions()
        assert found["Ready"]["status"] == "False"
        assert found["Degraded"]["status"] == "True"
        assert found["Degraded"]["reason"] in pull_failures
        assert MISSING_IMAGE in found["Degraded"]["message"], found["Degraded"]
        assert f"container app: {found['Degraded']['reason']}" in found["Degraded"]["message"]
        wait_for("a Warning event", warnings, timeout=30)
        # The kubelet goes on retrying (ErrImagePull, ImagePullBackOff, ...); the operator
        # reconciles every few seconds (resync 3 s here): still one event.
        time.sleep(15)
        assert len(warnings()) == 1, warnings()
        print(f"missing image: {found['Degraded']['reason']}: {found['Degraded']['message']}")
    finally:
        api.delete(path)


def merge_patch(api: ApiClient, path: str, body: dict[str, Any]) -> Any:
    return api.request("PATCH", path, body, content_type="application/merge-patch+json")


def deployment(api: ApiClient, namespace: str) -> dict[str, Any]:
    return dict(api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}"))


def hpa_scaling_active(api: ApiClient, namespace: str) -> bool:
    hpa = api.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{NAME}")
    return any(c["type"] == "ScalingActive" and c["status"] == "True"
               for c in hpa.get("status", {}).get("conditions", []))


class Load(threading.Thread):
    """wrk through the Service in the background; `report` once it ends."""

    def __init__(self, url: str, connections: int, seconds: int, script: Path) -> None:
        super().__init__(daemon=True)
        self.args = (url, connections, seconds, script)
        self.report: dict[str, Any] = {}

    def run(self) -> None:
        self.report = run_wrk(*self.args)

    def errors(self) -> dict[str, int]:
        return {k: int(self.report[k]) for k in ("connect", "read", "write", "timeout", "status")}


def test_a_load_step_scales_the_real_pods_up_and_its_end_back_down(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str, tmp_path: Path,
) -> None:
    namespace = restricted_namespace
    path = f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}"
    merge_patch(api, path, {"spec": {"autoscaling": {"targetRPSPerPod": 20, "behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxPercentPerPeriod": 1000,
                    "maxPodsPerPeriod": 10, "periodSeconds": 5},
        # The defaults (300 s, 10 % a minute) are for production; the test waits for less.
        "scaleDown": {"stabilizationWindowSeconds": 10, "maxPercentPerPeriod": 100,
                      "maxPodsPerPeriod": 10, "periodSeconds": 5},
    }}}})
    wait_for("the HPA to read the pods' RPS", lambda: hpa_scaling_active(api, namespace),
             timeout=60)
    script = tmp_path / "count.lua"
    script.write_text(WRK_SCRIPT)
    started = time.monotonic()
    load = Load(service_url(api, namespace, "/hello/"), 8, 40, script)
    load.start()
    scaled_up = wait_for(
        "a scale-up under load",
        lambda: (deployment(api, namespace)["spec"]["replicas"] > REPLICAS
                 and time.monotonic() - started),
        timeout=40,
    )
    wait_for("the new pods Ready", lambda: len(ready_pods(api, namespace)) > REPLICAS,
             timeout=60)
    load.join()
    assert load.errors() == dict.fromkeys(load.errors(), 0), load.report
    ended = time.monotonic()
    back = wait_for(
        "the scale back down once the load ends",
        lambda: (deployment(api, namespace)["spec"]["replicas"] == REPLICAS
                 and time.monotonic() - ended),
        timeout=120,
    )
    print(f"autoscaling: up {scaled_up:.1f}s after the step, back to {REPLICAS} "
          f"{back:.1f}s after it ended; load {load.report}")
    merge_patch(api, path, {"spec": {"autoscaling": {"targetRPSPerPod": 1000}}})
    wait_for(f"{REPLICAS} pods", lambda: len(pods(api, namespace)) == REPLICAS, timeout=120)
    wait_for("status to agree with the kubelet after the scale down",
             lambda: status_agrees_with_kubelet(api, namespace) == (REPLICAS, REPLICAS),
             timeout=60)


def test_a_rolling_update_under_load_fails_no_request(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str, tmp_path: Path,
) -> None:
    namespace = restricted_namespace
    wait_for(f"{REPLICAS} pods", lambda: len(ready_pods(api, namespace)) == REPLICAS
             == len(pods(api, namespace)), timeout=120)
    before = {p["metadata"]["name"] for p in pods(api, namespace)}
    script = tmp_path / "count.lua"
    script.write_text(WRK_SCRIPT)
    load = Load(service_url(api, namespace, "/items/"), 100, 60, script)
    load.start()
    time.sleep(3)
    merge_patch(api, f"/apis/{API}/namespaces/{namespace}/djangoservices/{NAME}",
                {"spec": {"server": {"threads": 20}}})

    def rolled() -> bool:
        live = deployment(api, namespace)
        status = live.get("status", {})
        current = {p["metadata"]["name"] for p in ready_pods(api, namespace)}
        return (status.get("observedGeneration") == live["metadata"]["generation"]
                and status.get("updatedReplicas") == REPLICAS
                and status.get("replicas") == REPLICAS
                and not current & before and len(current) == REPLICAS)

    wait_for("every pod replaced", rolled, timeout=55)
    assert load.is_alive(), "the rollout outlasted the load"
    load.join()
    print(f"rolling update under load: {load.report}")
    assert load.report["requests"] > 0
    assert load.errors() == dict.fromkeys(load.errors(), 0), load.report
    wait_for("status to agree with the kubelet after the rollout",
             lambda: status_agrees_with_kubelet(api, namespace) == (REPLICAS, REPLICAS),
             timeout=60)


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"][
        "containerStatuses"]
    return next(s for s in statuses if s["name"] == name)


def restarted_and_ready(api: ApiClient, namespace: str, pod_name: str, container: str,
                        restarts: int) -> bool:
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
    return is_ready(pod) and container_status(pod, container)["restartCount"] > restarts


@pytest.mark.parametrize("container", ["pgbouncer", "app"])
def test_a_killed_process_is_restarted_by_the_kubelet_and_serves_again(
    api: ApiClient, shop: dict[str, Any], restricted_namespace: str, real_cluster: LocalCluster,
    tmp_path: Path, container: str,
) -> None:
    namespace = restricted_namespace
    pod = ready_pods(api, namespace)[0]
    name = pod["metadata"]["name"]
    status = container_status(pod, container)
    restarts = status["restartCount"]
    script = tmp_path / "count.lua"
    script.write_text(WRK_SCRIPT)
    connections = 10
    load = Load(service_url(api, namespace, "/items/"), connections, 20, script)
    load.start()
    time.sleep(3)
    os.kill(container_init_pid(real_cluster, status), signal.SIGKILL)
    wait_for(f"{container} restarted and the pod Ready again",
             lambda: restarted_and_ready(api, namespace, name, container, restarts), timeout=60)
    load.join()
    print(f"{container} killed under load: {load.report}")
    if container == "pgbouncer":
        # The app keeps serving and reconnects to the restarted sidecar: only requests in
        # flight on that pod may fail, at most the connections it held.
        assert sum(load.errors().values()) <= connections, load.report
    # (A killed app fails more: connections kube-proxy sends to the pod until the kubelet's
    # readiness probe takes it out of the Service.)
    # Afterwards the app uses its (new) sidecar by itself: every request succeeds.
    for _ in range(20):
        assert get_json(service_url(api, namespace, "/items/"))["count"] >= 0
