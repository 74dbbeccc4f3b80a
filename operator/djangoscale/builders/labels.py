"""The labels and owner reference every child carries, so kubectl, GC and the operator agree."""

from __future__ import annotations

from typing import Any

from djangoscale.spec import GROUP, KIND, VERSION, DjangoService

MANAGED_BY = "djangoscale"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"


def selector_labels(ds: DjangoService, component: str = "web") -> dict[str, str]:
    """The labels a selector matches: stable for the life of the object."""
    return {
        "app.kubernetes.io/name": "django",
        INSTANCE_LABEL: ds.name,
        COMPONENT_LABEL: component,
    }


def common_labels(ds: DjangoService, component: str = "web") -> dict[str, str]:
    return {**selector_labels(ds, component), MANAGED_BY_LABEL: MANAGED_BY}


def owner_reference(ds: DjangoService) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": ds.name,
        "uid": ds.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ds: DjangoService, name: str, component: str = "web") -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ds.namespace,
        "labels": common_labels(ds, component),
    }
    # Rendered offline there is no uid yet; an ownerReference without one would be refused.
    if ds.uid:
        metadata["ownerReferences"] = [owner_reference(ds)]
    return metadata
