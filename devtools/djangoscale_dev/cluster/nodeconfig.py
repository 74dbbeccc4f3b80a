"""The real node's configuration files and command lines, as pure functions of its paths.

Kept apart from the code that runs them (`node.py`) so every setting is unit-tested, and so the
places where this node differs from a kubeadm one are in one file:
- containerd runs with a private root, state and socket under the cluster directory, and may
  not lower `oom_score_adj` (this machine forbids it: without `restrict_oom_score_adj` runc
  dies with "can't get final child's PID from pipe");
- the pause image is a local one (no registry), imported at start;
- the kubelet runs on cgroup v1 with the cgroupfs driver, no QoS cgroups, no swap check, no
  image garbage collection, no kernel-tunable protection and no cluster DNS;
- pods live on one bridge in 198.18.0.0/24 (RFC 2544 benchmarking range: no private range is
  ever a target here), its host side is the gateway where host services listen;
- kube-proxy (iptables mode) leaves conntrack and `route_localnet` sysctls alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "djangoscale-node"
POD_CIDR = "198.18.0.0/24"
# The host side of the pod bridge: pods reach host services (PostgreSQL, brokers) here.
GATEWAY = "198.18.0.1"
GATEWAY_PREFIX = 24
BRIDGE = "djangoscale0"
CNI_NETWORK = "djangoscale"
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
# Normalized the way CRI normalizes image names, so the imported name is the one it looks up.
PAUSE_IMAGE = "docker.io/djangoscale/pause:dev"
CONTAINERD_NAMESPACE = "k8s.io"
# Unix socket paths are limited to 104 bytes (containerd adds ".ttrpc"), and a pytest temp dir
# is longer than that: containerd's socket and the kubelet's root dir (which holds the
# kubelet's own sockets) live here, in a folder named by a hash of the cluster dir.
SOCKET_ROOT = Path("/run/djangoscale")


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    proxy_metrics: int
    proxy_healthz: int


@dataclass(frozen=True)
class NodePaths:
    """Everything of the real node lives under `<cluster dir>/node`."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def socket_dir(self) -> Path:
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return SOCKET_ROOT / digest

    @property
    def mount_roots(self) -> tuple[Path, Path]:
        """Where the node's mounts are: under the cluster dir, and the kubelet's root."""
        return (self.root.parent, self.socket_dir)

    @property
    def containerd_socket(self) -> Path:
        return self.socket_dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def containerd_opt(self) -> Path:
        return self.root / "containerd" / "opt"

    @property
    def task_bundles(self) -> Path:
        """Where containerd's runc shims keep each running container's bundle (config.json)."""
        return self.containerd_state / "io.containerd.runtime.v2.task" / CONTAINERD_NAMESPACE

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.socket_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def pause_archive(self) -> Path:
        return self.root / "pause.oci.tar"

    @property
    def record(self) -> Path:
        """What `up` changed outside the cluster directory, for `down` to undo."""
        return self.root / "record.json"


def containerd_config(paths: NodePaths) -> str:
    """containerd's config.toml (version 2, as containerd 1.6 reads it)."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = f'{cri[:-1]}.containerd.runtimes.runc]'
    return "\n".join(
        [
            "version = 2",
            f"root = {json.dumps(str(paths.containerd_root))}",
            f"state = {json.dumps(str(paths.containerd_state))}",
            "disabled_plugins = ["
            '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
            '"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]',
            "",
            "[grpc]",
            f"  address = {json.dumps(str(paths.containerd_socket))}",
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {json.dumps(str(paths.containerd_opt))}",
            "",
            cri,
            f"  sandbox_image = {json.dumps(PAUSE_IMAGE)}",
            # This machine forbids lowering oom_score_adj; CRI asks -998 for a sandbox.
            "  restrict_oom_score_adj = true",
            # Pod network namespaces under the state dir, not /var/run/netns: `down` finds
            # them among the cluster directory's mounts.
            "  netns_mounts_under_state_dir = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  disable_apparmor = true",
            f"{cri[:-1]}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            runc,
            '  runtime_type = "io.containerd.runc.v2"',
            f"{runc[:-1]}.options]",
            "  SystemdCgroup = false",
            # runc's own state beside containerd's, not in /run/containerd/runc.
            f"  Root = {json.dumps(str(paths.containerd_state / 'runc'))}",
            f"{cri[:-1]}.cni]",
            f"  bin_dir = {json.dumps(str(CNI_BIN_DIR))}",
            f"  conf_dir = {json.dumps(str(paths.cni_conf_dir))}",
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """bridge + host-local (its leases under the cluster dir), portmap, loopback. No masquerade:
    pods only talk to each other and to the host, never past it."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(paths: NodePaths, ports: NodePorts) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The host mounts cgroup v1 (a cgroup2 hierarchy beside it).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        # Locally imported images have no registry to come back from.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": GATEWAY,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "resolvConf": "",
        "podLogsDir": str(paths.pod_logs),
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        # The kubelet would otherwise set vm/overcommit_memory, kernel/panic & co. on the
        # host; `down` restores what `up` recorded either way.
        "protectKernelDefaults": False,
        "nodeStatusUpdateFrequency": "4s",
    }


def kubelet_args(paths: NodePaths, kubeconfig: Path) -> list[str]:
    return [
        "kubelet",
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_root / 'pki'}",
        # cAdvisor's own containerd client (container stats), else it dials the system socket.
        f"--containerd={paths.containerd_socket}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={GATEWAY}",
        "--v=1",
    ]


def kube_proxy_config(ports: NodePorts, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": GATEWAY,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        # 0 leaves the host's conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        # NodePorts on 127.0.0.1 would need route_localnet=1 on the host.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "0s", "syncPeriod": "30s"},
        "nodePortAddresses": [f"{GATEWAY}/32"],
    }


def kube_proxy_args(paths: NodePaths) -> list[str]:
    return ["kube-proxy", f"--config={paths.kube_proxy_config}", "--v=1"]


def containerd_args(paths: NodePaths) -> list[str]:
    return ["--config", str(paths.containerd_config)]
