"""kopf handlers: glue only. Each one hands the object to `reconcile` and writes the result.

What they share (the API layer, the settings, the caches) comes in `memo`, the context
`djangoscale run` builds (`djangoscale.context`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import kopf

from djangoscale.context import OperatorContext, context_of, pause
from djangoscale.contract import (
    API_VERSION,
    GROUP,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PLURAL,
    VERSION,
)
from djangoscale.controller import metrics
from djangoscale.controller.reconcile import (
    Outcome,
    reconcile,
    refresh_status,
    write_status,
)
from djangoscale.k8s import ApiError

RESOURCE = (GROUP, VERSION, PLURAL)
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}
# Seconds before kopf retries a reconcile that failed on an API error.
API_ERROR_RETRY_SECONDS: Final = 10
# Seconds an object must go unchanged before the resync timer fires: no resync in the middle
# of a burst of edits, which the change handlers already reconcile.
RESYNC_IDLE_SECONDS: Final = 5
# kopf reads the timer's interval when the handler is registered, at import, before any
# settings exist; the timer fires often and each firing waits the configured interval.
RESYNC_TICK_SECONDS: Final = 1.0


def _write(context: OperatorContext, body: kopf.Body, outcome: Outcome,
           logger: logging.Logger) -> None:
    if outcome.warning:
        reason, message = outcome.warning
        kopf.warn(body, reason=reason, message=message)
        logger.warning("%s: %s", reason, message)
    write_status(context.api, dict(body), outcome.status)


def _reconcile(context: OperatorContext, body: kopf.Body, logger: logging.Logger) -> None:
    metrics.managed(context.managed, body.metadata.namespace or "", body.metadata.name or "")
    with metrics.reconcile_timer():
        try:
            outcome = reconcile(context.api, dict(body))
            _write(context, body, outcome, logger)
        except ApiError as error:
            if namespace_terminating(error):
                # The namespace and everything in it are going away: nothing to converge.
                logger.info("namespace %s is being deleted", body.metadata.namespace)
                return
            metrics.RECONCILE_ERRORS.inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=API_ERROR_RETRY_SECONDS
            ) from error


def namespace_terminating(error: ApiError) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, not RBAC's)."""
    return error.status == 403 and "NamespaceTerminating" in str(error.body or "")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, logger: logging.Logger, memo: object, **_: Any) -> None:
    _reconcile(context_of(memo), body, logger)


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def resync(body: kopf.Body, logger: logging.Logger, memo: object,
                 stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile every object again every `resync_seconds`: repairs drift and picks up a
    rotated database Secret. A daemon rather than a timer: a timer's interval is fixed when
    the module is imported, the daemon reads it from the settings."""
    context = context_of(memo)
    interval = context.settings.resync_seconds
    await pause(stopped, interval)
    while not stopped:
        try:
            await asyncio.to_thread(_reconcile, context, body, logger)
        except kopf.TemporaryError as error:
            logger.warning("resync failed, retrying: %s", error)
            await pause(stopped, min(interval, error.delay or interval))
            continue
        await pause(stopped, interval)


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(namespace: str, name: str, memo: object, **_: Any) -> None:
    """Children go with the owner (garbage collection); only the gauge needs telling.

    `optional=True`: no finalizer, so a stopped operator never blocks a deletion.
    """
    metrics.managed(context_of(memo).managed, namespace, name, present=False)


def _owner_name(owners: list[dict[str, Any]]) -> str | None:
    for owner in owners or []:
        if owner.get("kind") == KIND and owner.get("apiVersion") == API_VERSION:
            return str(owner["name"])
    return None


def spec_changed(
    generations: dict[str, int], uid: str, generation: int | None, event_type: str | None
) -> bool:
    """A child's spec generation moved since the last event seen (`generations`, per uid)."""
    if event_type == "DELETED":
        generations.pop(uid, None)
        return False
    previous = generations.get(uid)
    if generation is not None:
        generations[uid] = generation
    return previous is not None and previous != generation


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
def on_child_event(
    body: kopf.Body,
    event: dict[str, Any],
    namespace: str,
    logger: logging.Logger,
    memo: object,
    **_: Any,
) -> None:
    """A child changed: put back hand edits of fields the operator owns, keep status true."""
    context = context_of(memo)
    name = _owner_name(body.metadata.get("ownerReferences", []))
    if name is None:
        return
    owner = context.api.get(API_VERSION, KIND, namespace, name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    uid, generation = body.metadata.uid or "", body.metadata.get("generation")
    if spec_changed(context.child_generations, uid, generation, event.get("type")):
        # Server-side apply re-asserts only the fields the operator owns: replicas set by the
        # HPA are not among them, so this never fights the autoscaler.
        _reconcile(context, kopf.Body(owner), logger)
        return
    status = refresh_status(context.api, owner)
    if status is not None:
        write_status(context.api, owner, status)
