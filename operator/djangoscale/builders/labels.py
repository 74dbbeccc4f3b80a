"""The labels and owner reference every child carries, so kubectl, GC and the operator agree."""

from __future__ import annotations

from typing import Any

from djangoscale.contract import (
    API_VERSION,
    APP_NAME,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    WEB_COMPONENT,
)
from djangoscale.spec import DjangoService


def selector_labels(ds: DjangoService, component: str = WEB_COMPONENT) -> dict[str, str]:
    """The labels a selector matches: stable for the life of the object."""
    return {
        NAME_LABEL: APP_NAME,
        INSTANCE_LABEL: ds.name,
        COMPONENT_LABEL: component,
    }


def common_labels(ds: DjangoService, component: str = WEB_COMPONENT) -> dict[str, str]:
    return {**selector_labels(ds, component), MANAGED_BY_LABEL: MANAGED_BY}


def owner_reference(ds: DjangoService) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ds.name,
        "uid": ds.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ds: DjangoService, name: str, component: str = WEB_COMPONENT) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": ds.namespace,
        "labels": common_labels(ds, component),
    }
    # Rendered offline there is no uid yet; an ownerReference without one would be refused.
    if ds.uid:
        metadata["ownerReferences"] = [owner_reference(ds)]
    return metadata
