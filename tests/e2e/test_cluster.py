"""The local control plane itself, with no operator: the ground the other e2e tests stand on.

Each test proves one controller or component really runs: the apiserver and its version, KWOK
(nodes Ready, pods Running with loopback IPs, deleted pods gone), the scheduler, the
deployment/replicaset/garbage-collector controllers, the HPA controller, and the aggregation
layer reaching an API served by a process on this machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from djangoscale_dev.cluster import LocalCluster, processes, register_local_apiservice
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.cluster.apiservice import service_name_for, unregister_local_apiservice
from djangoscale_dev.cluster.pki import PkiPaths, issue_serving_cert
from tests.fixtures.polling import wait_for

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")




@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> ApiClient:
    return cluster.client()


@pytest.fixture
def namespace(api: ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }


def pods(api: ApiClient, namespace: str, app: str) -> list[dict[str, Any]]:
    return api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{app}")["items"]


def test_apiserver_is_ready_and_reports_1_35(api: ApiClient) -> None:
    assert api.get("/readyz") == "ok"
    version = api.get("/version")
    assert version["gitVersion"].startswith("v1.35."), version
    assert (version["major"], version["minor"]) == ("1", "35")


def test_kubeconfig_works_with_the_kubernetes_client(cluster: LocalCluster) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
    names = [n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_node().items]
    assert sorted(names) == sorted(cluster.state.nodes)


def test_nodes_are_ready_with_loopback_pod_cidrs(cluster: LocalCluster, api: ApiClient) -> None:
    nodes = api.get("/api/v1/nodes")["items"]
    assert len(nodes) == len(cluster.state.nodes) >= 2
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
        assert ipaddress.ip_network(node["spec"]["podCIDR"]).subnet_of(LOOPBACK)
    assert len({n["spec"]["podCIDR"] for n in nodes}) == len(nodes)


def test_deployment_pods_run_with_loopback_ips_and_are_collected(
    api: ApiClient, namespace: str
) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    api.create(base, deployment("web", 3))

    def running() -> list[dict[str, Any]]:
        found = pods(api, namespace, "web")
        ok = [
            p for p in found if p["status"].get("phase") == "Running" and p["status"].get("podIP")
        ]
        return found if len(ok) == 3 == len(found) else []

    found = wait_for("3 Running pods", running)
    ips = [ipaddress.ip_address(p["status"]["podIP"]) for p in found]
    assert all(ip in LOOPBACK for ip in ips), ips
    assert len(set(ips)) == 3
    # The point of loopback pod IPs: a real process on this machine can serve as the pod.
    with socket.socket() as server:
        server.bind((str(ips[0]), 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=2):
            accepted, _ = server.accept()
            accepted.close()
    assert all(p["spec"].get("nodeName") for p in found)  # the scheduler placed them
    deploy = wait_for(
        "deployment status",
        lambda: (d := api.get(f"{base}/web"))["status"].get("readyReplicas") == 3 and d,
    )
    assert deploy["status"]["availableReplicas"] == 3

    api.delete(f"{base}/web")
    wait_for("pods garbage-collected", lambda: not pods(api, namespace, "web"))
    rs = api.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]
    assert rs == []


def hpa_manifest(target: str, metric: str, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": "10"},
                    },
                }
            ],
        },
    }


def replicas(api: ApiClient, namespace: str, name: str) -> int:
    return int(
        api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")["spec"]["replicas"]
    )


def hpa_conditions(api: ApiClient, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    status = api.get(path).get("status", {})
    found = {c["type"]: c for c in status.get("conditions") or []}
    return found if "ScalingActive" in found else {}


def test_hpa_controller_acts_on_an_hpa(api: ApiClient, namespace: str) -> None:
    """Below minReplicas the HPA controller scales up without any metric; for a metric that
    nobody serves it then reports why it cannot compute one."""
    api.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("hpa", 1))
    api.create(
        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
        hpa_manifest("hpa", "no_such_metric", 2, 4),
    )
    wait_for("scale-up to minReplicas", lambda: replicas(api, namespace, "hpa") == 2)
    found = wait_for("HPA conditions", lambda: hpa_conditions(api, namespace, "hpa"))
    assert found["AbleToScale"]["status"] == "True"
    assert found["ScalingActive"]["status"] == "False"
    assert found["ScalingActive"]["reason"] == "FailedGetPodsMetric"


METRICS_GROUP, METRICS_VERSION = "custom.metrics.k8s.io", "v1beta2"
METRICS_GV = f"{METRICS_GROUP}/{METRICS_VERSION}"
RPS_PER_POD = 30


class _MetricsBackend(BaseHTTPRequestHandler):
    """A minimal custom metrics API on the host: discovery, and `requests_per_second` =
    RPS_PER_POD for every pod a selector matches. Records who the aggregator says is asking
    (front-proxy headers) and which client cert it presented."""

    api: ClassVar[ApiClient]
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() or {}  # type: ignore[attr-defined]
        subject = dict(item[0] for item in peer.get("subject", ()))
        self.seen.append(
            {
                "path": self.path,
                "user": self.headers.get("X-Remote-User", ""),
                "client_cn": subject.get("commonName", ""),
            }
        )
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if url.path.rstrip("/") == f"/apis/{METRICS_GV}":
            self._json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": METRICS_GV,
                    "resources": [
                        {
                            "name": "pods/requests_per_second",
                            "singularName": "",
                            "namespaced": True,
                            "kind": "MetricValueList",
                            "verbs": ["get"],
                        }
                    ],
                }
            )
        # /apis/<group>/<version>/namespaces/<ns>/pods/<name or *>/requests_per_second
        elif (
            len(parts) == 8
            and parts[3] == "namespaces"
            and parts[5] == "pods"
            and (parts[7] == "requests_per_second")
        ):
            self._json(self._pod_metrics(parts[4], urllib.parse.parse_qs(url.query)))
        else:
            self.send_error(404)

    def _pod_metrics(self, namespace: str, query: dict[str, list[str]]) -> dict[str, Any]:
        selector = urllib.parse.quote(query.get("labelSelector", [""])[0])
        listed = self.api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        items = [
            {
                "describedObject": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod["metadata"]["name"],
                    "apiVersion": "/v1",
                },
                "metric": {"name": "requests_per_second"},
                "timestamp": now,
                "windowSeconds": 60,
                "value": str(RPS_PER_POD),
            }
            for pod in listed["items"]
        ]
        return {"kind": "MetricValueList", "apiVersion": METRICS_GV, "metadata": {}, "items": items}

    def _json(self, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def metrics_api(cluster: LocalCluster, api: ApiClient) -> Iterator[type[_MetricsBackend]]:
    """The backend above, on 127.0.0.1 with a cert from the cluster CA, registered as the
    custom.metrics.k8s.io APIService through `register_local_apiservice`."""
    namespace = "default"
    pki = PkiPaths(cluster.dir / "pki")
    cert, key = issue_serving_cert(
        pki,
        "metrics-test",
        (f"{service_name_for(METRICS_GROUP)}.{namespace}.svc",),
        ("127.0.0.1",),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The aggregator authenticates with the front-proxy client cert: ask for it.
    context.load_verify_locations(pki.cert("front-proxy-ca"))
    context.verify_mode = ssl.CERT_OPTIONAL

    handler = type("Backend", (_MetricsBackend,), {"api": api, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        register_local_apiservice(
            api,
            METRICS_GROUP,
            METRICS_VERSION,
            server.server_address[1],
            namespace=namespace,
            ca_bundle=pki.ca.read_bytes(),
        )

        def available() -> bool:
            status = api.get(
                f"/apis/apiregistration.k8s.io/v1/apiservices/{METRICS_VERSION}.{METRICS_GROUP}"
            )
            return any(
                c["type"] == "Available" and c["status"] == "True"
                for c in status.get("status", {}).get("conditions", [])
            )

        wait_for("APIService Available", available)
        yield handler
    finally:
        with contextlib.suppress(ApiError):
            unregister_local_apiservice(api, METRICS_GROUP, METRICS_VERSION, namespace)
        server.shutdown()
        server.server_close()


def test_aggregated_api_served_from_the_host_is_reachable(
    api: ApiClient, metrics_api: type[_MetricsBackend]
) -> None:
    listed = api.get(f"/apis/{METRICS_GV}")
    assert listed["groupVersion"] == METRICS_GV
    assert [r["name"] for r in listed["resources"]] == ["pods/requests_per_second"]
    proxied = [s for s in metrics_api.seen if s["user"]]
    assert proxied, metrics_api.seen
    assert proxied[-1]["user"] == "kubernetes-admin"
    assert proxied[-1]["client_cn"] == "front-proxy-client"


def test_hpa_scales_on_a_custom_metric_served_from_the_host(
    api: ApiClient, namespace: str, metrics_api: type[_MetricsBackend]
) -> None:
    """The whole chain the operator relies on: HPA controller -> aggregator -> a process on
    this machine. 2 pods at 30 RPS each against a 10 RPS target want 6; max is 4."""
    api.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("rps", 2))
    api.create(
        f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
        hpa_manifest("rps", "requests_per_second", 1, 4),
    )
    wait_for(
        "HPA to scale to maxReplicas on the metric", lambda: replicas(api, namespace, "rps") == 4
    )
    found = wait_for("HPA conditions", lambda: hpa_conditions(api, namespace, "rps"))
    assert found["ScalingActive"]["status"] == "True"
    assert found["ScalingLimited"]["status"] == "True"
    status = api.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/rps")[
        "status"
    ]
    current = status["currentMetrics"][0]["pods"]["current"]["averageValue"]
    assert current == str(RPS_PER_POD)
    asked = [
        s
        for s in metrics_api.seen
        if s["path"].startswith(f"/apis/{METRICS_GV}/namespaces/{namespace}/")
    ]
    assert asked and asked[-1]["user"].startswith("system:serviceaccount:kube-system:")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_reuses_a_running_cluster_and_down_frees_every_port(tmp_path: Path) -> None:
    """A second cluster beside the session's: `up` twice keeps the same processes, `down`
    stops them all and nothing listens on their ports any more."""
    local = LocalCluster(tmp_path / "second")
    local.dir.mkdir()
    foreign = local.dir / "notes.txt"
    foreign.write_text("not the launcher's")
    try:
        kubeconfig = local.up(nodes=1)
        assert kubeconfig.is_file()
        state = local.state
        assert state is not None
        ports = list(vars(state.ports).values())
        assert all(_listening(p) for p in ports), ports
        assert len(processes.recorded(local.dir)) == 5

        again = LocalCluster(tmp_path / "second")
        assert again.up(nodes=1) == kubeconfig
        assert again.state is not None and again.state.ports == state.ports
    finally:
        stopped = local.down()
    assert sorted(stopped) == ["apiserver", "controller-manager", "etcd", "kwok", "scheduler"]
    assert wait_for("ports closed", lambda: not any(_listening(p) for p in ports), 10)
    assert local.running() is None
    assert foreign.read_text() == "not the launcher's"
