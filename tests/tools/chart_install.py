"""The chart on a live cluster, for the e2e tests: raw API calls, server-side apply of the
rendered chart, and a kubeconfig that authenticates as the chart's ServiceAccount.

Any e2e test can run the operator with exactly the chart's RBAC:

    kubeconfig = chart_install.operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import install_manifests
import yaml
from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from tests.fixtures.polling import wait_for

NAMESPACE = install_manifests.NAMESPACE
SERVICE_ACCOUNT = install_manifests.RELEASE  # the chart's fullname for release "djangoscale"
FIELD_MANAGER = "djangoscale-e2e-install"
API = "djangoscale.io/v1alpha1"

# kind -> (URL prefix, plural, namespaced) for every kind the chart renders.
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions",
                                 False),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "APIService": ("/apis/apiregistration.k8s.io/v1", "apiservices", False),
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings", False),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings", True),
    "DjangoService": (f"/apis/{API}", "djangoservices", True),
}




class Api:
    """Raw REST calls with one kubeconfig's credentials (admin, or the operator's token)."""

    def __init__(self, kubeconfig: Path):
        self.client: ApiClient = config.new_client_from_config(config_file=str(kubeconfig))

    def call(self, method: str, path: str, body: Any = None, query: list | None = None,
             content_type: str = "application/json") -> Any:
        method, url, headers, body, _ = self.client.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method, url, header_params=headers, body=body,
                                        _request_timeout=30)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else None

    def path(self, obj: dict[str, Any], name: str | None = None) -> str:
        prefix, plural, namespaced = KINDS[obj["kind"]]
        namespace = obj["metadata"].get("namespace")
        base = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
        return f"{base}/{name or obj['metadata']['name']}"

    def apply(self, obj: dict[str, Any], dry_run: bool = False) -> Any:
        """Server-side apply as `kubectl apply --server-side` does, rejecting unknown fields."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true"),
                 ("fieldValidation", "Strict")]
        if dry_run:
            query.append(("dryRun", "All"))
        return self.call("PATCH", self.path(obj), body=obj, query=query,
                         content_type="application/apply-patch+yaml")

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
        try:
            return self.call("GET", self.path(obj))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        obj = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
        try:
            self.call("DELETE", self.path(obj))
        except ApiException as error:
            if error.status != 404:
                raise

    def can(self, verb: str, resource: str, namespace: str = "", group: str = "",
            name: str = "", subresource: str = "") -> bool:
        """SelfSubjectAccessReview: may *these* credentials do it?"""
        attributes = {"verb": verb, "resource": resource, "group": group,
                      "namespace": namespace, "name": name, "subresource": subresource}
        review = self.call(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            body={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}}},
        )
        return bool(review["status"]["allowed"])


def token_kubeconfig(admin: Api, admin_kubeconfig: Path, namespace: str, account: str,
                     path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with a short-lived bound token."""
    request = admin.call(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 3600}},
    )
    source = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = source["clusters"][0]["cluster"]
    document = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": request["status"]["token"]}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(document))
    return path




def install_chart(admin: Api, *values: str, apply_apiservice: bool = False
                  ) -> list[dict[str, Any]]:
    """The chart (Helm-generated certificates) validated by the API server, then applied.

    The APIService stays a dry run unless asked: the e2e autoscaling tests register their own
    v1beta2.custom.metrics.k8s.io on the shared cluster.
    """
    docs = install_manifests.documents(install_manifests.template("--include-crds", *values))
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for crd in crds:
        admin.apply(crd)

    def established(name: str) -> bool:
        live = admin.get("CustomResourceDefinition", None, name) or {}
        # Right after creation the API server returns `conditions: null`.
        conditions = (live.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for crd in crds:
        name = crd["metadata"]["name"]
        wait_for(f"{name} established", lambda name=name: established(name))
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    # Every object passes the API server's schemas (strict: no unknown field) before any is
    # written.
    for obj in rest:
        admin.apply(obj, dry_run=True)
    for obj in rest:
        if obj["kind"] != "APIService" or apply_apiservice:
            admin.apply(obj)
    return docs


def operator_kubeconfig(admin_kubeconfig: Path, path: Path) -> Path:
    """Install the chart and return a kubeconfig for its ServiceAccount."""
    admin = Api(admin_kubeconfig)
    install_chart(admin)
    path.parent.mkdir(parents=True, exist_ok=True)
    return token_kubeconfig(admin, admin_kubeconfig, NAMESPACE, SERVICE_ACCOUNT, path)
