"""Status conditions, kept as the API conventions ask: keyed by type, with transition times.

Every condition the operator writes is decided here, except `MetricsAvailable`, whose inputs
are the RPS collector's own reading (`autoscaling.collector.metrics_condition`).

`Ready`, `Progressing` and `Degraded` are always present (Unknown at first), so Flux kstatus and
Argo CD can tell "not yet" from "failed". Pure: the children's observed state comes in as dicts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Final

from djangoscale.spec import DjangoService

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")
# Written by the RPS collector, beside the reconciler's conditions.
METRICS_AVAILABLE: Final = "MetricsAvailable"
# Degraded's reason while the pods' pgbouncers hold more server connections than the budget.
BUDGET_EXCEEDED: Final = "BudgetExceeded"
# Written by the RPS collector with pgbouncer: True while the database ceiling holds.
DATABASE_SATURATED: Final = "DatabaseSaturated"
CLIENTS_WAITING: Final = "ClientsWaiting"
# True (a warning) while a worker group opted into gevent.
GEVENT_WORKERS: Final = "GeventWorkers"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: list[dict[str, Any]],
    current: list[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The new conditions list; a condition keeps its lastTransitionTime unless status changed."""
    old = {item.get("type"): item for item in previous or []}
    merged = []
    for condition in current:
        before = old.get(condition.type, {})
        changed = before.get("status") != condition.status
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    # Conditions of other types (MetricsAvailable, ...) are owned by other writers: keep them.
    known = {condition.type for condition in current}
    merged += [item for item in previous or [] if item.get("type") not in known]
    # One order whoever writes, so two writers never flap the list (and the resourceVersion).
    return sorted(merged, key=condition_order)


def condition_order(item: dict[str, Any]) -> tuple[int, str]:
    type_ = str(item.get("type"))
    rank = CONDITION_TYPES.index(type_) if type_ in CONDITION_TYPES else len(CONDITION_TYPES)
    return rank, type_


def with_kstatus(conditions: list[Condition]) -> list[Condition]:
    """Add the two abnormal-true conditions Flux's kstatus reads: Reconciling mirrors
    Progressing, Stalled mirrors Degraded (kstatus ignores both of ours)."""
    by_type = {condition.type: condition for condition in conditions}
    extra = []
    for ours, theirs in (("Progressing", "Reconciling"), ("Degraded", "Stalled")):
        if ours in by_type:
            source = by_type[ours]
            extra.append(Condition(theirs, source.status, source.reason, source.message))
    return conditions + extra


def failed(reason: str, message: str) -> list[Condition]:
    """The object cannot be run as written: nothing will change until someone edits it."""
    return with_kstatus(
        [
            Condition("Ready", "False", reason, message),
            Condition("Progressing", "False", reason, message),
            Condition("Degraded", "True", reason, message),
        ]
    )


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((item for item in conditions or [] if item.get("type") == type_), None)


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


def budget_exceeded(
    budget: int | None, server_connections: int | None, pods: int | None
) -> tuple[str, str] | None:
    """(reason, message) of `Degraded=True` while the pods' pgbouncers hold more server
    connections than the budget. The sizing should make this impossible; if it happens the
    user must know."""
    if budget is None or server_connections is None or server_connections <= budget:
        return None
    return (
        BUDGET_EXCEEDED,
        f"{server_connections} server connections held by the pgbouncers of {pods} pods "
        f"(SHOW POOLS) exceed the budget of {budget} (spec.database.maxConnections minus "
        "reservedConnections): PostgreSQL may refuse connections. Look for pods holding "
        "their pool while they terminate, or a pool size changed outside the operator.",
    )


def live_budget_exceeded(ds: DjangoService, live_status: dict[str, Any]) -> tuple[str, str] | None:
    """`budget_exceeded` from the figures the collector last wrote into `status.database`."""
    database = live_status.get("database") or {}
    if ds.database is None or not ds.uses_pgbouncer:
        return None
    return budget_exceeded(ds.database.pool_budget, database.get("serverConnections"),
                           database.get("podsReporting"))


def degraded(reason: str, message: str) -> list[Condition]:
    """`Degraded=True` (and kstatus' `Stalled`) for a failure found outside the rollout."""
    return with_kstatus([Condition("Degraded", "True", reason, message)])


def not_degraded() -> list[Condition]:
    return with_kstatus([Condition("Degraded", "False", "AsExpected", "no failure observed")])


def overriding(conditions: list[Condition], replacements: list[Condition]) -> list[Condition]:
    """`conditions` with the entries of the same type replaced."""
    types = {c.type for c in replacements}
    return [c for c in conditions if c.type not in types] + replacements


def worker_conditions(ds: DjangoService) -> list[Condition]:
    """`GeventWorkers`: True (a warning) while a worker group opted into gevent."""
    if not ds.workers:
        return []
    warning = gevent_warning(ds)
    if warning is not None:
        return [Condition(GEVENT_WORKERS, "True", *warning)]
    return [Condition(GEVENT_WORKERS, "False", "NativeThreads", "no worker group runs gevent")]


def gevent_warning(ds: DjangoService) -> tuple[str, str] | None:
    """(reason, message) of the `GeventWorkers` condition when a group opted into gevent."""
    groups = [group.name for group in ds.workers if group.pool == "gevent"]
    if not groups:
        return None
    message = (
        f"worker group(s) {', '.join(groups)} run gevent (allowGevent): monkey patching can "
        "leak database connections and one blocked greenlet stalls the worker; threads are "
        "the default"
    )
    return ("GeventOptIn", message)
