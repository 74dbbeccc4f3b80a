"""The migration gate against the cluster: read what it decides on, run the Job, hold templates.

`controller.gate` decides; this module reads its inputs through the API layer and carries out
the decision. The "old template" is the live Deployment's: nothing is remembered elsewhere.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Final

from djangoscale import spec
from djangoscale.builders.labels import selector_labels
from djangoscale.builders.migration import (
    CONTAINER_NAME,
    GENERATION_ANNOTATION,
    MIGRATE_COMPONENT,
    MIGRATION_ANNOTATION,
    build_migration_job,
    migration_hash,
    migration_job_name,
)
from djangoscale.conditions import find
from djangoscale.controller.gate import (
    MIGRATION_FAILED,
    Action,
    GateView,
    JobPhase,
    decide,
    failed_generation,
    job_phase,
)
from djangoscale.k8s import Api, ApiError

logger = logging.getLogger(__name__)

# Lines of the failed migration's log the status shows, and at most this many characters.
LOG_TAIL_LINES: Final = 20
LOG_TAIL_CHARS: Final = 2000
# The Job controller labels its pods with this.
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"


@dataclass(frozen=True)
class Gate:
    view: GateView
    action: Action
    job_name: str
    live_deployment: dict[str, Any] | None
    message: str = ""


def _label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def observe(api: Api, body: dict[str, Any], ds: spec.DjangoService) -> Gate:
    """The gate's inputs, read from the cluster, and its decision."""
    name = migration_job_name(ds)
    live = api.get("apps/v1", "Deployment", ds.namespace, ds.name)
    job = api.get("batch/v1", "Job", ds.namespace, name)
    others = api.list("batch/v1", "Job", ds.namespace,
                      _label_selector(selector_labels(ds, MIGRATE_COMPONENT)))
    job_generation = ((job or {}).get("metadata", {}).get("annotations") or {}).get(
        GENERATION_ANNOTATION)
    previous = (body.get("status") or {}).get("conditions") or []
    view = GateView(
        wanted=migration_hash(ds),
        migrated=None if live is None
        else (live["metadata"].get("annotations") or {}).get(MIGRATION_ANNOTATION),
        job=job_phase(job),
        job_generation=int(job_generation) if job_generation else None,
        generation=ds.generation,
        failed_generation=failed_generation(previous),
        other_job_running=any(
            item["metadata"]["name"] != name and job_phase(item) is JobPhase.RUNNING
            for item in others
        ),
    )
    action = decide(view)
    return Gate(view, action, name, live, _message(api, ds, action, name, job, previous))


def _message(
    api: Api, ds: spec.DjangoService, action: Action, name: str, job: dict[str, Any] | None,
    previous: list[dict[str, Any]],
) -> str:
    if action is Action.OPEN:
        return ""
    if action is Action.WAIT and job is None:
        return f"waiting for an earlier migration Job to finish before Job {name} ({ds.image})"
    if action is not Action.FAILED:
        return (f"migration Job {name} runs {' '.join(ds.migrations.command)} in {ds.image}; "
                "the Deployments keep their current pods until it succeeds")
    degraded = find(previous, "Degraded") or {}
    if degraded.get("reason") == MIGRATION_FAILED and name in str(degraded.get("message")):
        return str(degraded["message"])  # read the log once, not on every status refresh
    return (f"migration Job {name} failed ({_job_failure(job)}); the Deployments keep their "
            "current pods; change the spec (a fixed image) to run it again. "
            f"Log tail: {log_tail(api, ds.namespace, name)}")


def _job_failure(job: dict[str, Any] | None) -> str:
    if job is None:
        return "the Job has since been removed"
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}".strip()
    return "Failed"


def log_tail(api: Api, namespace: str, job_name: str) -> str:
    """The end of the newest migration pod's log, or why there is none."""
    try:
        pods = api.list("v1", "Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        if not pods:
            return "(no pod of the Job is left)"
        newest = max(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
        text = api.read_log(namespace, newest["metadata"]["name"], CONTAINER_NAME,
                            LOG_TAIL_LINES)
    except ApiError as error:
        return f"(log unavailable: {error.status} {error.reason})"
    text = text.strip()
    return text[-LOG_TAIL_CHARS:] if text else "(empty log)"


def run(api: Api, ds: spec.DjangoService, gate: Gate) -> None:
    """Start (or restart after a spec change) the spec's migration Job, as decided."""
    if gate.action is Action.RETRY:
        # Background: the Job goes now, its pods after; the default for Jobs orphans them.
        api.delete("batch/v1", "Job", ds.namespace, gate.job_name, propagation_policy="Background")
    if gate.action in (Action.START, Action.RETRY):
        logger.info("starting migration Job %s/%s", ds.namespace, gate.job_name)
        api.apply(build_migration_job(ds))


def held(child: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The Deployment as the spec wants it, but with the live pod template (and its
    migration mark): its pods stay as they are until the migration succeeds."""
    result = copy.deepcopy(child)
    result["spec"]["template"] = copy.deepcopy(live["spec"]["template"])
    annotations = result["metadata"].setdefault("annotations", {})
    marked = (live["metadata"].get("annotations") or {}).get(MIGRATION_ANNOTATION)
    if marked is None:
        annotations.pop(MIGRATION_ANNOTATION, None)
    else:
        annotations[MIGRATION_ANNOTATION] = marked
    return result
