"""The operator under many objects and a hard kill: everything converges, nothing doubles.

Its own module, with its own operator processes: the other operator e2e module's operator is
stopped by then, so what converges here is this module's operator's doing.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.e2e.helpers import API, djangoservice, secret, start_operator
from tests.fixtures.polling import wait_for

pytestmark = pytest.mark.e2e


def create_services(kube: Any, namespace: str, count: int) -> list[str]:
    kube.apply(secret(namespace))
    names = [f"shop-{index:03d}" for index in range(count)]
    for name in names:
        kube.apply(djangoservice(namespace, name=name, replicas={"min": 1, "max": 3}))
    return names


def ready_names(kube: Any, namespace: str) -> set[str]:
    """DjangoServices Ready at their current generation, with one list call."""
    items = kube.call("GET", f"/apis/{API}/namespaces/{namespace}/djangoservices")["items"]
    found = set()
    for item in items:
        status = item.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if (conditions.get("Ready", {}).get("status") == "True"
                and status.get("observedGeneration") == item["metadata"]["generation"]):
            found.add(item["metadata"]["name"])
    return found


def owned_counts(kube: Any, namespace: str, plural: str, group: str = "apps/v1") -> dict:
    prefix = "/api/v1" if group == "v1" else f"/apis/{group}"
    items = kube.call("GET", f"{prefix}/namespaces/{namespace}/{plural}")["items"]
    counts: dict[str, int] = {}
    for item in items:
        owners = item["metadata"].get("ownerReferences") or []
        key = owners[0]["name"] if owners else "<orphan>"
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_sigkill_mid_reconcile_then_restart_converges_without_duplicates(
    kube, cluster, namespace, tmp_path
):
    names = create_services(kube, namespace, 20)
    log = tmp_path / "operator.log"
    with start_operator(cluster.kubeconfig, log, "-n", namespace) as first:
        # Kill it once it has started on the objects but before it is through them.
        wait_for("the first Deployment", lambda: owned_counts(kube, namespace, "deployments"),
                 interval=0.05)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    created = len(owned_counts(kube, namespace, "deployments"))
    # The kill landed mid-reconcile: some Deployments made, not all (else the restart
    # proves nothing about resuming half-done work).
    assert 0 < created < 20, f"killed after {created} of 20 Deployments"
    with start_operator(cluster.kubeconfig, log, "-n", namespace):
        wait_for("all 20 Ready", lambda: ready_names(kube, namespace) == set(names),
                 timeout=240)
    print(f"\nkilled after {created} of 20 Deployments; all 20 Ready after the restart")
    deployments = owned_counts(kube, namespace, "deployments")
    services = owned_counts(kube, namespace, "services", group="v1")
    hpas = owned_counts(kube, namespace, "horizontalpodautoscalers", group="autoscaling/v2")
    replicasets = owned_counts(kube, namespace, "replicasets")
    assert deployments == dict.fromkeys(names, 1)
    assert services == dict.fromkeys(names, 1)
    assert hpas == dict.fromkeys(names, 1)
    # One ReplicaSet per Deployment: no spurious rollout from the restart.
    assert sorted(replicasets.values()) == [1] * 20
    assert "<orphan>" not in replicasets


def test_a_hundred_djangoservices_all_become_ready(kube, cluster, namespace, tmp_path):
    names = create_services(kube, namespace, 100)
    started = time.monotonic()
    with start_operator(cluster.kubeconfig, tmp_path / "operator.log", "-n", namespace):
        wait_for("all 100 Ready", lambda: ready_names(kube, namespace) == set(names),
                 timeout=480)
    print(f"\n100 DjangoServices Ready in {time.monotonic() - started:.1f} s")
    live = kube.call("GET", f"/apis/{API}/namespaces/{namespace}/djangoservices")["items"]
    assert len(live) == 100
