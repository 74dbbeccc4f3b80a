"""A real `helm install` and `helm upgrade` of the chart on the real node.

The operator image is built from the root Dockerfile (no Docker, no registry) and loaded into
the node; helm installs the chart as a user would, the operator pods run under the chart's
security context, and the APIService becomes Available through the chart's own Service
(kube-proxy routes the aggregator to the pods). An upgrade with a changed value keeps the
metrics API's certificate.

Two replicas, as the chart's default: both are Ready (readiness is the process's health), so
`helm upgrade --wait` returns and the PodDisruptionBudget allows a drain; the active peer
labels its own pod and the metrics API Service selects that label. Deleting the active pod
moves the label to the other, and the APIService stays or comes back Available.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale.contract import ACTIVE_PEER_LABEL
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.api import ApiClient
from tests.e2e.helpers import API, djangoservice, pod_is_ready
from tests.fixtures.polling import wait_for
from tests.tools.install_manifests import CHART, NAMESPACE, RELEASE, helm

OPERATOR = "djangoscale/operator:dev"
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io"
IMAGE_VALUES = ("--set", "image.repository=djangoscale/operator", "--set", "image.tag=dev")


@pytest.fixture(scope="module")
def operator_image(real_cluster: LocalCluster) -> list[str]:
    from djangoscale_dev.images import project

    archives = project.project_images(only={OPERATOR})
    return real_cluster.load_image(archives[OPERATOR])


def run_helm(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def release(real_cluster: LocalCluster, operator_image: list[str]) -> Iterator[ApiClient]:
    run_helm(real_cluster, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
             "--create-namespace", *IMAGE_VALUES)
    yield real_cluster.client()
    run_helm(real_cluster, "uninstall", RELEASE, "--namespace", NAMESPACE)


def operator_pods(api: ApiClient) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/name%3Ddjangoscale"
    return list(api.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")[
        "items"])


def running(api: ApiClient, count: int, revision: str | None = None) -> bool:
    """`count` operator pods Running (of `revision`) and Ready, standby or not."""
    pods = operator_pods(api)
    return (
        len(pods) == count
        and all(
            p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (revision is None
                 or p["metadata"]["labels"].get("controller-revision-hash") == revision)
            and pod_is_ready(p)
            for p in pods
        )
    )


def labelled_active(api: ApiClient) -> list[str]:
    """The operator pods that carry the active-peer label."""
    return sorted(p["metadata"]["name"] for p in operator_pods(api)
                  if p["metadata"].get("labels", {}).get(ACTIVE_PEER_LABEL) == "true"
                  and not p["metadata"].get("deletionTimestamp"))


def metrics_api_endpoints(api: ApiClient) -> list[str]:
    """The pods behind the metrics API Service (its EndpointSlices' ready endpoints)."""
    service = api.get(APISERVICE)["spec"]["service"]["name"]
    slices = api.get(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
                     f"?labelSelector=kubernetes.io/service-name%3D{service}")["items"]
    return sorted(e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
                  if (e.get("conditions") or {}).get("ready"))


def collected_service(api: ApiClient, namespace: str) -> None:
    """A DjangoService, so that the active operator runs a collector (its pods need not run:
    the operator image has no WSGI app, and nothing is pulled from a registry)."""
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    body = djangoservice(namespace, image=OPERATOR, imagePullPolicy="Never",
                         replicas={"min": 1, "max": 2})
    del body["spec"]["database"]
    api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices", body)


def apiservice_available(api: ApiClient) -> bool:
    live = api.get(APISERVICE)
    return any(c["type"] == "Available" and c["status"] == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


def serving_cert(api: ApiClient) -> bytes:
    secrets = api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]
    (tls,) = [s for s in secrets if s.get("type") == "kubernetes.io/tls"]
    return base64.b64decode(tls["data"]["tls.crt"])


def test_helm_install_then_upgrade_runs_the_operator_on_the_real_node(
    real_cluster: LocalCluster, release: ApiClient, tmp_path: Path
) -> None:
    api = release
    collected_service(api, "helm-e2e")
    wait_for("2 operator pods Running and Ready", lambda: running(api, 2), timeout=180)
    for pod in operator_pods(api):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["image"] == "djangoscale/operator:dev"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The highest index is the active peer (its priority); it alone is behind the metrics API.
    wait_for("the active peer labelled", lambda: labelled_active(api) == [f"{RELEASE}-1"],
             timeout=60)
    wait_for("the metrics API Service on the active peer only",
             lambda: metrics_api_endpoints(api) == [f"{RELEASE}-1"], timeout=60)
    pdb = api.get(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{RELEASE}")
    wait_for("the PodDisruptionBudget to allow a drain", lambda: api.get(
        f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{RELEASE}"
    )["status"].get("disruptionsAllowed") == 1, timeout=60)
    assert pdb["spec"]["maxUnavailable"] == 1
    # The aggregator reaches the operator pods through the chart's Service (kube-proxy).
    wait_for("the APIService Available", lambda: apiservice_available(api), timeout=120)
    service = api.get(APISERVICE)["spec"]["service"]
    assert service["namespace"] == NAMESPACE
    assert api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{service['name']}")["spec"][
        "type"] == "ClusterIP"
    cert = serving_cert(api)

    # --wait: helm returns only once every pod of the new revision is Ready (a standby that
    # never is would hang it until its timeout).
    started = time.monotonic()
    run_helm(real_cluster, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
             *IMAGE_VALUES, "--set", "podAnnotations.upgraded=yes", "--wait",
             "--timeout", "240s")
    print(f"helm upgrade --wait returned after {time.monotonic() - started:.1f}s")
    statefulset = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{RELEASE}")
    assert running(api, 2, statefulset["status"].get("updateRevision"))
    for pod in operator_pods(api):
        assert pod["metadata"]["annotations"]["upgraded"] == "yes"
    wait_for("the APIService Available after the upgrade", lambda: apiservice_available(api),
             timeout=120)
    wait_for("one active peer after the upgrade", lambda: len(labelled_active(api)) == 1,
             timeout=60)
    assert serving_cert(api) == cert


def test_deleting_the_active_operator_moves_the_label_and_the_metrics_api(
    real_cluster: LocalCluster, release: ApiClient
) -> None:
    api = release
    wait_for("2 operator pods Ready", lambda: running(api, 2), timeout=180)
    wait_for("one active peer", lambda: len(labelled_active(api)) == 1, timeout=60)
    (active,) = labelled_active(api)
    deleted_uid = next(p["metadata"]["uid"] for p in operator_pods(api)
                       if p["metadata"]["name"] == active)
    wait_for("the APIService Available", lambda: apiservice_available(api), timeout=120)
    started = time.monotonic()
    api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{active}")

    def new_holder() -> str | None:
        """The live operator pod, other than the deleted one, that holds the label."""
        holders = [p for p in operator_pods(api)
                   if p["metadata"].get("labels", {}).get(ACTIVE_PEER_LABEL) == "true"
                   and not p["metadata"].get("deletionTimestamp")
                   and p["metadata"]["uid"] != deleted_uid]
        return holders[0]["metadata"]["name"] if len(holders) == 1 else None

    # kopf leaves the peering on SIGTERM, so the standby usually takes over first; when the
    # StatefulSet's new pod of the same (higher) priority is up before the standby saw the
    # record go, that one takes the label instead. Either way one live pod holds it.
    wait_for("a live operator pod labelled as the active peer",
             lambda: new_holder() is not None, timeout=90, interval=0.2)
    took_over = time.monotonic() - started
    holder = new_holder()
    wait_for("the metrics API Service on the new active peer",
             lambda: holder in metrics_api_endpoints(api), timeout=60, interval=0.2)
    wait_for("the APIService Available after the takeover",
             lambda: apiservice_available(api), timeout=120)
    print(f"takeover: {holder} labelled {took_over:.1f}s after {active} was deleted")
    wait_for("2 operator pods Ready again", lambda: running(api, 2), timeout=180)
    wait_for("exactly one active peer, behind the metrics API Service",
             lambda: (len(labelled_active(api)) == 1
                      and metrics_api_endpoints(api) == labelled_active(api)), timeout=60)
    wait_for("the APIService Available at the end", lambda: apiservice_available(api),
             timeout=120)
