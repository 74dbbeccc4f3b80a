"""`helm uninstall` on the real local control plane: the APIService goes first, the CRD and the
apps stay (pods never restarted, through `helm install` again), everything else goes; then the
README's full removal, run as written.

The chart is installed with a real helm (built from Go modules) under the chart's default
names; the session's other modules install it with server-side apply (`chart_install`), so
those objects are removed first and the CRD is adopted by the release, as a user would.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale.spec import crd
from tests.e2e.helpers import djangoservice, ready, secret, start_operator
from tests.fixtures.polling import wait_for
from tests.tools import install_manifests
from tests.tools.chart_install import NAMESPACE, SERVICE_ACCOUNT, Api, token_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
RELEASE = install_manifests.RELEASE
CRD_NAME = crd()["metadata"]["name"]
APISERVICE = "v1beta2.custom.metrics.k8s.io"
SECONDS_STEADY = 10.0  # the apps are watched this long with no operator installed

pytestmark = pytest.mark.timeout(900)


def helm(cluster: Any, *args: str) -> str:
    result = subprocess.run([install_manifests.helm(), *args], capture_output=True, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
                            check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def helm_install(cluster: Any) -> None:
    helm(cluster, "install", RELEASE, str(install_manifests.CHART), "--namespace", NAMESPACE,
         "--create-namespace")


def chart_objects(admin: Api) -> list[dict[str, Any]]:
    docs = install_manifests.documents(install_manifests.template())
    return [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]


def exists(admin: Api, obj: dict[str, Any]) -> bool:
    metadata = obj["metadata"]
    return admin.get(obj["kind"], metadata.get("namespace"), metadata["name"]) is not None


@pytest.fixture(scope="module")
def admin(cluster) -> Api:
    return Api(cluster.kubeconfig)


@pytest.fixture(scope="module")
def released(cluster, kube, admin: Api) -> Iterator[list[dict[str, Any]]]:
    """The chart installed by helm; the CRD restored for the session's other modules after."""
    objects = chart_objects(admin)
    assert admin.get("APIService", None, APISERVICE) is None, "another test left its APIService"
    for obj in objects:  # installed by other modules with server-side apply, not by helm
        metadata = obj["metadata"]
        admin.delete(obj["kind"], metadata.get("namespace"), metadata["name"])
    wait_for("the server-side-applied chart objects to go",
             lambda: not any(exists(admin, obj) for obj in objects))
    # Adopt the CRD into the release, as Helm's docs tell users to.
    admin.call("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}",
               body={"metadata": {
                   "labels": {"app.kubernetes.io/managed-by": "Helm"},
                   "annotations": {"meta.helm.sh/release-name": RELEASE,
                                   "meta.helm.sh/release-namespace": NAMESPACE}}},
               content_type="application/merge-patch+json")
    helm_install(cluster)
    yield objects
    # The session's other modules expect the CRD they installed, and kopf's peering CRDs.
    for document in install_manifests.documents(install_manifests.template("--include-crds")):
        if document["kind"] == "CustomResourceDefinition":
            admin.apply(document)
    admin.apply(crd())
    wait_for("the CRD to be established again", lambda: established(admin))


def established(admin: Api) -> bool:
    live = admin.get("CustomResourceDefinition", None, CRD_NAME) or {}
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def app_namespace(admin: Api) -> Iterator[str]:
    name = f"e2e-uninstall-{uuid.uuid4().hex[:8]}"
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    if admin.get("Namespace", None, name) is not None:
        admin.delete("Namespace", None, name)


def app_pods(admin: Api, namespace: str) -> dict[str, str]:
    """Pod name -> uid of the app's web pods that are running."""
    pods = admin.call("GET", f"/api/v1/namespaces/{namespace}/pods",
                      query=[("labelSelector", "app.kubernetes.io/instance=shop")])["items"]
    return {pod["metadata"]["name"]: pod["metadata"]["uid"] for pod in pods
            if pod["status"].get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp")}


def run_operator(cluster: Any, admin: Api, directory: Path, log: str) -> Any:
    kubeconfig = token_kubeconfig(admin, cluster.kubeconfig, NAMESPACE, SERVICE_ACCOUNT,
                                  directory / f"{log}.kubeconfig")
    return start_operator(kubeconfig, directory / f"{log}.log")


def test_uninstall_keeps_the_apps_and_reinstall_restarts_no_pod(cluster, admin, released,
                                                                app_namespace, tmp_path):
    admin.apply(secret(app_namespace))
    with run_operator(cluster, admin, tmp_path, "before"):
        admin.apply(djangoservice(app_namespace, autoscaling={"enabled": False},
                                  replicas={"min": 2, "max": 2}))
        wait_for("Ready", lambda: ready(admin.api, app_namespace))
        pods = wait_for("two running pods",
                        lambda: found if len(found := app_pods(admin, app_namespace)) == 2
                        else None)
    deployment = admin.get("Deployment", app_namespace, "shop")
    assert deployment is not None

    output = helm(cluster, "uninstall", RELEASE, "--namespace", NAMESPACE, "--debug")
    deleted = re.findall(r'Starting delete for "[^"]+" (\w+)', output)
    print("helm uninstall deleted, in order:", deleted)
    assert deleted and deleted[0] == "APIService"
    assert set(deleted[1:]).isdisjoint({"APIService"})
    # Everything of the release is gone (the peering, RBAC, Secrets, the operator)...
    wait_for("the release's objects to go", lambda: not any(
        exists(admin, obj) for obj in released))
    # ...but the CRD, the DjangoService and its app stay, the pods untouched.
    assert established(admin)
    assert admin.get("DjangoService", app_namespace, "shop") is not None
    steady_until = time.monotonic() + SECONDS_STEADY
    while time.monotonic() < steady_until:
        assert app_pods(admin, app_namespace) == pods
        time.sleep(0.5)

    helm_install(cluster)
    with run_operator(cluster, admin, tmp_path, "after"):
        wait_for("the APIService back", lambda: admin.get("APIService", None, APISERVICE))
        time.sleep(3 * 3)  # three resyncs of the operator (DJANGOSCALE_RESYNC_SECONDS=3)
        assert ready(admin.api, app_namespace)
        assert app_pods(admin, app_namespace) == pods
    after = admin.get("Deployment", app_namespace, "shop")
    assert after is not None
    # Not even a new pod template: the same Deployment at the same generation.
    assert (after["metadata"]["uid"], after["metadata"]["generation"]) == (
        deployment["metadata"]["uid"], deployment["metadata"]["generation"])


def readme_full_removal() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- full-removal:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_full_removal_removes_everything(cluster, admin, released, app_namespace):
    commands = readme_full_removal()
    assert commands[0].startswith("helm uninstall")
    assert admin.get("DjangoService", app_namespace, "shop") is not None
    helm_dir = Path(install_manifests.helm()).parent
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "PATH": f"{helm_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        result = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                text=True, check=False, timeout=300)
        assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    assert admin.get("CustomResourceDefinition", None, CRD_NAME) is None
    assert admin.get("Namespace", None, NAMESPACE) is None
    assert admin.get("APIService", None, APISERVICE) is None
    # The app went with its DjangoService (garbage collection).
    wait_for("the app's Deployment to go",
             lambda: admin.get("Deployment", app_namespace, "shop") is None)
