"""The PodDisruptionBudget: node drains take a Deployment's pods down a few at a time.

One builder for the web pods and every Celery worker group.
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata, selector_labels
from djangoscale.contract import WEB_COMPONENT
from djangoscale.spec import DjangoService


def build_pdb(
    ds: DjangoService, name: str | None = None, component: str = WEB_COMPONENT,
    max_unavailable: int | str | None = None,
) -> dict[str, Any]:
    """The PDB of the pods of `component` (the web pods by default, named after the object);
    `max_unavailable` defaults to the spec's `disruption.maxUnavailable`."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(ds, name or ds.name, component),
        "spec": {
            "maxUnavailable": ds.max_unavailable if max_unavailable is None else max_unavailable,
            "selector": {"matchLabels": selector_labels(ds, component)},
        },
    }
