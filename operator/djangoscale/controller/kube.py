"""The one place that talks to the Kubernetes API (sync client; kopf runs sync handlers in threads).

Children are written with server-side apply under one field manager, so a re-apply of the same
object is a no-op (no new resourceVersion) and fields owned by others (the HPA's replicas) are
left alone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from djangoscale.spec import GROUP, PLURAL, VERSION

FIELD_MANAGER = "djangoscale"
logger = logging.getLogger(__name__)

# apiVersion, kind -> URL path segment (the plural) of the kinds the operator manages.
PLURALS = {
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    (f"{GROUP}/{VERSION}", "DjangoService"): PLURAL,
    ("v1", "Namespace"): "namespaces",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "customresourcedefinitions",
}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition"}


@functools.cache
def api_client() -> client.ApiClient:
    """In-cluster credentials in a pod, else $KUBECONFIG (or ~/.kube/config)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # Read $KUBECONFIG now: the client library reads it once, at import time.
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG")
        )
    return client.ApiClient()


def object_path(api_version: str, kind: str, namespace: str | None, name: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if kind in CLUSTER_SCOPED:
        return f"{prefix}/{PLURALS[(api_version, kind)]}/{name}"
    return f"{prefix}/namespaces/{namespace}/{PLURALS[(api_version, kind)]}/{name}"


def _call(
    method: str,
    path: str,
    body: Any = None,
    query_params: list[tuple[str, str]] | None = None,
    header_params: dict[str, str] | None = None,
) -> Any:
    """One request with the client's credentials; the JSON answer, or ApiException."""
    api = api_client()
    method, url, headers, body, _ = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query_params or [],
        header_params=header_params or {"Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
    response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    return json.loads(response.data) if response.data else None


def apply(obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply `obj` as the operator's field manager; returns the live object."""
    metadata = obj["metadata"]
    path = object_path(obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"])
    result: dict[str, Any] = _call(
        "PATCH",
        path,
        body=obj,
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
    )
    return result


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The live object, or None when it does not exist."""
    try:
        result: dict[str, Any] = _call(
            "GET",
            object_path(api_version, kind, namespace, name),
            header_params={"Accept": "application/json"},
        )
        return result
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in owners)


def list_controlled(
    api_version: str, kind: str, namespace: str, label_selector: str, owner_uid: str
) -> list[dict[str, Any]]:
    """Objects of a kind that carry the selector's labels AND are controlled by the owner."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{PLURALS[(api_version, kind)]}"
    result = _call("GET", path, query_params=[("labelSelector", label_selector)])
    return [item for item in result.get("items", []) if controlled_by(item, owner_uid)]


def delete_controlled(
    api_version: str, kind: str, namespace: str, name: str, owner_uid: str
) -> bool:
    """Delete a child only if this DjangoService controls it: never someone else's object."""
    live = get(api_version, kind, namespace, name)
    if live is None or not controlled_by(live, owner_uid):
        return False
    try:
        _call("DELETE", object_path(api_version, kind, namespace, name))
    except ApiException as error:
        if error.status != 404:
            raise
    return True


def patch_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    path = object_path(f"{GROUP}/{VERSION}", "DjangoService", namespace, name) + "/status"
    _call(
        "PATCH",
        path,
        body={"status": status},
        header_params={
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
    )


def scale(namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replicas through its scale subresource (as the HPA does)."""
    _call(
        "PATCH",
        object_path("apps/v1", "Deployment", namespace, name) + "/scale",
        body={"spec": {"replicas": replicas}},
        query_params=[("fieldManager", f"{FIELD_MANAGER}-initial-scale")],
        header_params={
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
    )
