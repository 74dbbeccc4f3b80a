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
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from djangoscale.cluster import LocalCluster, processes, register_local_apiservice
from djangoscale.cluster.api import ApiClient, ApiError
from djangoscale.cluster.apiservice import service_name_for, unregister_local_apiservice
from djangoscale.cluster.pki import PkiPaths, issue_serving_cert

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


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


def test_hpa_controller_acts_on_an_hpa(api: ApiClient, namespace: str) -> None:
    """Below minReplicas the HPA controller scales up without any metric; with no metrics
    API it then reports why it cannot compute one."""
    api.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("hpa", 1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hpa"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "requests_per_second"},
                        "target": {"type": "AverageValue", "averageValue": "10"},
                    },
                }
            ],
        },
    }
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
    api.create(path, hpa)

    scaled = wait_for(
        "HPA to scale the deployment to minReplicas",
        lambda: (
            api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/hpa")["spec"]["replicas"]
            == 2
        ),
    )
    assert scaled

    def conditions() -> dict[str, dict[str, Any]]:
        status = api.get(f"{path}/hpa").get("status", {})
        found = {c["type"]: c for c in status.get("conditions", [])}
        return found if "ScalingActive" in found else {}

    found = wait_for("HPA conditions", conditions)
    assert found["AbleToScale"]["status"] == "True"
    assert found["ScalingActive"]["status"] == "False"
    assert found["ScalingActive"]["reason"] == "FailedGetPodsMetric"


class _MetricsBackend(BaseHTTPRequestHandler):
    """Serves API discovery for one group/version and records who the aggregator says
    is asking (front-proxy headers) and which cert it presented."""

    group_version = ""
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() or {}
        subject = dict(item[0] for item in peer.get("subject", ()))
        type(self).seen.append(
            {
                "path": self.path,
                "user": self.headers.get("X-Remote-User", ""),
                "client_cn": subject.get("commonName", ""),
            }
        )
        if self.path.split("?")[0] != f"/apis/{self.group_version}":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": self.group_version,
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
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_aggregated_api_served_from_the_host_is_reachable(
    cluster: LocalCluster, api: ApiClient
) -> None:
    group, version, namespace = "custom.metrics.k8s.io", "v1beta2", "default"
    pki = PkiPaths(cluster.dir / "pki")
    cert, key = issue_serving_cert(
        pki, "metrics-test", (f"{service_name_for(group)}.{namespace}.svc",), ("127.0.0.1",)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The aggregator authenticates with the front-proxy client cert: ask for it.
    context.load_verify_locations(pki.cert("front-proxy-ca"))
    context.verify_mode = ssl.CERT_OPTIONAL

    handler = type(
        "Backend", (_MetricsBackend,), {"group_version": f"{group}/{version}", "seen": []}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        register_local_apiservice(
            api,
            group,
            version,
            server.server_address[1],
            namespace=namespace,
            ca_bundle=pki.ca.read_bytes(),
        )

        def available() -> bool:
            status = api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{version}.{group}")
            return any(
                c["type"] == "Available" and c["status"] == "True"
                for c in status.get("status", {}).get("conditions", [])
            )

        wait_for("APIService Available", available)
        listed = api.get(f"/apis/{group}/{version}")
        assert listed["groupVersion"] == f"{group}/{version}"
        assert [r["name"] for r in listed["resources"]] == ["pods/requests_per_second"]
        proxied = [s for s in handler.seen if s["user"]]
        assert proxied, handler.seen
        assert proxied[-1]["user"] == "kubernetes-admin"
        assert proxied[-1]["client_cn"] == "front-proxy-client"
    finally:
        with contextlib.suppress(ApiError):
            unregister_local_apiservice(api, group, version, namespace)
        server.shutdown()
        server.server_close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_reuses_a_running_cluster_and_down_frees_every_port(tmp_path: Path) -> None:
    """A second cluster beside the session's: `up` twice keeps the same processes, `down`
    stops them all and nothing listens on their ports any more."""
    local = LocalCluster(tmp_path / "second")
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
