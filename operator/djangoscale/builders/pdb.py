"""The PodDisruptionBudget: node drains take web pods down a few at a time."""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata, selector_labels
from djangoscale.spec import DjangoService


def build_pdb(ds: DjangoService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(ds, ds.name),
        "spec": {
            "maxUnavailable": ds.max_unavailable,
            "selector": {"matchLabels": selector_labels(ds)},
        },
    }
