"""Command lines of the control-plane processes, as pure functions of a `ClusterConfig`.

Kept apart from the code that starts processes so every flag is unit-tested, and so the one
place that says how this cluster differs from a kubeadm one is easy to read:
- everything listens on 127.0.0.1 and free ports; Services get addresses in 198.19.0.0/16;
- no leader election (one replica of each), short HPA sync period for fast tests;
- aggregated APIs work: the front-proxy flags are set as kubeadm sets them;
- with KWOK, the kubernetes.default Endpoints are not reconciled, since their only possible
  address would be 127.0.0.1, which Endpoints validation rejects (loopback range); with the
  real node the apiserver listens on the node's gateway instead, and its pods reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from djangoscale_dev.cluster.pki import FRONT_PROXY_CLIENT_CN, PkiPaths

LOOPBACK = "127.0.0.1"
# Inside 198.18.0.0/15 (RFC 2544 benchmarking) beside the real node's pods: kube-proxy routes
# it on the real node, and no private range is ever a target on the machines this runs on.
SERVICE_CLUSTER_IP_RANGE = "198.19.0.0/16"
# The `kubernetes` Service's ClusterIP (the range's first address): pods reach the apiserver
# there, so its serving cert names it.
KUBERNETES_SERVICE_IP = "198.19.0.1"
# Pod IPs are handed out from here, one /24 per node, so a test can bind a real process to a
# pod's IP on this machine.
POD_CIDR_PREFIX = "127.1"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


@dataclass(frozen=True)
class ClusterConfig:
    """Everything that decides the processes' flags."""

    dir: Path
    ports: Ports
    hpa_sync_period: str = "5s"
    hpa_downscale_stabilization: str = "30s"
    extra_controller_manager_flags: tuple[str, ...] = field(default=())
    # Where the apiserver listens: loopback, or the real node's gateway, where its pods reach
    # it (through the `kubernetes` Service).
    apiserver_address: str = LOOPBACK

    @property
    def pki(self) -> PkiPaths:
        return PkiPaths(self.dir / "pki")

    def kubeconfig(self, identity: str) -> Path:
        return self.dir / f"{identity}.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.apiserver_address}:{self.ports.apiserver}"


def node_pod_cidr(index: int) -> str:
    """The pod CIDR of the index-th fake node (0-based): 127.1.<index+1>.0/24."""
    if not 0 <= index < 254:
        raise ValueError(f"node index {index} out of range: at most 254 fake nodes")
    return f"{POD_CIDR_PREFIX}.{index + 1}.0/24"


def etcd_args(config: ClusterConfig) -> list[str]:
    return [
        "etcd",
        f"--data-dir={config.dir / 'etcd'}",
        f"--listen-client-url=http://{LOOPBACK}:{config.ports.etcd_client}",
        f"--listen-peer-url=http://{LOOPBACK}:{config.ports.etcd_peer}",
    ]


def apiserver_args(config: ClusterConfig) -> list[str]:
    pki = config.pki
    return [
        "apiserver",
        f"--etcd-servers=http://{LOOPBACK}:{config.ports.etcd_client}",
        f"--bind-address={config.apiserver_address}",
        f"--advertise-address={config.apiserver_address}",
        f"--secure-port={config.ports.apiserver}",
        f"--cert-dir={config.dir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.ca}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # The `kubernetes` Endpoints can hold the gateway, never 127.0.0.1 (loopback range).
        f"--endpoint-reconciler-type={'none' if config.apiserver_address == LOOPBACK else 'lease'}",
        # The real node registers no resolvable hostname; logs and exec go to its address.
        "--kubelet-preferred-address-types=InternalIP",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        # Aggregation layer (custom.metrics.k8s.io and friends), as kubeadm configures it.
        f"--requestheader-client-ca-file={pki.cert('front-proxy-ca')}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        "--enable-aggregator-routing=false",
        "--profiling=false",
    ]


def controller_manager_args(config: ClusterConfig) -> list[str]:
    pki = config.pki
    kubeconfig = config.kubeconfig("controller-manager")
    return [
        "controller-manager",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={config.ports.controller_manager}",
        f"--cert-dir={config.dir / 'controller-manager-certs'}",
        "--leader-elect=false",
        # Every controller that is on by default: deployment, replicaset, garbage collector,
        # HPA, namespace, serviceaccount + token, endpointslice, disruption (PDB), ...
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca}",
        f"--cluster-signing-cert-file={pki.ca}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--requestheader-client-ca-file={pki.cert('front-proxy-ca')}",
        f"--horizontal-pod-autoscaler-sync-period={config.hpa_sync_period}",
        f"--horizontal-pod-autoscaler-downscale-stabilization={config.hpa_downscale_stabilization}",
        "--kube-api-qps=100",
        "--kube-api-burst=200",
        "--profiling=false",
        *config.extra_controller_manager_flags,
    ]


def scheduler_args(config: ClusterConfig) -> list[str]:
    kubeconfig = config.kubeconfig("scheduler")
    return [
        "scheduler",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={config.ports.scheduler}",
        f"--cert-dir={config.dir / 'scheduler-certs'}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_args(config: ClusterConfig, kwok_config: Path) -> list[str]:
    return [
        f"--kubeconfig={config.kubeconfig('kwok')}",
        f"--config={kwok_config}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--node-ip={LOOPBACK}",
        f"--cidr={POD_CIDR_PREFIX}.0.0/24",
        f"--server-address={LOOPBACK}:{config.ports.kwok}",
        "--node-lease-duration-seconds=40",
    ]
