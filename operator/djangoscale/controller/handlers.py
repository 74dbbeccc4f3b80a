"""kopf handlers: glue only. Each one hands the object to `reconcile` and writes the result.

What they share (the API layer, the settings, the caches) comes in `memo`, the context
`djangoscale run` builds (`djangoscale.context`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import kopf

from djangoscale import background, k8s
from djangoscale import operator_metrics as metrics
from djangoscale.background import ServiceKey
from djangoscale.context import OperatorContext, context_of
from djangoscale.contract import (
    API_VERSION,
    GROUP,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PLURAL,
    VERSION,
)
from djangoscale.controller.gate import JobPhase, job_phase
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
# Reconciles of one resync round running at once (each in a thread, a few API calls each).
RESYNC_CONCURRENCY: Final = 8

logger = logging.getLogger(__name__)


def _write(context: OperatorContext, body: kopf.Body, live: dict[str, Any], outcome: Outcome,
           logger: logging.Logger) -> None:
    if outcome.warning:
        reason, message = outcome.warning
        k8s.warn(context.api, live, reason, message)
        logger.warning("%s: %s", reason, message)
    write_status(context.api, live, outcome.status)


def _reconcile(context: OperatorContext, body: kopf.Body, logger: logging.Logger) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    metrics.managed(context.managed, namespace, name)
    with context.reconcile_lock(namespace, name), metrics.reconcile_timer():
        try:
            # Read inside the lock: the status another handler wrote just before counts.
            live = context.api.get(API_VERSION, KIND, namespace, name)
            if live is None:
                return  # deleted meanwhile
            outcome = reconcile(context.api, live, context.rollouts, context.pruned)
            _write(context, body, live, outcome, logger)
        except ApiError as error:
            if namespace_terminating(error):
                # The namespace and everything in it are going away: nothing to converge.
                logger.info("namespace %s is being deleted", body.metadata.namespace)
                return
            if error.status == 404 and context.api.get(API_VERSION, KIND, namespace, name) is None:
                # The DjangoService went while it was reconciled: its children go with it.
                logger.info("%s/%s was deleted during its reconcile", namespace, name)
                return
            metrics.RECONCILE_ERRORS.inc()
            raise kopf.TemporaryError(
                f"API error {error.status}: {error.reason}", delay=API_ERROR_RETRY_SECONDS
            ) from error
    # A rollout slot just freed: the next in line starts now, not at the next resync.
    for key in outcome.next_rollouts:
        _reconcile_live(context, key)


def namespace_terminating(error: ApiError) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, not RBAC's)."""
    return error.status == 403 and "NamespaceTerminating" in str(error.body or "")


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, logger: logging.Logger, memo: object, **_: Any) -> None:
    _reconcile(context_of(memo), body, logger)


def _reconcile_live(context: OperatorContext, key: ServiceKey) -> None:
    # The live object, not the index's copy: the index may lag, and a deleted or terminating
    # object has nothing left to converge.
    namespace, name = key
    live = context.api.get(API_VERSION, KIND, namespace, name)
    if live is None or live["metadata"].get("deletionTimestamp"):
        return
    try:
        _reconcile(context, kopf.Body(live), logger)
    except kopf.TemporaryError as error:
        logger.warning("resync of %s/%s failed, next round retries: %s", namespace, name, error)


@kopf.on.startup()
async def start_resync(memo: object, djangoservices: kopf.Index[ServiceKey, Any],
                       **_: Any) -> None:
    """Reconcile every DjangoService again every `resync_seconds`: repairs drift and picks up
    a rotated database Secret. One loop for all objects, not a per-object daemon or timer:
    those bring kopf's finalizer (`djangoscale.background` says why that matters)."""
    context = context_of(memo)
    interval = context.settings.resync_seconds

    async def resync_all() -> None:
        started = time.monotonic()
        services = background.latest(djangoservices)
        for key in context.rollouts.retain(services):
            await asyncio.to_thread(_reconcile_live, context, key)
        await background.each(
            services, lambda key: asyncio.to_thread(_reconcile_live, context, key), logger,
            "resync", concurrency=RESYNC_CONCURRENCY)
        # What a round costs as the count grows (bench/bench_operator_scale.py reads it).
        logger.info("resync: %d DjangoServices in %.1f s", len(services),
                    time.monotonic() - started)

    context.start("resync", background.run_every(interval, resync_all, logger, "resync",
                                                 first_delay=interval,
                                                 active=context.active))


@kopf.on.delete(*RESOURCE, optional=True)
def on_delete(namespace: str, name: str, memo: object, **_: Any) -> None:
    """Children go with the owner (garbage collection); only the gauge needs telling.

    `optional=True`: no finalizer, so a stopped operator never blocks a deletion (and no
    daemon or timer anywhere brings one: `djangoscale.background`).
    """
    context = context_of(memo)
    metrics.managed(context.managed, namespace, name, present=False)
    context.pruned.pop((namespace, name), None)


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
    if (spec_changed(context.child_generations, uid, generation, event.get("type"))
            or context.rollouts.holds((namespace, name))):
        # (While it holds a rollout slot, every reconcile checks whether it can free it.)
        # Server-side apply re-asserts only the fields the operator owns: replicas set by the
        # HPA are not among them, so this never fights the autoscaler.
        _reconcile(context, kopf.Body(owner), logger)
        return
    # Under the reconcile's lock and from a fresh read: a status computed from an older read
    # would undo what a reconcile wrote meanwhile (a MigrationFailed, whose event the next
    # reconcile would then post again).
    with context.reconcile_lock(namespace, name):
        owner = context.api.get(API_VERSION, KIND, namespace, name)
        status = None if owner is None else refresh_status(context.api, owner,
                                                                 context.rollouts)
        if owner is None or status is None:
            return
        try:
            write_status(context.api, owner, status)
        except ApiError as error:
            if error.status != 404:
                raise
            # The DjangoService went between the read and the write: its children go with it.
            logger.debug("%s/%s was deleted before its status was written", namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def on_migration_job_event(
    body: kopf.Body, namespace: str, logger: logging.Logger, memo: object, **_: Any
) -> None:
    """A migration Job finished: open the gate (or report the failure) now, not at the next
    resync."""
    if job_phase(dict(body)) is JobPhase.RUNNING:
        return
    context = context_of(memo)
    name = _owner_name(body.metadata.get("ownerReferences", []))
    owner = None if name is None else context.api.get(API_VERSION, KIND, namespace, name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    _reconcile(context, kopf.Body(owner), logger)
