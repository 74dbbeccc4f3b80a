"""The real node's configuration, pause image archive and host checks, without starting it."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import tarfile
import tomllib
from pathlib import Path

import pytest

from djangoscale_dev.cluster import flags, node, nodeconfig
from djangoscale_dev.cluster.nodeconfig import NodePaths, NodePorts
from djangoscale_dev.cluster.ociarchive import ImageFile, write_oci_archive

BENCHMARK_RANGE = ipaddress.ip_network("198.18.0.0/15")
PORTS = NodePorts(kubelet=40001, kubelet_healthz=40002, proxy_metrics=40003, proxy_healthz=40004)


@pytest.fixture
def paths(tmp_path: Path) -> NodePaths:
    return NodePaths(tmp_path / "node")


def test_addresses_are_in_the_benchmarking_range_and_never_private() -> None:
    pods = ipaddress.ip_network(nodeconfig.POD_CIDR)
    services = ipaddress.ip_network(flags.SERVICE_CLUSTER_IP_RANGE)
    gateway = ipaddress.ip_address(nodeconfig.GATEWAY)
    for network in (pods, services):
        assert network.subnet_of(BENCHMARK_RANGE)  # type: ignore[arg-type]
    assert gateway in pods
    assert not pods.overlaps(services)
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"):
        assert not services.overlaps(ipaddress.ip_network(private))
        assert not pods.overlaps(ipaddress.ip_network(private))


def test_containerd_config_is_private_and_may_not_lower_oom_score(paths: NodePaths) -> None:
    config = tomllib.loads(nodeconfig.containerd_config(paths))
    assert config["version"] == 2
    assert (config["root"], config["state"]) == (
        str(paths.containerd_root),
        str(paths.containerd_state),
    )
    assert config["grpc"]["address"] == str(paths.containerd_socket)
    assert len(str(paths.containerd_socket) + ".ttrpc") <= 104  # a unix socket path's limit
    # The kubelet's sockets (pod-resources, plugins) live under its root dir too.
    assert len(str(paths.kubelet_root / "pod-resources" / "1234567890")) <= 104
    assert paths.kubelet_root.parent in paths.mount_roots
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == nodeconfig.PAUSE_IMAGE
    assert cri["cni"] == {
        "bin_dir": "/usr/lib/cni",
        "conf_dir": str(paths.cni_conf_dir),
        "max_conf_num": 1,
    }
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(paths.root))


def test_cni_bridge_hands_out_pod_addresses_behind_the_gateway(paths: NodePaths) -> None:
    conflist = nodeconfig.cni_conflist(paths)
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "loopback"]
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == nodeconfig.BRIDGE and len(nodeconfig.BRIDGE) < 16  # IFNAMSIZ
    assert bridge["isGateway"] is True and bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["dataDir"] == str(paths.cni_ipam_dir)
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": nodeconfig.POD_CIDR, "gateway": nodeconfig.GATEWAY}]
    ]


def test_kubelet_config_fits_this_host(paths: NodePaths) -> None:
    config = nodeconfig.kubelet_config(paths, PORTS)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupsPerQOS"] is False and config["enforceNodeAllocatable"] == []
    assert config["failSwapOn"] is False
    assert config["imageGCHighThresholdPercent"] == 100  # no image GC
    assert config["containerRuntimeEndpoint"] == f"unix://{paths.containerd_socket}"
    assert (config["port"], config["healthzPort"], config["readOnlyPort"]) == (40001, 40002, 0)
    assert config["podLogsDir"] == str(paths.pod_logs)
    args = nodeconfig.kubelet_args(paths, Path("/k/kubeconfig"))
    assert args[0] == "kubelet"
    assert f"--root-dir={paths.kubelet_root}" in args
    assert f"--cert-dir={paths.kubelet_root / 'pki'}" in args
    assert f"--node-ip={nodeconfig.GATEWAY}" in args
    assert f"--hostname-override={nodeconfig.NODE_NAME}" in args


def test_kube_proxy_routes_services_and_leaves_host_sysctls_alone() -> None:
    config = nodeconfig.kube_proxy_config(PORTS, Path("/k/kubeconfig"))
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == nodeconfig.POD_CIDR
    assert config["hostnameOverride"] == nodeconfig.NODE_NAME
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["metricsBindAddress"] == "127.0.0.1:40003"


def test_pause_archive_is_a_valid_oci_layout(tmp_path: Path) -> None:
    binary = tmp_path / "sleeper"
    binary.write_bytes(b"\x7fELF fake static binary")
    archive = write_oci_archive(
        tmp_path / "pause.tar",
        "docker.io/example/pause:dev",
        [ImageFile(binary, "bin/busybox")],
        entrypoint=["/bin/busybox", "sleep", "1"],
    )
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    (descriptor,) = index["manifests"]
    assert descriptor["annotations"]["io.containerd.image.name"] == "docker.io/example/pause:dev"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files["blobs/sha256/" + descriptor["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/busybox", "sleep", "1"]
    assert config["config"]["User"] == "65535:65535"  # non-root, as upstream's pause
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        member = tar.getmember("bin/busybox")
        assert member.mode == 0o755
        assert tar.extractfile(member).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_a_missing_host_command_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.os, "geteuid", lambda: 0)
    message = node.missing_for_real_node(lambda name: None if name == "containerd" else "/x")
    assert message == (
        "containerd: not installed (Debian package containerd; scripts/setup.sh installs it)"
    )
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    assert "needs root" in (node.missing_for_real_node(lambda name: "/x") or "")


def test_a_node_whose_processes_are_all_gone_is_abandoned_once_past_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster_dir = tmp_path / "cluster"
    paths = NodePaths(cluster_dir / "node")
    paths.root.mkdir(parents=True)
    paths.record.write_text("{}")
    dead = {"name": "kubelet", "pid": 2**22 + 1, "binary": "/bin/true", "log": "x"}
    (cluster_dir / "processes.json").write_text(json.dumps([dead]))
    monkeypatch.setattr(node, "bridge_owner", lambda: str(cluster_dir))
    monkeypatch.setattr(node, "node_processes", lambda paths: [])
    made = paths.record.stat().st_mtime

    assert node.abandoned_node(lambda: made + 5) is None  # still starting
    assert node.abandoned_node(lambda: made + 61) == cluster_dir
    monkeypatch.setattr(node, "bridge_owner", lambda: str(tmp_path / "gone"))
    assert node.abandoned_node() == tmp_path / "gone"
    monkeypatch.setattr(node, "bridge_owner", lambda: str(cluster_dir))
    monkeypatch.setattr(node, "node_processes", lambda paths: [1234])  # a container's shim
    assert node.abandoned_node(lambda: made + 61) is None


def test_a_live_process_keeps_its_node_from_being_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster_dir = tmp_path / "cluster"
    NodePaths(cluster_dir / "node").root.mkdir(parents=True)
    me = os.readlink("/proc/self/exe")
    alive = {"name": "kubelet", "pid": os.getpid(), "binary": me, "log": "x"}
    (cluster_dir / "processes.json").write_text(json.dumps([alive]))
    monkeypatch.setattr(node, "bridge_owner", lambda: str(cluster_dir))
    monkeypatch.setattr(node, "node_processes", lambda paths: [])
    assert node.abandoned_node() is None


def test_rules_jumping_to_a_chain_are_found() -> None:
    rule = ["-A", "INPUT", "-m", "comment", "--comment", "x", "-j", "KUBE-FIREWALL"]
    assert node._jump_target(rule) == "KUBE-FIREWALL"
    assert node._jump_target(["-A", "KUBE-SERVICES", "-g", "KUBE-SVC-1"]) == "KUBE-SVC-1"
    assert node._jump_target(["-A", "INPUT", "-p", "tcp"]) is None


def test_untranslated_traffic_to_the_service_range_is_refused_from_host_and_pods() -> None:
    commands = node.service_guard_commands()
    chain = node.SERVICE_GUARD_CHAIN
    assert chain.startswith(node.NODE_CHAIN_PREFIXES)  # so teardown removes it and its jumps
    (rule,) = [c for c in commands if c[2:4] == ["-A", chain]]
    assert rule[rule.index("-d") + 1] == flags.SERVICE_CLUSTER_IP_RANGE
    # Only what kube-proxy did not translate: a synced Service must still be reachable.
    assert rule[rule.index("--ctstate") - 1:rule.index("--ctstate") + 2] == [
        "!", "--ctstate", "DNAT"]
    assert rule[-2:] == ["-j", "REJECT"]
    hooks = {c[3] for c in commands if c[2] == "-I" and node._jump_target(c[2:]) == chain}
    assert hooks == {"OUTPUT", "FORWARD"}


def test_mounts_are_unmounted_newest_first(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"1 0 0:1 / / rw - ext4 /dev/vda rw\n"
        f"2 1 0:2 / {root}/node/kubelet rw - ext4 /dev/vda rw\n"
        f"3 2 0:3 / {root}/node/kubelet/pods/a\\040b rw - tmpfs tmpfs rw\n"
        f"4 1 0:4 / {root}-other rw - tmpfs tmpfs rw\n"
    )
    assert node.mounts_under(root, mountinfo) == [
        f"{root}/node/kubelet/pods/a b",
        f"{root}/node/kubelet",
    ]


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("shop:1", "docker.io/library/shop:1"),
        ("djangoscale/app-base:dev", "docker.io/djangoscale/app-base:dev"),
        ("djangoscale/app", "docker.io/djangoscale/app:latest"),
        ("docker.io/djangoscale/pause:dev", "docker.io/djangoscale/pause:dev"),
        ("localhost/x/y:1", "localhost/x/y:1"),
        ("registry.example.com:5000/shop@sha256:ab", "registry.example.com:5000/shop@sha256:ab"),
    ],
)
def test_image_names_are_stored_as_cri_looks_them_up(name: str, full: str) -> None:
    assert node.normalized_image_name(name) == full
