"""Reconcile one DjangoService: parse, read its database Secret, apply its children, report.

The service layer between the kopf handlers (glue) and `kube` (API calls). Errors the user must
fix become a `Ready=False` condition and one Warning event; they never raise, so the operator
never retries them in a loop. API errors do raise, and kopf retries them with a backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.labels import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from djangoscale.builders.pgbouncer import CredentialsError, DatabaseCredentials
from djangoscale.builders.workers import worker_name
from djangoscale.controller import kube
from djangoscale.controller.conditions import Condition, failed, find, merge_conditions, now_rfc3339
from djangoscale.controller.status import observed_status, rollout_conditions, worker_conditions

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


def read_credentials(ds: spec.DjangoService) -> DatabaseCredentials | None:
    if ds.database is None or ds.database.secret_name is None:
        return None
    secret = kube.get("v1", "Secret", ds.namespace, ds.database.secret_name)
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


def reconcile(body: dict[str, Any]) -> Outcome:
    """Bring the children in line with the spec; return the status to report."""
    try:
        ds = spec.parse(body)
    except spec.SpecError as error:
        return _failure(body, "InvalidSpec", "; ".join(error.problems))
    try:
        credentials = read_credentials(ds)
    except UserError as error:
        return _failure(body, error.reason, error.message)

    existing = kube.get("apps/v1", "Deployment", ds.namespace, ds.name)
    applied = []
    for child in build_children(ds, credentials):
        kube.apply(child)
        applied.append(f"{child['kind']}/{child['metadata']['name']}")
    if existing is None and ds.autoscaling.enabled:
        # Start at the minimum rather than at 1 until the HPA's first sync; the field stays
        # outside the operator's applied configuration, so the HPA owns it from then on.
        kube.scale(ds.namespace, ds.name, ds.min_replicas)
    if ds.uid:
        prune(ds, applied)
    return Outcome(status=current_status(body, ds), applied=applied)


# Kinds a change of spec can make obsolete: an HPA when autoscaling is turned off, the
# Deployment, PDB and HPA of a Celery worker group taken out of the spec.
PRUNABLE = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
)


def prune(ds: spec.DjangoService, applied: list[str]) -> list[str]:
    """Delete children this DjangoService controls that its spec no longer asks for."""
    assert ds.uid is not None
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={ds.name}"
    deleted = []
    for api_version, kind in PRUNABLE:
        for item in kube.list_controlled(api_version, kind, ds.namespace, selector, ds.uid):
            name = item["metadata"]["name"]
            if f"{kind}/{name}" not in applied:
                kube.delete_controlled(api_version, kind, ds.namespace, name, ds.uid)
                deleted.append(f"{kind}/{name}")
    if deleted:
        logger.info("pruned %s of %s/%s", ", ".join(deleted), ds.namespace, ds.name)
    return deleted


def current_status(body: dict[str, Any], ds: spec.DjangoService) -> dict[str, Any]:
    deployment = kube.get("apps/v1", "Deployment", ds.namespace, ds.name)
    hpa = (
        kube.get("autoscaling/v2", "HorizontalPodAutoscaler", ds.namespace, ds.name)
        if ds.autoscaling.enabled
        else None
    )
    workers = {
        group.name: kube.get("apps/v1", "Deployment", ds.namespace, worker_name(ds, group))
        for group in ds.workers
    }
    return _status_with(
        body,
        rollout_conditions(ds, deployment, workers) + worker_conditions(ds),
        observed_status(ds, deployment, hpa),
    )


def refresh_status(body: dict[str, Any]) -> dict[str, Any] | None:
    """Status from the children alone (on a child's change); None if the spec is invalid."""
    try:
        ds = spec.parse(body)
    except spec.SpecError:
        return None
    return current_status(body, ds)


def status_changed(body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Write only what differs, so a settled object keeps its resourceVersion."""
    live = body.get("status") or {}
    return any(live.get(key) != value for key, value in status.items())
