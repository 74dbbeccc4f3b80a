"""End-to-end tests run against the real local control plane, started once per session.

Every test under tests/e2e is marked `e2e`, so `pytest -m "not e2e"` runs the fast suite
alone. The session cluster comes from the same launcher as `djangoscale cluster up`, with KWOK
fake nodes (tests bind hand-started processes to their 127.1.x pod IPs, and some need hundreds
of pods); its directory is a pytest temp dir (logs kept for post-mortems) unless
DJANGOSCALE_E2E_CLUSTER_DIR names one, and a cluster already running there is reused and left
running. Tests of the real node (kubelet, containerd, CNI, kube-proxy) get their own cluster
per module from `real_cluster`: only one real node can run on a machine at a time, so the
fixture holds an exclusive lock on REAL_NODE_LOCK while its node runs (two pytest runs on one
machine take turns instead of fighting over the bridge and the pod range).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale.spec import crd
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.node import missing_for_real_node
from djangoscale_dev.dev_real import RealNodeStack, host_lacks_for_real_node, real_node_lock
from tests.e2e.helpers import HPA_SYNC_PERIOD
from tests.fixtures import services
from tests.fixtures.polling import wait_for

E2E_DIR = Path(__file__).resolve().parent
NODES = 2
REAL_NODE_LOCK = Path("/run/lock/djangoscale-real-node.lock")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only this folder's: mark just ours.
    for item in items:
        if E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A running local cluster with `NODES` fake nodes; `.kubeconfig` is its admin kubeconfig."""
    wanted = os.environ.get("DJANGOSCALE_E2E_CLUSTER_DIR")
    directory = Path(wanted) if wanted else tmp_path_factory.mktemp("cluster")
    local = LocalCluster(directory, hpa_sync_period=f"{HPA_SYNC_PERIOD}s")
    reused = local.running() is not None
    local.up(nodes=NODES, node="kwok")
    try:
        yield local
    finally:
        if not reused:
            local.down()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of this module's own with the real node; taken apart (containers, mounts,
    network namespaces, bridge, iptables chains, processes) when the module ends, also after
    a failure."""
    REAL_NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(REAL_NODE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Checked under the lock: a node another run holds is gone by then, not a skip.
        services.require(missing_for_real_node())
        local = LocalCluster(tmp_path_factory.mktemp("real-node"), hpa_sync_period="2s")
        try:
            local.up(node="real")
            yield local
        finally:
            local.down()


@pytest.fixture(scope="module")
def real_node_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeStack]:
    """`djangoscale dev`'s stack for this module (the real node, the project's images,
    PostgreSQL on the gateway, the chart's operator), under the real-node lock, with
    KUBECONFIG pointing at it while the module runs."""
    with real_node_stack_running(tmp_path_factory) as running:
        yield running


@contextlib.contextmanager
def real_node_stack_running(tmp_path_factory: pytest.TempPathFactory,
                            *chart_values: str) -> Iterator[RealNodeStack]:
    """`real_node_stack`, with the chart installed with `chart_values` (helm arguments)."""
    services.require(host_lacks_for_real_node())
    with real_node_lock(), RealNodeStack(tmp_path_factory.mktemp("dev") / "cluster",
                                         hpa_sync_period="2s", emit=print,
                                         chart_values=chart_values) as running:
        kubeconfig = running.up()
        # For this module only: the session's KWOK cluster is everyone else's KUBECONFIG.
        before = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        try:
            yield running
        finally:
            if before is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = before


@pytest.fixture(scope="session")
def kube(cluster) -> Iterator[Any]:
    """The operator's own API layer, pointed at the local cluster, with the CRD installed."""
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    from djangoscale.k8s import KubernetesApi

    kube_module = KubernetesApi(str(cluster.kubeconfig))
    kube_module.apply(crd())

    def established() -> bool:
        live = kube_module.get(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", None, crd()["metadata"]["name"]
        )
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in ((live or {}).get("status") or {}).get("conditions") or []
        )

    wait_for("the CRD to be established", established)
    yield kube_module


@pytest.fixture
def namespace(kube) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.call("DELETE", f"/api/v1/namespaces/{name}")
