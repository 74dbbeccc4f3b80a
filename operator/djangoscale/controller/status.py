"""What the DjangoService's status says, computed from its children's observed state (pure)."""

from __future__ import annotations

from typing import Any

from djangoscale.builders.pgbouncer import size_pool
from djangoscale.builders.workers import GEVENT_CONDITION, gevent_warning
from djangoscale.controller.conditions import Condition, with_kstatus
from djangoscale.spec import DjangoService


def rolled_out(deployment: dict[str, Any]) -> bool:
    """The Deployment's controller saw its latest spec and every pod it wants is up to date."""
    status = deployment.get("status", {})
    desired = deployment.get("spec", {}).get("replicas", 0)
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    return bool(
        observed
        and status.get("updatedReplicas", 0) == desired
        and status.get("availableReplicas", 0) >= desired
    )


def rollout_conditions(
    ds: DjangoService,
    deployment: dict[str, Any] | None,
    worker_deployments: dict[str, dict[str, Any] | None] | None = None,
) -> list[Condition]:
    """Ready when the web Deployment and every worker group's Deployment have rolled out."""
    if deployment is None:
        return with_kstatus([
            Condition("Ready", "False", "Creating", "the Deployment does not exist yet"),
            Condition("Progressing", "True", "Creating", "creating the Deployment"),
            Condition("Degraded", "False", "Creating", "no failure observed"),
        ])
    status = deployment.get("status", {})
    desired = deployment.get("spec", {}).get("replicas", 0)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    by_type = {item["type"]: item for item in status.get("conditions", [])}

    failure = None
    progressing = by_type.get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        failure = ("ProgressDeadlineExceeded", progressing.get("message", "rollout stalled"))
    replica_failure = by_type.get("ReplicaFailure", {})
    if replica_failure.get("status") == "True":
        failure = ("ReplicaFailure", replica_failure.get("message", "pods cannot be created"))

    counts = f"{available}/{desired} pods available, {updated} up to date"
    done = rolled_out(deployment)
    enough = available >= ds.min_replicas
    pending = sorted(
        name for name, live in (worker_deployments or {}).items()
        if live is None or not rolled_out(live)
    )
    if done and enough and pending:
        message = f"{counts}; worker Deployment(s) still rolling out: {', '.join(pending)}"
        ready = Condition("Ready", "False", "WorkersRollingOut", message)
        progress = Condition("Progressing", "True", "WorkersRollingOut", message)
    elif done and enough:
        ready = Condition("Ready", "True", "Available", counts)
        progress = Condition("Progressing", "False", "RolloutComplete", counts)
    else:
        reason = "RollingOut" if not done else "ScalingUp"
        ready = Condition("Ready", "False", reason, counts)
        progress = Condition("Progressing", "True", reason, counts)
    if failure:
        degraded = Condition("Degraded", "True", failure[0], failure[1])
        progress = Condition("Progressing", "False", failure[0], failure[1])
    else:
        degraded = Condition("Degraded", "False", "AsExpected", "no failure observed")
    return with_kstatus([ready, progress, degraded])


def worker_conditions(ds: DjangoService) -> list[Condition]:
    """`GeventWorkers`: True (a warning) while a worker group opted into gevent."""
    if not ds.workers:
        return []
    warning = gevent_warning(ds)
    if warning is not None:
        return [Condition(GEVENT_CONDITION, "True", *warning)]
    return [Condition(GEVENT_CONDITION, "False", "NativeThreads", "no worker group runs gevent")]


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
