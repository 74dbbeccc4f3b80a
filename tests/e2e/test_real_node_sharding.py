"""Sharded RPS collection on the real node, with the chart's 2 operator replicas.

The stack is `djangoscale dev`'s (`RealNodeStack`) with the chart installed with
`operator.shardPort=8082`: the active replica (the highest index) sends the standby the pods of
its share every round, signed with the metrics API's key; the standby reads them and answers.
One DjangoService of PODS pods serves a light load through its ClusterIP.

What is read from the operator's own metrics port (`djangoscale.operator_metrics`):
- on the active replica, `djangoscale_operator_shard_assigned_pods{peer}` (the split of its
  latest round) and `djangoscale_operator_shard_pods_read_for_peer_total{peer}` (pods of a
  peer's share it read itself, the peer not answering);
- on the standby, `djangoscale_operator_shard_pods_read_total` (pods it read for the active).

Then the standby's pod is deleted under load: the HPA's value is sampled through the deletion,
the active replica takes the whole share back, and the StatefulSet's new pod takes its share
again. Last, the standby's process is frozen (SIGSTOP, its peering record left behind): the
active replica reads its share itself in the rounds it gets no answer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from djangoscale.autoscaling.sharding import owner_of
from djangoscale.contract import ACTIVE_PEER_LABEL, RPS_METRIC
from djangoscale_dev import load
from djangoscale_dev.cluster.api import ApiClient, ApiError
from djangoscale_dev.dev_real import NAMESPACE, RELEASE, RealNodeStack, on_real_node
from djangoscale_dev.live import parse_quantity
from djangoscale_dev.load import LoadSettings, Recorder, Step
from tests.e2e.conftest import real_node_stack_running
from tests.e2e.helpers import API, container_init_pid, pod_is_ready
from tests.fixtures.polling import wait_for

pytestmark = pytest.mark.timeout(1200)

NAME, APP_NAMESPACE, SECRET = "shards", "default", "shards-db"
SHARD_PORT, OPERATOR_METRICS_PORT = 8082, 8081  # the chart's operator.metricsPort
# Enough pods that each replica gets some (a split of 6 leaves one replica none 1 time in
# 32; the test then replaces a pod, see `split_between`).
PODS = 6
# A light load: 2 RPS a pod, the HPA's target far above, so it keeps PODS.
RATE = 2.0 * PODS
TARGET_RPS_PER_POD = 50
LOAD_SECONDS = 600.0  # longer than the module; the load thread is a daemon
STABLE_WINDOW = 20
SAMPLE_EVERY = 0.5
HPA = f"/apis/autoscaling/v2/namespaces/{APP_NAMESPACE}/horizontalpodautoscalers/{NAME}"
APP_PODS = (f"/api/v1/namespaces/{APP_NAMESPACE}/pods?labelSelector="
            f"app.kubernetes.io/instance%3D{NAME},app.kubernetes.io/component%3Dweb")
CUSTOM_METRIC = (f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{APP_NAMESPACE}/pods/*/"
                 f"{RPS_METRIC}?labelSelector=app.kubernetes.io/instance%3D{NAME}")
OPERATOR_PODS = (f"/api/v1/namespaces/{NAMESPACE}/pods"
                 f"?labelSelector=app.kubernetes.io/name%3D{RELEASE}")
ASSIGNED = "djangoscale_operator_shard_assigned_pods"
READ_FOR_ACTIVE = "djangoscale_operator_shard_pods_read_total"
READ_FOR_PEER = "djangoscale_operator_shard_pods_read_for_peer_total"


def djangoservice() -> dict[str, Any]:
    return {
        "apiVersion": API, "kind": "DjangoService",
        "metadata": {"name": NAME, "namespace": APP_NAMESPACE},
        "spec": {
            "image": "replaced by on_real_node",
            "wsgiApp": "sampleproject.wsgi:application",
            "server": {"type": "cherrypy", "threads": 4, "maxThreads": 4},
            "replicas": {"min": PODS, "max": PODS + 1},
            "autoscaling": {"targetRPSPerPod": TARGET_RPS_PER_POD,
                            "stableWindowSeconds": STABLE_WINDOW},
            # The least budget pgbouncer takes for PODS + 1 pods (and a surge) and 3 reserved.
            "database": {"secretName": SECRET, "maxConnections": 2 * (PODS + 2) + 3},
            "pgbouncer": {"enabled": True, "poolMode": "transaction"},
            "migrations": {"enabled": False},
        },
    }


class LoadThread(threading.Thread):
    """`djangoscale load`'s open-loop generator in a thread of its own, a new connection per
    request so kube-proxy spreads the requests over every pod."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        step = Step(RATE, LOAD_SECONDS)
        self.settings = LoadSettings(url, [step], keep_alive=False)
        self.recorder = Recorder([step])

    def run(self) -> None:
        asyncio.run(load.run(self.settings, self.recorder))


@pytest.fixture(scope="module")
def sharded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeStack]:
    with real_node_stack_running(tmp_path_factory, "--set",
                                 f"operator.shardPort={SHARD_PORT}") as running:
        yield running


@pytest.fixture(scope="module")
def api(sharded_stack: RealNodeStack) -> ApiClient:
    """The DjangoService's PODS pods Ready, serving the load, the HPA reading their RPS."""
    stack = sharded_stack
    client = stack.cluster.client()
    assert stack.database is not None
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": SECRET, "namespace": APP_NAMESPACE}, "stringData": {}}
    for document in on_real_node([secret, djangoservice()], stack.database):
        metadata = document["metadata"]
        path = (f"/api/v1/namespaces/{APP_NAMESPACE}/secrets/{metadata['name']}"
                if document["kind"] == "Secret" else
                f"/apis/{API}/namespaces/{APP_NAMESPACE}/djangoservices/{metadata['name']}")
        client.apply(path, document)
    stack.wait_for_operator()
    wait_for(f"{PODS} pods Ready", lambda: len(ready_pods(client)) == PODS, timeout=300)
    wait_for("2 operator pods Ready", lambda: len(operator_pods(client)) == 2, timeout=120)
    spec = client.get(f"/api/v1/namespaces/{APP_NAMESPACE}/services/{NAME}")["spec"]
    port = next(p["port"] for p in spec["ports"] if p["name"] == "http")
    LoadThread(f"http://{spec['clusterIP']}:{port}/sleep/?s=0.01").start()
    wait_for("the HPA reading the pods' RPS", lambda: hpa_value(client) is not None,
             timeout=120)
    return client


def is_ready(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod_is_ready(pod)


def ready_pods(api: ApiClient) -> dict[str, str]:
    """The app's Ready pods: name -> UID (the key the replicas shard on)."""
    return {p["metadata"]["name"]: p["metadata"]["uid"]
            for p in api.get(APP_PODS)["items"] if is_ready(p)}


def operator_pods(api: ApiClient) -> list[dict[str, Any]]:
    """The operator's Ready pods, the active one (the label) first."""
    pods = [p for p in api.get(OPERATOR_PODS)["items"] if is_ready(p)]
    return sorted(pods, key=lambda p: (p["metadata"].get("labels") or {}).get(
        ACTIVE_PEER_LABEL) != "true")


def active_and_standby(api: ApiClient) -> tuple[dict[str, Any], dict[str, Any]]:
    def labelled() -> tuple[dict[str, Any], dict[str, Any]] | None:
        pods = operator_pods(api)
        if len(pods) != 2 or (pods[0]["metadata"].get("labels") or {}).get(
                ACTIVE_PEER_LABEL) != "true":
            return None
        return pods[0], pods[1]

    found: tuple[dict[str, Any], dict[str, Any]] = wait_for(
        "an active and a standby operator pod", labelled, timeout=120)
    return found


def operator_metrics(pod: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The operator pod's own metrics: (sample name, peer label) -> value."""
    url = f"http://{pod['status']['podIP']}:{OPERATOR_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, sample.labels.get("peer", "")): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def hpa_value(api: ApiClient) -> float | None:
    """The per-pod average the HPA read last, or None."""
    for metric in (api.get(HPA).get("status") or {}).get("currentMetrics") or []:
        if metric.get("type") == "Pods":
            return parse_quantity(metric["pods"]["current"]["averageValue"])
    return None


def metric_values(api: ApiClient) -> dict[str, float]:
    """Every pod's value in the custom metrics API (what the HPA reads)."""
    items = api.get(CUSTOM_METRIC)["items"]
    return {i["describedObject"]["name"]: parse_quantity(i["value"]) or 0.0 for i in items}


def sample(api: ApiClient, active: dict[str, Any], started: float
           ) -> tuple[float, float | None, int, dict[tuple[str, str], float]]:
    """(seconds since `started`, the HPA's value, pods with a value in the custom metrics API,
    the active replica's own metrics); a failed read gives None, 0 and {}, printed."""
    try:
        own = operator_metrics(active)
        value, listed = hpa_value(api), metric_values(api)
    except (ApiError, OSError) as error:
        print(f"{time.monotonic() - started:.1f}s: {error}")
        value, listed, own = None, {}, {}
    return (round(time.monotonic() - started, 1), value, sum(v > 0 for v in listed.values()),
            own)


def split_between(api: ApiClient, peers: list[str]) -> dict[str, list[str]]:
    """Who reads which Ready pod (rendezvous hashing of the UIDs, as the replicas compute it),
    once every peer has at least one: while one has none, one pod of the other is deleted and
    its Deployment's new pod (a new UID) hashed again."""
    for _ in range(5):
        pods = wait_for(f"{PODS} pods Ready", lambda: (
            found if len(found := ready_pods(api)) == PODS else None), timeout=240)
        split: dict[str, list[str]] = {peer: [] for peer in peers}
        for name, uid in pods.items():
            split[owner_of(uid, peers)].append(name)
        if all(split.values()):
            return split
        print(f"every pod hashes to one replica ({split}): replacing one")
        api.delete(f"/api/v1/namespaces/{APP_NAMESPACE}/pods/{next(iter(pods))}")
        wait_for("the pod gone", lambda: len(ready_pods(api)) < PODS, timeout=60)
    raise AssertionError(f"no split of {PODS} pods with a share for each of {peers}")


def test_the_standby_reads_its_share_and_every_pod_has_a_value(api: ApiClient) -> None:
    active, standby = active_and_standby(api)
    me, peer = active["metadata"]["name"], standby["metadata"]["name"]
    split = split_between(api, [me, peer])
    expected = {me: len(split[me]), peer: len(split[peer])}
    # The active's latest round gives each replica the share the hashing says.
    wait_for("the active replica's split on its metrics port", lambda: {
        p: operator_metrics(active).get((ASSIGNED, p)) for p in expected} == expected,
        timeout=60)
    before = operator_metrics(active), operator_metrics(standby)
    time.sleep(10 * 2.0)  # about 10 rounds of the default 2 s scrape interval
    after = operator_metrics(active), operator_metrics(standby)
    read_by_standby = after[1][(READ_FOR_ACTIVE, "")] - before[1][(READ_FOR_ACTIVE, "")]
    read_back = (after[0].get((READ_FOR_PEER, peer), 0.0)
                 - before[0].get((READ_FOR_PEER, peer), 0.0))
    values = metric_values(api)
    value = hpa_value(api)
    print(f"split {split}; over 20 s the standby {peer} read {read_by_standby:.0f} pods "
          f"({expected[peer]} a round), the active {me} read {read_back:.0f} of them itself; "
          f"custom metrics API {values}; HPA per-pod value {value}")
    # About 10 rounds of its share each; fewer than 5 would mean rounds it did not read.
    assert read_by_standby >= 5 * expected[peer], (read_by_standby, expected)
    assert read_by_standby <= 12 * expected[peer], (read_by_standby, expected)
    assert read_back == 0, "the active replica read the standby's pods itself"
    assert sorted(values) == sorted(ready_pods(api))
    assert all(v > 0 for v in values.values()), values
    per_pod = RATE / PODS
    assert value is not None and 0.5 * per_pod <= value <= 1.5 * per_pod, value
    assert 0.5 * RATE <= sum(values.values()) <= 1.5 * RATE, values


def test_deleting_the_standby_keeps_the_hpa_value_and_its_share_goes_back(
        api: ApiClient) -> None:
    active, standby = active_and_standby(api)
    me, peer = active["metadata"]["name"], standby["metadata"]["name"]
    split = split_between(api, [me, peer])
    wait_for("the split on the active's metrics port", lambda: operator_metrics(active).get(
        (ASSIGNED, peer)) == len(split[peer]), timeout=60)
    before = hpa_value(api)
    assert before is not None
    # (seconds, HPA value, pods with a value in the metrics API, active's own share, the
    # standby's share, pods of the standby's share the active read itself)
    rows: list[tuple[float, float | None, int, float | None, float | None, float]] = []
    started = time.monotonic()
    api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{peer}")
    old_uid = standby["metadata"]["uid"]

    def new_standby() -> dict[str, Any] | None:
        return next((p for p in operator_pods(api) if p["metadata"]["name"] == peer
                     and p["metadata"]["uid"] != old_uid), None)

    took_back = rejoined = None
    while time.monotonic() - started < 180:
        t, value, valued, own = sample(api, active, started)
        rows.append((t, value, valued, own.get((ASSIGNED, me)),
                     own.get((ASSIGNED, peer)), own.get((READ_FOR_PEER, peer), 0.0)))
        if took_back is None and own.get((ASSIGNED, me)) == PODS:
            took_back = t
        if took_back is not None and own.get((ASSIGNED, peer)) and new_standby() is not None:
            rejoined = t
            break
        time.sleep(SAMPLE_EVERY)
    back = new_standby()
    print(f"standby {peer} deleted; HPA value before {before}; took back at {took_back}s, "
          f"rejoined at {rejoined}s; (s, HPA value, pods with a value, active's share, "
          f"standby's share, standby's pods read by the active): {rows}")
    values = [r[1] for r in rows]
    assert all(v is not None for v in values), rows
    assert min(v for v in values if v is not None) >= 0.5 * before, rows
    assert all(r[2] == PODS for r in rows), rows
    assert took_back is not None, "the active replica never read every pod itself"
    assert rejoined is not None and back is not None, "the new standby never took a share"
    wait_for("the new standby reading its share", lambda: operator_metrics(back).get(
        (READ_FOR_ACTIVE, ""), 0.0) >= len(split[peer]), timeout=60)


def test_a_frozen_standby_has_its_share_read_by_the_active_in_the_same_round(
        api: ApiClient, sharded_stack: RealNodeStack) -> None:
    """SIGSTOP: the standby stops answering with its process, its port and its peering record
    in place, as on a node lost without notice. The active replica's request for the share
    times out, it reads those pods itself in that round and leaves the peer out for a while;
    once the standby runs again (SIGCONT) it takes its share back. (Not SIGKILL: the kubelet
    restarts the container at once, and the new process can answer before the active's next
    round, leaving nothing for the active to read.)"""
    active, standby = active_and_standby(api)
    me, peer = active["metadata"]["name"], standby["metadata"]["name"]
    split = split_between(api, [me, peer])
    wait_for("the split on the active's metrics port", lambda: operator_metrics(active).get(
        (ASSIGNED, peer)) == len(split[peer]), timeout=60)
    before, read_back = hpa_value(api), operator_metrics(active).get((READ_FOR_PEER, peer), 0.0)
    read_by_standby = operator_metrics(standby).get((READ_FOR_ACTIVE, ""), 0.0)
    assert before is not None
    (status,) = standby["status"]["containerStatuses"]
    pid = container_init_pid(sharded_stack.cluster, status)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    # (seconds, HPA value, pods with a value, standby's pods read by the active since the
    # freeze, the standby's share in the active's latest round)
    rows: list[tuple[float, float | None, int, float, float | None]] = []
    left = rejoined = None
    try:
        while time.monotonic() - started < 120:
            t, value, valued, own = sample(api, active, started)
            share = own.get((ASSIGNED, peer))
            rows.append((t, value, valued,
                         own.get((READ_FOR_PEER, peer), read_back) - read_back, share))
            if own and share is None and left is None:
                left = t  # out of the assignment, its share on the active replica
                os.kill(pid, signal.SIGCONT)
            if left is not None and share:
                rejoined = t  # the standby, running again, in the assignment again
                break
            time.sleep(SAMPLE_EVERY)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"standby {peer} frozen; HPA value before {before}; left the assignment at {left}s, "
          f"back in it at {rejoined}s; (s, HPA value, pods with a value, standby's pods read "
          f"by the active, standby's share): {rows}")
    assert max(r[3] for r in rows) >= len(split[peer]), (
        "the active never read the frozen standby's share")
    values = [r[1] for r in rows]
    assert all(v is not None for v in values), rows
    assert min(v for v in values if v is not None) >= 0.5 * before, rows
    assert all(r[2] == PODS for r in rows), rows
    assert left is not None, "the frozen standby was never left out of the assignment"
    assert rejoined is not None, "the standby never took its share again"
    (again,) = [p for p in operator_pods(api) if p["metadata"]["name"] == peer]
    if again["status"]["containerStatuses"][0]["restartCount"] > status["restartCount"]:
        read_by_standby = 0.0  # its liveness probe failed meanwhile: a new process counts
    wait_for("the standby reading its share again", lambda: operator_metrics(again).get(
        (READ_FOR_ACTIVE, ""), 0.0) - read_by_standby >= len(split[peer]), timeout=60)
