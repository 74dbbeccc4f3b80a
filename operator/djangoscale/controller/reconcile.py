"""Reconcile one DjangoService: parse, read its database Secret, apply its children, report.

The service layer between the kopf handlers (glue) and the API layer (`djangoscale.k8s`), which
it receives as an argument. Errors the user must fix become a `Ready=False` condition and one
Warning event; they never raise, so the operator never retries them in a loop. API errors do
raise, and kopf retries them with a backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import CredentialsError, DatabaseCredentials
from djangoscale.builders.workers import worker_name
from djangoscale.conditions import (
    Condition,
    failed,
    find,
    merge_conditions,
    now_rfc3339,
    rollout_conditions,
    worker_conditions,
)
from djangoscale.contract import (
    API_VERSION,
    INITIAL_SCALE_FIELD_MANAGER,
    INSTANCE_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
)
from djangoscale.controller.status import observed_status
from djangoscale.k8s import Api

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a reconcile found: the status to write and a warning to post, if any."""

    status: dict[str, Any]
    warning: tuple[str, str] | None = None
    applied: list[str] = field(default_factory=list)


class UserError(Exception):
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message
        super().__init__(message)


def read_credentials(api: Api, ds: spec.DjangoService) -> DatabaseCredentials | None:
    if ds.database is None or ds.database.secret_name is None:
        return None
    secret = api.get("v1", "Secret", ds.namespace, ds.database.secret_name)
    if secret is None:
        raise UserError(
            "DatabaseSecretNotFound",
            f"spec.database.secretName: Secret {ds.database.secret_name} not found in "
            f"namespace {ds.namespace}",
        )
    try:
        return DatabaseCredentials.from_secret_data(
            secret.get("data") or {}, ds.database.secret_name
        )
    except CredentialsError as error:
        raise UserError("InvalidDatabaseSecret", f"spec.database.secretName: {error}") from error


def _status_with(
    body: dict[str, Any], conditions: list[Condition], extra: dict[str, Any]
) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions", [])
    return {
        **extra,
        "observedGeneration": generation,
        "conditions": merge_conditions(previous, conditions, generation, now_rfc3339()),
    }


def _failure(body: dict[str, Any], reason: str, message: str) -> Outcome:
    previous = find((body.get("status") or {}).get("conditions", []), "Ready") or {}
    # One event per new failure, not one per timer tick.
    repeated = previous.get("reason") == reason and previous.get("message") == message
    return Outcome(
        status=_status_with(body, failed(reason, message), {}),
        warning=None if repeated else (reason, message),
    )


def reconcile(api: Api, body: dict[str, Any]) -> Outcome:
    """Bring the children in line with the spec; return the status to report."""
    try:
        ds = spec.parse(body)
    except spec.SpecError as error:
        return _failure(body, "InvalidSpec", "; ".join(error.problems))
    try:
        credentials = read_credentials(api, ds)
    except UserError as error:
        return _failure(body, error.reason, error.message)

    existing = api.get("apps/v1", "Deployment", ds.namespace, ds.name)
    applied = []
    for child in build_children(ds, credentials):
        api.apply(child)
        applied.append(f"{child['kind']}/{child['metadata']['name']}")
    if existing is None and ds.autoscaling.enabled:
        # Start at the minimum rather than at 1 until the HPA's first sync; the field stays
        # outside the operator's applied configuration, so the HPA owns it from then on.
        api.scale("apps/v1", "Deployment", ds.namespace, ds.name, ds.min_replicas,
                  INITIAL_SCALE_FIELD_MANAGER)
    if ds.uid:
        prune(api, ds, applied)
    return Outcome(status=current_status(api, body, ds), applied=applied)


# Kinds a change of spec can make obsolete: an HPA when autoscaling is turned off, the
# Deployment, PDB and HPA of a Celery worker group taken out of the spec.
PRUNABLE = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
)


def controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in owners)


def prune(api: Api, ds: spec.DjangoService, applied: list[str]) -> list[str]:
    """Delete children this DjangoService controls that its spec no longer asks for.

    Only objects that carry its labels AND name it as their controller: never someone else's.
    """
    assert ds.uid is not None
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={ds.name}"
    deleted = []
    for api_version, kind in PRUNABLE:
        for item in api.list(api_version, kind, ds.namespace, selector):
            name = item["metadata"]["name"]
            if controlled_by(item, ds.uid) and f"{kind}/{name}" not in applied:
                api.delete(api_version, kind, ds.namespace, name)
                deleted.append(f"{kind}/{name}")
    if deleted:
        logger.info("pruned %s of %s/%s", ", ".join(deleted), ds.namespace, ds.name)
    return deleted


def current_status(api: Api, body: dict[str, Any], ds: spec.DjangoService) -> dict[str, Any]:
    deployment = api.get("apps/v1", "Deployment", ds.namespace, ds.name)
    hpa = (
        api.get("autoscaling/v2", "HorizontalPodAutoscaler", ds.namespace, ds.name)
        if ds.autoscaling.enabled
        else None
    )
    workers = {
        group.name: api.get("apps/v1", "Deployment", ds.namespace, worker_name(ds, group))
        for group in ds.workers
    }
    return _status_with(
        body,
        rollout_conditions(ds, deployment, workers) + worker_conditions(ds),
        observed_status(ds, deployment, hpa),
    )


def refresh_status(api: Api, body: dict[str, Any]) -> dict[str, Any] | None:
    """Status from the children alone (on a child's change); None if the spec is invalid."""
    try:
        ds = spec.parse(body)
    except spec.SpecError:
        return None
    return current_status(api, body, ds)


def status_changed(body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Write only what differs, so a settled object keeps its resourceVersion."""
    live = body.get("status") or {}
    return any(live.get(key) != value for key, value in status.items())


def write_status(api: Api, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch the status when it differs from the object's; True when it wrote."""
    if not status_changed(body, status):
        return False
    metadata = body["metadata"]
    api.patch_status(API_VERSION, KIND, metadata.get("namespace"), metadata["name"], status)
    return True
