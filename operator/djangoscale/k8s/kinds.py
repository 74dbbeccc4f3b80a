"""The one table of kinds to URL paths, for every kind the operator, the chart and the tests use.

A path is `/api/v1/...` for the core group and `/apis/<group>/<version>/...` for the others,
then `namespaces/<namespace>/` for a namespaced kind, then the plural.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from djangoscale.contract import API_VERSION, KIND, PLURAL


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True


KINDS: Final[tuple[Kind, ...]] = (
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "Pod", "pods"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "Event", "events"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("batch/v1", "Job", "jobs"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions",
         namespaced=False),
    Kind("apiregistration.k8s.io/v1", "APIService", "apiservices", namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings",
         namespaced=False),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False),
    Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings"),
    Kind(API_VERSION, KIND, PLURAL),
)
_BY_KEY: Final = {(kind.api_version, kind.kind): kind for kind in KINDS}
_BY_NAME: Final = {kind.kind: kind for kind in KINDS}


class UnknownKind(KeyError):
    """A kind missing from `KINDS`: add it there."""


def lookup(api_version: str | None, kind: str) -> Kind:
    """The table's entry; without an apiVersion, the kind's only entry."""
    found = _BY_NAME.get(kind) if api_version is None else _BY_KEY.get((api_version, kind))
    if found is None:
        raise UnknownKind(f"{api_version or '?'} {kind} is not in djangoscale.k8s.kinds.KINDS")
    return found


def collection_path(api_version: str | None, kind: str, namespace: str | None) -> str:
    entry = lookup(api_version, kind)
    prefix = "/api/v1" if entry.api_version == "v1" else f"/apis/{entry.api_version}"
    if entry.namespaced:
        return f"{prefix}/namespaces/{namespace or 'default'}/{entry.plural}"
    return f"{prefix}/{entry.plural}"


def object_path(api_version: str | None, kind: str, namespace: str | None, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"
