"""The chart on a live cluster, for the e2e tests: raw API calls, server-side apply of the
rendered chart, and a kubeconfig that authenticates as the chart's ServiceAccount.

Any e2e test can run the operator with exactly the chart's RBAC:

    kubeconfig = chart_install.operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import install_manifests
import yaml

from djangoscale.contract import API_VERSION
from djangoscale.k8s import KubernetesApi, object_path
from tests.fixtures.polling import wait_for

NAMESPACE = install_manifests.NAMESPACE
SERVICE_ACCOUNT = install_manifests.RELEASE  # the chart's fullname for release "djangoscale"
FIELD_MANAGER = "djangoscale-e2e-install"
API = API_VERSION


class Api:
    """The operator's API layer with one kubeconfig's credentials (admin, or the operator's
    token), addressed by kind alone (every kind the chart renders is in its table)."""

    def __init__(self, kubeconfig: Path):
        self.api = KubernetesApi(str(kubeconfig))

    def call(self, method: str, path: str, body: Any = None, query: list | None = None,
             content_type: str = "application/json") -> Any:
        return self.api.call(method, path, body=body, query=query, content_type=content_type)

    def path(self, obj: dict[str, Any], name: str | None = None) -> str:
        metadata = obj["metadata"]
        return object_path(obj.get("apiVersion"), obj["kind"], metadata.get("namespace"),
                           name or metadata["name"])

    def apply(self, obj: dict[str, Any], dry_run: bool = False) -> Any:
        """Server-side apply as `kubectl apply --server-side` does, rejecting unknown fields."""
        return self.api.apply(obj, field_manager=FIELD_MANAGER, strict=True, dry_run=dry_run)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self.api.get(None, kind, namespace, name)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self.api.delete(None, kind, namespace, name)

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
