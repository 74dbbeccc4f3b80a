"""The Service in front of the web pods."""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata, selector_labels
from djangoscale.spec import DjangoService

# Clients reach the app on the plain HTTP port; the pods' own port (spec.port) may differ.
SERVICE_PORT = 80


def build_service(ds: DjangoService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(ds, ds.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ds),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }
