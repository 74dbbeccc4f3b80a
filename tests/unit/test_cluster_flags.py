"""Command lines, manifests and readiness checks of the local cluster, without starting it."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from pathlib import Path

import pytest

from djangoscale_dev.cluster import flags
from djangoscale_dev.cluster.apiservice import apiservice_manifests, service_name_for
from djangoscale_dev.cluster.local import (
    is_cluster_file,
    kwok_config_text,
    node_is_ready,
    node_manifest,
)


@pytest.fixture
def config(tmp_path: Path) -> flags.ClusterConfig:
    return flags.ClusterConfig(
        dir=tmp_path,
        ports=flags.Ports(2379, 2380, 6443, 10257, 10259, 10247),
        hpa_sync_period="3s",
        hpa_downscale_stabilization="1m",
    )


def as_dict(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args[1:]:
        key, _, value = arg.partition("=")
        assert key not in out, f"{key} given twice"
        out[key] = value
    return out


def all_args(config: flags.ClusterConfig) -> list[list[str]]:
    return [
        flags.etcd_args(config),
        flags.apiserver_args(config),
        flags.controller_manager_args(config),
        flags.scheduler_args(config),
        ["kwok", *flags.kwok_args(config, config.dir / "kwok.yaml")],
    ]


def test_every_listener_is_on_loopback(config: flags.ClusterConfig) -> None:
    for args in all_args(config):
        for key, value in as_dict(args).items():
            if key in ("--bind-address", "--advertise-address", "--node-ip"):
                assert ipaddress.ip_address(value).is_loopback, (key, value)
            if key.startswith("--listen-") or key == "--server-address":
                host = value.split("//")[-1].rsplit(":", 1)[0]
                assert ipaddress.ip_address(host).is_loopback, (key, value)


def test_with_the_real_node_the_apiserver_listens_on_its_gateway_for_pods(
    config: flags.ClusterConfig,
) -> None:
    assert as_dict(flags.apiserver_args(config))["--endpoint-reconciler-type"] == "none"
    real = dataclasses.replace(config, apiserver_address="198.18.0.1")
    api = as_dict(flags.apiserver_args(real))
    assert (api["--bind-address"], api["--advertise-address"]) == ("198.18.0.1", "198.18.0.1")
    # The `kubernetes` Service gets the gateway as its endpoint, so pods reach the apiserver.
    assert api["--endpoint-reconciler-type"] == "lease"
    assert real.server == "https://198.18.0.1:6443"
    assert ipaddress.ip_address(flags.KUBERNETES_SERVICE_IP) in ipaddress.ip_network(
        flags.SERVICE_CLUSTER_IP_RANGE
    )


def test_subcommands_and_ports(config: flags.ClusterConfig) -> None:
    assert [a[0] for a in all_args(config)[:4]] == [
        "etcd",
        "apiserver",
        "controller-manager",
        "scheduler",
    ]
    api = as_dict(flags.apiserver_args(config))
    assert api["--secure-port"] == "6443"
    assert api["--etcd-servers"] == "http://127.0.0.1:2379"
    assert config.server == "https://127.0.0.1:6443"


def test_apiserver_is_set_up_for_aggregated_apis(config: flags.ClusterConfig) -> None:
    api = as_dict(flags.apiserver_args(config))
    pki = config.pki
    assert api["--requestheader-client-ca-file"] == str(pki.cert("front-proxy-ca"))
    assert api["--proxy-client-cert-file"] == str(pki.cert("front-proxy-client"))
    assert api["--requestheader-allowed-names"] == "front-proxy-client"
    assert api["--client-ca-file"] == str(pki.ca)
    assert api["--service-account-signing-key-file"] == str(pki.sa_key)


def test_controller_manager_hpa_settings_follow_config(config: flags.ClusterConfig) -> None:
    cm = as_dict(flags.controller_manager_args(config))
    assert cm["--horizontal-pod-autoscaler-sync-period"] == "3s"
    assert cm["--horizontal-pod-autoscaler-downscale-stabilization"] == "1m"
    assert cm["--controllers"] == "*"
    assert cm["--kubeconfig"] == str(config.dir / "controller-manager.kubeconfig")


def test_node_pod_cidrs_are_loopback_and_distinct() -> None:
    cidrs = [ipaddress.ip_network(flags.node_pod_cidr(i)) for i in range(3)]
    assert all(c.subnet_of(ipaddress.ip_network("127.0.0.0/8")) for c in cidrs)
    assert len(set(cidrs)) == 3
    with pytest.raises(ValueError):
        flags.node_pod_cidr(254)


def test_node_manifest_is_managed_by_kwok() -> None:
    node = node_manifest(1)
    assert node["metadata"]["annotations"] == {flags.KWOK_NODE_ANNOTATION: "fake"}
    assert node["spec"]["podCIDR"] == "127.1.2.0/24"


@pytest.mark.parametrize(
    ("status", "taints", "ready"),
    [
        ("True", [], True),
        ("False", [], False),
        ("True", [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}], False),
        ("True", [{"key": "x", "effect": "PreferNoSchedule"}], True),
    ],
)
def test_node_is_ready(status: str, taints: list, ready: bool) -> None:
    node = {
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": status}]},
    }
    assert node_is_ready(node) is ready


def test_kwok_config_joins_stage_documents(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("kind: Stage\nmetadata: {name: b}\n")
    (tmp_path / "a.yaml").write_text("kind: Stage\nmetadata: {name: a}\n")
    text = kwok_config_text(tmp_path)
    assert text.index("name: a") < text.index("name: b")
    assert text.count("\n---\n") == 1


def test_apiservice_points_an_external_name_service_at_the_host() -> None:
    service, apiservice = apiservice_manifests(
        "custom.metrics.k8s.io", "v1beta2", 8443, ca_bundle=b"PEM"
    )
    assert service["spec"] == {"type": "ExternalName", "externalName": "127.0.0.1"}
    assert apiservice["metadata"]["name"] == "v1beta2.custom.metrics.k8s.io"
    assert apiservice["spec"]["service"] == {
        "name": service_name_for("custom.metrics.k8s.io"),
        "namespace": "default",
        "port": 8443,
    }
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == b"PEM"


def test_apiservice_needs_exactly_one_trust_setting() -> None:
    with pytest.raises(ValueError):
        apiservice_manifests("g.io", "v1", 1)
    with pytest.raises(ValueError):
        apiservice_manifests("g.io", "v1", 1, ca_bundle=b"x", insecure_skip_tls_verify=True)
    _, api = apiservice_manifests("g.io", "v1", 1, insecure_skip_tls_verify=True)
    assert api["spec"]["insecureSkipTLSVerify"] is True


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("pki", True),
        ("etcd", True),
        ("kubeconfig", True),
        ("scheduler.kubeconfig", True),
        ("apiserver-certs", True),
        ("processes.json", True),
        ("pyproject.toml", False),
        ("operator", False),
        ("logs.previous", False),
    ],
)
def test_reset_only_touches_what_up_writes(name: str, ours: bool) -> None:
    assert is_cluster_file(name) is ours
