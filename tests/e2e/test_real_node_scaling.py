"""Zero lost requests through the Service on the real node while the HPA takes pods away, and
while the active operator dies.

The stack is `djangoscale dev`'s (`RealNodeStack`): the real node, the project's images,
PostgreSQL on the gateway, the operator installed by the chart (two replicas, one active), and
the dev example with the sample app. Load is `djangoscale load`'s open-loop generator from the
host through the Service's ClusterIP, so every request is counted whatever the server does.

- Scale-down: the kubelet's SIGTERM meets the launcher's drain, which starts at the preStop
  hook (readiness fails, keep-alive connections close) so kube-proxy drops the pod before it
  stops accepting.
- Failover: SIGKILL of the active operator's process. Its pod leaves the Service of the metrics
  API (only the leader is Ready), so the HPA reads no metric for a while and keeps its count;
  the next leader starts its windows from `status.rps`, so the count does not dip after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from djangoscale.contract import ACTIVE_PEER_LABEL
from djangoscale_dev import load
from djangoscale_dev.cluster.api import ApiClient
from djangoscale_dev.dev_real import (
    NAMESPACE,
    RELEASE,
    RealNodeStack,
    real_node_documents,
)
from djangoscale_dev.load import LoadSettings, Recorder, Step
from tests.e2e.helpers import API, container_init_pid, pod_is_ready
from tests.fixtures.polling import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "dev.yaml"
NAME, APP_NAMESPACE, MIN_REPLICAS = "shop", "default", 2
TARGET_RPS_PER_POD = 20
DEPLOYMENT = f"/apis/apps/v1/namespaces/{APP_NAMESPACE}/deployments/{NAME}"
HPA = f"/apis/autoscaling/v2/namespaces/{APP_NAMESPACE}/horizontalpodautoscalers/{NAME}"
OPERATOR_PODS = (f"/api/v1/namespaces/{NAMESPACE}/pods"
                 f"?labelSelector=app.kubernetes.io/name%3D{RELEASE}")


@pytest.fixture(scope="module")
def api(real_node_stack: RealNodeStack) -> ApiClient:
    """The dev example on the real node, Ready, with the HPA reading the pods' RPS."""
    stack = real_node_stack
    client = stack.cluster.client()
    assert stack.database is not None
    for document in real_node_documents(EXAMPLE, stack.database):
        kind, metadata = document["kind"], document["metadata"]
        path = (f"/api/v1/namespaces/{metadata['namespace']}/secrets/{metadata['name']}"
                if kind == "Secret" else
                f"/apis/{API}/namespaces/{metadata['namespace']}/djangoservices/"
                f"{metadata['name']}")
        client.apply(path, document)
    stack.wait_for_operator()
    wait_for("the example Ready on the real node", lambda: ready(client), timeout=240)
    wait_for("the HPA reading the pods' RPS", lambda: scaling_active(client), timeout=120)
    return client


def ready(api: ApiClient) -> bool:
    live = api.get(f"/apis/{API}/namespaces/{APP_NAMESPACE}/djangoservices/{NAME}")
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


def scaling_active(api: ApiClient) -> bool:
    return any(c["type"] == "ScalingActive" and c["status"] == "True"
               for c in (api.get(HPA).get("status") or {}).get("conditions") or [])


def service_url(api: ApiClient, path: str = "/items/") -> str:
    spec = api.get(f"/api/v1/namespaces/{APP_NAMESPACE}/services/{NAME}")["spec"]
    port = next(p["port"] for p in spec["ports"] if p["name"] == "http")
    return f"http://{spec['clusterIP']}:{port}{path}"


class Background(threading.Thread):
    """`djangoscale load`'s generator in a thread; `recorder` counts every request."""

    def __init__(self, url: str, steps: list[Step]) -> None:
        super().__init__(daemon=True)
        self.settings = LoadSettings(url, steps)
        self.recorder = Recorder(steps)

    def run(self) -> None:
        asyncio.run(load.run(self.settings, self.recorder))

    def total(self) -> dict[str, Any]:
        return self.recorder.total().summary()


def replicas(api: ApiClient) -> tuple[int, int, int]:
    """(HPA desired, Deployment spec.replicas, pods of the app not terminating)."""
    desired = int((api.get(HPA).get("status") or {}).get("desiredReplicas") or 0)
    spec = int(api.get(DEPLOYMENT)["spec"]["replicas"])
    pods = api.get(f"/api/v1/namespaces/{APP_NAMESPACE}/pods?labelSelector="
                   f"app.kubernetes.io/instance%3D{NAME},app.kubernetes.io/component%3Dweb")
    alive = sum(not p["metadata"].get("deletionTimestamp") for p in pods["items"])
    return desired, spec, alive


def watch(api: ApiClient, loader: Background, every: float = 1.0) -> list[tuple[float, ...]]:
    """(seconds, desired, spec.replicas, pods) once a second until the load ends."""
    seen: list[tuple[float, ...]] = []
    started = time.monotonic()
    while loader.is_alive():
        seen.append((round(time.monotonic() - started, 1), *replicas(api)))
        time.sleep(every)
    return seen


def at_rest(api: ApiClient) -> None:
    wait_for(f"back to {MIN_REPLICAS} pods",
             lambda: replicas(api) == (MIN_REPLICAS, MIN_REPLICAS, MIN_REPLICAS), timeout=240)


def test_pods_taken_away_under_load_fail_no_request(api: ApiClient) -> None:
    at_rest(api)
    # 6 pods' worth, then 1.5 pods' worth while the HPA takes 4 pods away (the example scales
    # down 20 s after its 30 s stable window has fallen).
    loader = Background(service_url(api), [Step(6 * TARGET_RPS_PER_POD, 45.0),
                                           Step(1.5 * TARGET_RPS_PER_POD, 120.0)])
    loader.start()
    seen = watch(api, loader)
    total = loader.total()
    print(f"scale-down under load: {total}; (s, desired, spec, pods): {seen}")
    peak = max(s[3] for s in seen)
    assert peak > MIN_REPLICAS + 1, seen
    during_low_step = [s for s in seen if s[0] >= 45.0]
    assert min(s[3] for s in during_low_step) < peak, "no pod was taken away under load"
    assert total["failed"] == 0, total
    assert total["ok"] == total["offered"]


def operator_pods(api: ApiClient) -> list[dict[str, Any]]:
    return list(api.get(OPERATOR_PODS)["items"])


def active_pods(api: ApiClient) -> list[dict[str, Any]]:
    return [p for p in operator_pods(api) if pod_is_ready(p)
            and (p["metadata"].get("labels") or {}).get(ACTIVE_PEER_LABEL) == "true"]


def test_the_active_operator_killed_under_load_drops_no_replica_and_no_request(
        api: ApiClient, real_node_stack: RealNodeStack) -> None:
    at_rest(api)
    # 2.5 pods' worth: the HPA asks for 3 and stays there while the rate wobbles (more load
    # than this saturates the 2 shared cores, and requests time out whatever the operator does).
    steady = 3
    loader = Background(service_url(api), [Step((steady - 0.5) * TARGET_RPS_PER_POD, 150.0)])
    loader.start()
    wait_for(f"{steady} pods ready under steady load",
             lambda: replicas(api) == (steady, steady, steady), timeout=90)
    time.sleep(5)
    # Both operator pods are Ready (the standby too): the active one carries the label.
    wait_for("one labelled active operator pod", lambda: len(active_pods(api)) == 1, timeout=60)
    (active,) = active_pods(api)
    restarts = active["status"]["containerStatuses"][0]["restartCount"]
    (status,) = active["status"]["containerStatuses"]
    os.kill(container_init_pid(real_node_stack.cluster, status), signal.SIGKILL)
    killed = time.monotonic()
    seen = watch(api, loader)
    total = loader.total()

    def leader_again() -> bool:
        pods = operator_pods(api)
        return any(pod_is_ready(p) for p in pods) and any(
            p["metadata"]["name"] == active["metadata"]["name"]
            and p["status"]["containerStatuses"][0]["restartCount"] > restarts for p in pods)

    wait_for("the killed operator restarted and a leader Ready", leader_again, timeout=120)
    print(f"operator SIGKILL under load, watched {time.monotonic() - killed:.0f}s after: "
          f"{total}; (s since the kill, desired, spec, pods): {seen}")
    assert len(seen) > 60, "the load ended too soon after the kill to watch the takeover"
    assert min(s[1] for s in seen) >= steady, seen
    assert min(s[2] for s in seen) >= steady, seen
    assert scaling_active(api)
    assert total["failed"] == 0, total
    assert total["ok"] == total["offered"]
