"""The real node runs a restricted pod behind a Service, and `down` leaves nothing behind.

A cluster of its own (not the session's KWOK cluster): it puts on the node everything `down`
must take apart — a running container, a Secret volume (tmpfs mount), a hostPort (the CNI
portmap plugin's chains), a Service (kube-proxy's chains), the pod's network namespace and
veth — notes each of them on the host, takes the cluster down, and looks for every one again.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from djangoscale_dev.cluster import LocalCluster, node, nodeconfig, processes
from djangoscale_dev.cluster.api import ApiClient
from djangoscale_dev.cluster.nodeconfig import NodePaths
from tests.fixtures import services
from tests.fixtures.polling import wait_for

NAMESPACE = "default"
HTTP_PORT = 8080


def chains() -> set[str]:
    """Every iptables chain of kube-proxy, the kubelet or CNI, as `tool table chain`."""
    found = set()
    for tool in node.IPTABLES:
        for table in node.TABLES:
            for name in node.chain_names(tool, table):
                if name.startswith(node.NODE_CHAIN_PREFIXES):
                    found.add(f"{tool} {table} {name}")
    return found


def processes_using(directory: Path) -> list[str]:
    """Processes whose command line, working directory or root lies in `directory`."""
    root = str(directory.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            links = [os.readlink(entry / "cwd"), os.readlink(entry / "root")]
        except OSError:
            continue
        if root in cmdline or any(link.startswith(root) for link in links):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def net_namespaces() -> set[int]:
    """Inodes of every network namespace a process on this machine is in."""
    inodes = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                inodes.add(os.stat(entry / "ns" / "net").st_ino)
    return inodes


def ip_netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def pod_manifest(host_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "httpd",
                    # The node's own pause image holds busybox: no registry is needed.
                    "image": nodeconfig.PAUSE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "httpd", "-f", "-p", str(HTTP_PORT), "-h", "/"],
                    "ports": [
                        {
                            "containerPort": HTTP_PORT,
                            "hostPort": host_port,
                            "hostIP": nodeconfig.GATEWAY,
                        }
                    ],
                    "readinessProbe": {"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 1},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "secret", "mountPath": "/secret"}],
                }
            ],
            "volumes": [{"name": "secret", "secret": {"secretName": "web"}}],
        },
    }


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:  # busybox httpd answers 404 for "/"
        return int(error.code)


def pod_ready(api: ApiClient) -> dict[str, Any] | None:
    pod = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/web")
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod if ready else None


def test_a_restricted_pod_serves_through_its_service_and_down_leaves_nothing(
    tmp_path: Path,
) -> None:
    services.require(node.missing_for_real_node())
    chains_before = chains()
    sysctls_before = node.read_sysctls()
    netns_before = ip_netns()
    cluster = LocalCluster(tmp_path / "cluster")
    paths = NodePaths(cluster.dir / "node")
    try:
        started = time.monotonic()
        cluster.up(node="real")
        api = cluster.client()
        host_port = processes.free_port(nodeconfig.GATEWAY)
        api.create(
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web"},
             "stringData": {"token": "t"}},
        )
        api.create(f"/api/v1/namespaces/{NAMESPACE}/pods", pod_manifest(host_port))
        service = api.create(
            f"/api/v1/namespaces/{NAMESPACE}/services",
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
             "spec": {"selector": {"app": "web"},
                      "ports": [{"port": 80, "targetPort": HTTP_PORT}]}},
        )
        pod = wait_for("the pod Ready", lambda: pod_ready(api), timeout=60)
        print(f"real node: up to a Ready pod in {time.monotonic() - started:.1f}s")
        pod_ip, cluster_ip = pod["status"]["podIP"], service["spec"]["clusterIP"]
        assert pod_ip.startswith("198.18.0.") and cluster_ip.startswith("198.19.")

        # Served from the pod's IP, the Service's ClusterIP (kube-proxy) and the hostPort.
        assert http_status(f"http://{pod_ip}:{HTTP_PORT}/") == 404
        wait_for(
            "the ClusterIP to route",
            lambda: _quiet_status(f"http://{cluster_ip}/") == 404,
            timeout=30,
        )
        assert http_status(f"http://{nodeconfig.GATEWAY}:{host_port}/") == 404

        # What must be gone afterwards, seen from the host.
        container_pids = [pid for b in node.bundles(paths) for pid in b.pids]
        assert container_pids
        pod_netns = {os.stat(f"/proc/{pid}/ns/net").st_ino for pid in container_pids}
        bridge_ports = os.listdir(f"/sys/class/net/{nodeconfig.BRIDGE}/brif")
        assert bridge_ports, "no veth on the bridge"
        assert node.mounts_under(paths.kubelet_root)  # volumes
        added = chains() - chains_before
        assert any(" KUBE-SVC-" in c for c in added), added
        assert any(" CNI-" in c for c in added), added  # the hostPort's
        assert f"iptables filter {node.SERVICE_GUARD_CHAIN}" in added, added
        kubelet_log = (cluster.dir / "logs" / "kubelet.log").read_text()
        assert "strict decoding error" not in kubelet_log  # every config field is known
    finally:
        started = time.monotonic()
        cluster.down()
        print(f"real node: down in {time.monotonic() - started:.1f}s")

    assert processes_using(cluster.dir) == []
    assert not any(node._alive(pid) for pid in container_pids)
    assert [m for root in paths.mount_roots for m in node.mounts_under(root)] == []
    assert not pod_netns & net_namespaces()
    links = set(os.listdir("/sys/class/net"))
    assert nodeconfig.BRIDGE not in links
    assert not set(bridge_ports) & links
    assert chains() - chains_before == set()
    assert node.read_sysctls() == sysctls_before
    assert not paths.record.exists()
    assert not paths.socket_dir.exists()
    for directory in (*node.HOST_DIRS, node.KUBELET_FIXED_DIR):
        if directory.exists():
            leftovers = [p for p in directory.rglob("*") if not p.is_dir()]
            assert not [p for p in leftovers if str(cluster.dir) in _target(p)], leftovers
    assert ip_netns() == netns_before


def _quiet_status(url: str) -> int:
    try:
        return http_status(url)
    except OSError:
        return 0


def _target(path: Path) -> str:
    return os.readlink(path) if path.is_symlink() else str(path)

