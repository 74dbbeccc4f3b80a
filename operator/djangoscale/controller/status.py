"""The DjangoService's status fields other than conditions, from its children (pure)."""

from __future__ import annotations

from typing import Any

from djangoscale.budget import size_pool
from djangoscale.spec import DjangoService


def observed_status(
    ds: DjangoService,
    deployment: dict[str, Any] | None,
    hpa: dict[str, Any] | None,
) -> dict[str, Any]:
    """Status fields other than conditions."""
    deployment_status = (deployment or {}).get("status", {})
    status: dict[str, Any] = {
        "replicas": deployment_status.get("replicas", 0),
        "readyReplicas": deployment_status.get("readyReplicas", 0),
    }
    if hpa is not None:
        status["desiredReplicas"] = hpa.get("status", {}).get("desiredReplicas", 0)
    if ds.uses_pgbouncer or ds.uses_django_pool:
        sizing = size_pool(ds)
        assert ds.database is not None
        status["database"] = {
            "poolingMode": ds.pooling_mode,
            "poolSizePerPod": sizing.pool_size_per_pod,
            "maxClientConnPerPod": sizing.max_client_conn_per_pod,
            "connectionsAtMaxReplicas": sizing.connections_at_max,
            "maxConnections": ds.database.max_connections,
        }
    return status
