"""A real `helm install` and `helm upgrade` of the chart on the real node.

The operator image is built from the root Dockerfile (no Docker, no registry) and loaded into
the node; helm installs the chart as a user would, the operator pods run under the chart's
security context, and the APIService becomes Available through the chart's own Service
(kube-proxy routes the aggregator to the pods). An upgrade with a changed value keeps the
metrics API's certificate.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.api import ApiClient
from tests.e2e.helpers import API, djangoservice
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


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions", []))


def running(api: ApiClient, count: int, revision: str | None = None) -> bool:
    """`count` operator pods Running (of `revision`), and exactly one of them Ready."""
    pods = operator_pods(api)
    return (
        len(pods) == count
        and all(
            p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (revision is None
                 or p["metadata"]["labels"].get("controller-revision-hash") == revision)
            for p in pods
        )
        and sum(is_ready(p) for p in pods) == 1
    )


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
    wait_for("2 operator pods Running, the active one Ready", lambda: running(api, 2),
             timeout=180)
    for pod in operator_pods(api):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["image"] == "djangoscale/operator:dev"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The aggregator reaches the operator pods through the chart's Service (kube-proxy).
    wait_for("the APIService Available", lambda: apiservice_available(api), timeout=120)
    service = api.get(APISERVICE)["spec"]["service"]
    assert service["namespace"] == NAMESPACE
    assert api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{service['name']}")["spec"][
        "type"] == "ClusterIP"
    cert = serving_cert(api)

    run_helm(real_cluster, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
             *IMAGE_VALUES, "--set", "podAnnotations.upgraded=yes")
    statefulset = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{RELEASE}")
    wait_for(
        "every operator pod replaced by the upgrade",
        lambda: running(api, 2, api.get(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{RELEASE}"
        )["status"].get("updateRevision")),
        timeout=240,
    )
    for pod in operator_pods(api):
        assert pod["metadata"]["annotations"]["upgraded"] == "yes"
    assert statefulset["metadata"]["generation"] >= 1
    wait_for("the APIService Available after the upgrade", lambda: apiservice_available(api),
             timeout=120)
    assert serving_cert(api) == cert
