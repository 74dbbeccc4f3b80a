"""kopf handlers: glue only. Each one hands the object to `reconcile` and writes the result."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from djangoscale.builders.labels import MANAGED_BY, MANAGED_BY_LABEL
from djangoscale.controller import kube, metrics
from djangoscale.controller.reconcile import (
    Outcome,
    reconcile,
    refresh_status,
    status_changed,
)
from djangoscale.spec import GROUP, KIND, PLURAL, VERSION

# How often every object is reconciled again: repairs drift and picks up a rotated database
# Secret (the operator may not watch Secrets: RBAC gives it `get` on them, never `list`).
RESYNC_SECONDS = float(os.environ.get("DJANGOSCALE_RESYNC_SECONDS", "30"))
RESOURCE = (GROUP, VERSION, PLURAL)
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}


def _write(body: kopf.Body, outcome: Outcome, logger: logging.Logger) -> None:
    if outcome.warning:
        reason, message = outcome.warning
        kopf.warn(body, reason=reason, message=message)
        logger.warning("%s: %s", reason, message)
    if status_changed(body, outcome.status):
        kube.patch_status(body.metadata.namespace, body.metadata.name, outcome.status)


def _reconcile(body: kopf.Body, logger: logging.Logger) -> None:
    metrics.managed(body.metadata.namespace or "", body.metadata.name or "")
    with metrics.reconcile_timer():
        try:
            outcome = reconcile(dict(body))
            _write(body, outcome, logger)
        except ApiException as error:
            if namespace_terminating(error):
                # The namespace and everything in it are going away: nothing to converge.
                logger.info("namespace %s is being deleted", body.metadata.namespace)
                return
            metrics.RECONCILE_ERRORS.inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=10
            ) from error


def namespace_terminating(error: ApiException) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, not RBAC's)."""
    return error.status == 403 and "NamespaceTerminating" in str(error.body or "")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    _reconcile(body, logger)


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, idle=5)
def resync(body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    _reconcile(body, logger)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(namespace: str, name: str, **_: Any) -> None:
    """Children go with the owner (garbage collection); only the gauge needs telling.

    `optional=True`: no finalizer, so a stopped operator never blocks a deletion.
    """
    metrics.managed(namespace, name, present=False)


def _owner_name(owners: list[dict[str, Any]]) -> str | None:
    for owner in owners or []:
        if owner.get("kind") == KIND and owner.get("apiVersion") == f"{GROUP}/{VERSION}":
            return str(owner["name"])
    return None


# The last spec generation seen per child uid: a new one is a spec edit (ours, the HPA's or a
# hand edit), worth a re-apply; anything else is status progress, worth a status refresh.
_child_generations: dict[str, int] = {}


def spec_changed(uid: str, generation: int | None, event_type: str | None) -> bool:
    if event_type == "DELETED":
        _child_generations.pop(uid, None)
        return False
    previous = _child_generations.get(uid)
    if generation is not None:
        _child_generations[uid] = generation
    return previous is not None and previous != generation


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
def on_child_event(
    body: kopf.Body,
    event: dict[str, Any],
    namespace: str,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """A child changed: put back hand edits of fields the operator owns, keep status true."""
    name = _owner_name(body.metadata.get("ownerReferences", []))
    if name is None:
        return
    owner = kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    if spec_changed(body.metadata.uid or "", body.metadata.get("generation"), event.get("type")):
        # Server-side apply re-asserts only the fields the operator owns: replicas set by the
        # HPA are not among them, so this never fights the autoscaler.
        _reconcile(kopf.Body(owner), logger)
        return
    status = refresh_status(owner)
    if status is not None and status_changed(owner, status):
        kube.patch_status(namespace, name, status)
