"""The DjangoService's status fields other than conditions, from its children (pure)."""

from __future__ import annotations

from typing import Any

from djangoscale.budget import size_pool, unpooled_connections_for
from djangoscale.spec import DjangoService

# What `status.database.guard` says for each pooling mode.
GUARDS = {
    "pgbouncer": "each pod's pgbouncer holds at most poolSizePerPod server connections "
                 "(max_db_connections), sized so that every pod that can run at once fits",
    "pooler": "each pooler pod's pgbouncer holds at most poolSizePerPod server connections "
              "(max_db_connections), sized so that pooling.pooler.replicas.max pooler pods "
              "plus one surge pod fit",
    "django": "Django's pool in each worker process is sized so that every pod that can run "
              "at once fits",
    "none": "admitted only because every thread of every pod that can run at once fits",
    "external": "not guarded: with pooling.mode external the operator sizes no pool; your "
                "pooler outside the pod must keep this service under maxConnections",
}


def database_status(ds: DjangoService) -> dict[str, Any] | None:
    """`status.database`: the budget, how it is kept, and what it allows at max replicas."""
    if ds.database is None:
        return None
    status: dict[str, Any] = {
        "poolingMode": ds.pooling_mode,
        "maxConnections": ds.database.max_connections,
        "budget": ds.database.pool_budget,
        "guarded": ds.pooling_mode != "external",
        "guard": GUARDS[ds.pooling_mode],
    }
    if ds.uses_pgbouncer or ds.uses_pooler or ds.uses_django_pool:
        sizing = size_pool(ds)
        status.update(
            poolSizePerPod=sizing.pool_size_per_pod,
            maxClientConnPerPod=sizing.max_client_conn_per_pod,
            connectionsAtMaxReplicas=sizing.connections_at_max,
        )
    elif ds.pooling_mode == "none":
        status["connectionsAtMaxReplicas"] = unpooled_connections_for(ds)
    return status


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
    database = database_status(ds)
    if database is not None:
        status["database"] = database
    return status
