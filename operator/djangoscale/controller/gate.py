"""The migration gate: may the Deployments take the new pod template yet? A pure state machine.

Its inputs all come from the cluster, never from memory in the operator: the live Deployment's
migration annotation (what its pods were migrated for), the migration Job of the current spec
(its phase, and the DjangoService generation that created it), whether an older migration Job
still runs, and the `Degraded=MigrationFailed` condition in the DjangoService's own status (which
outlives the Job once its TTL removed it).

The rules: a spec whose image and command were already migrated opens at once (a GitOps replay
runs nothing); otherwise one Job runs and the Deployments keep their live template until it
succeeds. A failed Job is not retried by the operator (its backoffLimit is the only retry) until
the spec changes again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from djangoscale.conditions import Condition, find, with_kstatus

MIGRATING: Final = "Migrating"
MIGRATION_FAILED: Final = "MigrationFailed"


class JobPhase(enum.StrEnum):
    ABSENT = "Absent"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Action(enum.StrEnum):
    OPEN = "Open"  # the Deployments take the spec's template
    START = "Start"  # create the Job; the Deployments keep their live template
    WAIT = "Wait"  # a migration Job runs; keep the live template
    FAILED = "Failed"  # this spec's Job failed: keep the live template, start nothing
    RETRY = "Retry"  # the Job failed for an earlier generation: replace it, keep the template


@dataclass(frozen=True)
class GateView:
    wanted: str  # the hash of the spec's image and command
    migrated: str | None  # the live Deployment's annotation; None without one
    job: JobPhase  # the Job of `wanted`
    job_generation: int | None  # the DjangoService generation that created that Job
    generation: int | None  # the DjangoService's generation now
    failed_generation: int | None  # generation of a MigrationFailed condition in the status
    other_job_running: bool = False  # a Job of an earlier image still migrates


def decide(view: GateView) -> Action:
    if view.migrated == view.wanted or view.job is JobPhase.SUCCEEDED:
        return Action.OPEN
    if view.job is JobPhase.RUNNING:
        return Action.WAIT
    if view.job is JobPhase.FAILED:
        newer = (view.generation is not None and view.job_generation is not None
                 and view.generation > view.job_generation)
        return Action.RETRY if newer else Action.FAILED
    if view.failed_generation is not None and view.failed_generation == view.generation:
        # The failed Job is gone (TTL) but nothing changed since it failed.
        return Action.FAILED
    # Two migrations never run at once: the older one finishes (or fails) first.
    return Action.WAIT if view.other_job_running else Action.START


def job_phase(job: dict[str, Any] | None) -> JobPhase:
    """From the Job's terminal conditions; anything else is still running."""
    if job is None:
        return JobPhase.ABSENT
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobPhase.SUCCEEDED
        if condition.get("type") == "Failed":
            return JobPhase.FAILED
    return JobPhase.RUNNING


def failed_generation(previous_conditions: list[dict[str, Any]]) -> int | None:
    degraded = find(previous_conditions, "Degraded") or {}
    if degraded.get("status") == "True" and degraded.get("reason") == MIGRATION_FAILED:
        generation = degraded.get("observedGeneration")
        return generation if isinstance(generation, int) else None
    return None


def gated_conditions(
    rollout: list[Condition], action: Action, message: str, deployment_exists: bool
) -> list[Condition]:
    """The rollout's conditions with the gate's say: Migrating, or MigrationFailed.

    Ready stays the rollout's while the old pods serve; without a Deployment yet nothing serves.
    """
    if action is Action.OPEN:
        return rollout
    base = {c.type: c for c in rollout if c.type in ("Ready", "Progressing", "Degraded")}
    reason = MIGRATION_FAILED if action is Action.FAILED else MIGRATING
    ready = base.get("Ready") if deployment_exists else None
    if ready is None:
        ready = Condition("Ready", "False", reason, message)
    if action is Action.FAILED:
        progressing = Condition("Progressing", "False", reason, message)
        degraded = Condition("Degraded", "True", reason, message)
    else:
        progressing = Condition("Progressing", "True", reason, message)
        degraded = Condition("Degraded", "False", "AsExpected", "no failure observed")
    others = [c for c in rollout
              if c.type not in ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")]
    return with_kstatus([ready, progressing, degraded]) + others
