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
from djangoscale.builders.labels import selector_labels
from djangoscale.builders.pgbouncer import CredentialsError, DatabaseCredentials, pooler_name
from djangoscale.builders.pooler import is_pooler
from djangoscale.builders.routes import HTTP_ROUTE_API_VERSION
from djangoscale.builders.workers import worker_name
from djangoscale.conditions import (
    Condition,
    degraded,
    failed,
    find,
    live_budget_exceeded,
    merge_conditions,
    now_rfc3339,
    overriding,
    rolled_out,
    rollout_conditions,
    with_kstatus,
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
from djangoscale.controller import migrations
from djangoscale.controller.gate import MIGRATION_FAILED, Action, gated_conditions
from djangoscale.controller.status import KUBELET_FAILURES, kubelet_failure, observed_status
from djangoscale.k8s import Api, ApiError
from djangoscale.rollouts import (
    Key,
    RolloutGate,
    all_rolled_out,
    template_changes,
    user_asked,
)

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a reconcile found: the status to write and a warning to post, if any."""

    status: dict[str, Any]
    warning: tuple[str, str] | None = None
    applied: list[str] = field(default_factory=list)
    # DjangoServices whose queued rollout may start now (a slot just freed): reconcile them.
    next_rollouts: list[Key] = field(default_factory=list)


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


def reconcile(api: Api, body: dict[str, Any], gate: RolloutGate | None = None,
              pruned: dict[Key, tuple[str, int | None]] | None = None) -> Outcome:
    """Bring the children in line with the spec; return the status to report.

    With a `gate`, a pod template change the user did not ask for waits for a rollout slot
    (`rollouts`): until then the Deployments are left as they are. With `pruned` (the
    (uid, generation) each object was last pruned at), an object already pruned at this
    generation is not listed again.
    """
    try:
        ds = spec.parse(body)
    except spec.SpecError as error:
        return _failure(body, "InvalidSpec", "; ".join(error.problems))
    try:
        credentials = read_credentials(api, ds)
    except UserError as error:
        return _failure(body, error.reason, error.message)

    existing = api.get("apps/v1", "Deployment", ds.namespace, ds.name)
    existing_pooler = ds.pooler is not None and api.get(
        "apps/v1", "Deployment", ds.namespace, pooler_name(ds)) is not None
    migration = migrations.observe(api, body, ds) if ds.migrations.enabled else None
    if migration is not None:
        migrations.run(api, ds, migration)
    children = held_for_migration(api, ds, migration, build_children(ds, credentials))
    queued = gate is not None and rollout_queued(api, body, ds, children, gate)
    applied = []
    for child in children:
        name = f"{child['kind']}/{child['metadata']['name']}"
        if queued and child["kind"] == "Deployment":
            applied.append(name)  # kept as it is (and never pruned) until its turn
            continue
        try:
            api.apply(child)
        except ApiError as error:
            if not missing_kind(child, error):
                raise
            # Not something to retry: nothing changes until the CRDs are installed (the
            # resync picks them up) or spec.gateway goes.
            return _failure(body, GATEWAY_API_MISSING, GATEWAY_API_MISSING_MESSAGE)
        applied.append(name)
    if existing is None and ds.autoscaling.enabled and f"Deployment/{ds.name}" in applied:
        # Start at the minimum rather than at 1 until the HPA's first sync; the field stays
        # outside the operator's applied configuration, so the HPA owns it from then on.
        api.scale("apps/v1", "Deployment", ds.namespace, ds.name, ds.min_replicas,
                  INITIAL_SCALE_FIELD_MANAGER)
    if ds.pooler is not None and not existing_pooler and f"Deployment/{pooler_name(ds)}" in applied:
        # As for the web pods: its HPA owns the replicas, from pooler.replicas.min.
        api.scale("apps/v1", "Deployment", ds.namespace, pooler_name(ds),
                  ds.pooler.min_replicas, INITIAL_SCALE_FIELD_MANAGER)
    if ds.uid:
        key, seen = (ds.namespace, ds.name), (ds.uid, ds.generation)
        if pruned is None or pruned.get(key) != seen:
            prune(api, ds, applied)
        if pruned is not None:
            pruned[key] = seen
    if gate is None:
        status = current_status(api, body, ds)
        return Outcome(status=status, warning=_new_warning(body, status), applied=applied)
    next_up = finish_if_done(api, ds, gate)
    status = current_status(api, body, ds, queued_conditions(ds, gate))
    return Outcome(status=status, warning=_new_warning(body, status), applied=applied,
                   next_rollouts=next_up)


def held_for_migration(api: Api, ds: spec.DjangoService, migration: migrations.Gate | None,
                       children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The children to apply while the migration gate decides: never the Job (the gate alone
    creates it), and the Deployments' old pod template until the migration has succeeded."""
    kept = []
    for child in children:
        if child["kind"] == "Job":
            continue
        held = migration is not None and migration.action is not Action.OPEN
        if child["kind"] == "Deployment" and held and not is_pooler(child):
            live = api.get("apps/v1", "Deployment", ds.namespace, child["metadata"]["name"])
            if live is None:
                continue  # no pods run code whose migrations have not run
            child = migrations.held(child, live)
        kept.append(child)
    return kept


def rollout_queued(api: Api, body: dict[str, Any], ds: spec.DjangoService,
                   children: list[dict[str, Any]], gate: RolloutGate) -> bool:
    """The Deployments' new pod template must wait for a slot (and did not get one)."""
    key = (ds.namespace, ds.name)
    if gate.holds(key):
        return False
    deployments = [child for child in children if child["kind"] == "Deployment"]
    if user_asked(body) or not any(template_changes(api, child) for child in deployments):
        gate.withdraw(key)
        return False
    if gate.admit(key):
        logger.info("rolling out %s/%s: its pod template changed with an unchanged spec",
                    *key)
        return False
    logger.info("rollout of %s/%s queued (position %d): %d rolling at a time", *key,
                gate.position(key), gate.limit)
    return True


def deployments_of(api: Api, ds: spec.DjangoService) -> list[dict[str, Any] | None]:
    names = [ds.name] + [worker_name(ds, group) for group in ds.workers]
    if ds.pooler is not None:
        names.append(pooler_name(ds))
    return [api.get("apps/v1", "Deployment", ds.namespace, name) for name in names]


def finish_if_done(api: Api, ds: spec.DjangoService, gate: RolloutGate) -> list[Key]:
    """Free the slot of a DjangoService whose Deployments have all rolled out; the services
    that may go next."""
    key = (ds.namespace, ds.name)
    if gate.holds(key) and all_rolled_out(deployments_of(api, ds)):
        logger.info("rollout of %s/%s complete", *key)
        return gate.finish(key)
    return []


def queued_conditions(ds: spec.DjangoService, gate: RolloutGate) -> list[Condition]:
    """While queued, Progressing says so (Ready stays as the running pods make it)."""
    position = gate.position((ds.namespace, ds.name))
    if not position:
        return []
    message = (f"a pod template change from the operator waits its turn: position "
               f"{position}, {gate.limit} DjangoService(s) roll at a time")
    return with_kstatus([Condition("Progressing", "True", "RolloutQueued", message)])


def _warning_group(reason: object) -> str | None:
    """The failures that each deserve one Warning event when they begin (the kubelet's
    reasons are one failure: it alternates ErrImagePull and ImagePullBackOff by itself)."""
    if reason == MIGRATION_FAILED:
        return "migration"
    if reason in KUBELET_FAILURES:
        return "kubelet"
    return None


def _new_warning(body: dict[str, Any], status: dict[str, Any]) -> tuple[str, str] | None:
    """One Warning event when a migration fails or the kubelet cannot run the pods, none
    while the failure stays."""
    now = find(status.get("conditions", []), "Degraded") or {}
    before = find((body.get("status") or {}).get("conditions", []), "Degraded") or {}
    group = _warning_group(now.get("reason")) if now.get("status") == "True" else None
    if group is None or (before.get("status") == "True"
                         and _warning_group(before.get("reason")) == group):
        return None
    return str(now.get("reason")), str(now.get("message", ""))


def pods_failure(api: Api, ds: spec.DjangoService,
                 deployment: dict[str, Any] | None) -> tuple[str, str] | None:
    """The kubelet's reason why the web pods do not run, read (one list call) only while the
    Deployment has not rolled out: a settled object costs nothing."""
    if deployment is None or rolled_out(deployment):
        return None
    selector = ",".join(f"{key}={value}" for key, value in selector_labels(ds).items())
    return kubelet_failure(api.list("v1", "Pod", ds.namespace, label_selector=selector))


# Kinds a change of spec can make obsolete: an HPA when autoscaling is turned off, the
# Deployment, PDB and HPA of a Celery worker group taken out of the spec, the Ingress and the
# HTTPRoute when spec.ingress or spec.gateway goes, the pooler's Service when pooling.mode
# pooler goes.
PRUNABLE = (
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "Ingress"),
    (HTTP_ROUTE_API_VERSION, "HTTPRoute"),
)
# Kinds a cluster may not serve (their CRDs are optional).
OPTIONAL_KINDS = frozenset({(HTTP_ROUTE_API_VERSION, "HTTPRoute")})


GATEWAY_API_MISSING = "GatewayAPINotInstalled"
GATEWAY_API_MISSING_MESSAGE = (
    f"spec.gateway: this cluster does not serve {HTTP_ROUTE_API_VERSION} HTTPRoute (install the "
    "Gateway API CRDs, or remove spec.gateway)"
)


def serves_http_routes(api: Api, namespace: str) -> bool:
    """Whether the Gateway API's HTTPRoute CRD is installed (a list of an unserved kind 404s,
    where a get could not tell it from a missing object)."""
    try:
        api.list(HTTP_ROUTE_API_VERSION, "HTTPRoute", namespace, "djangoscale.io/none=none")
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


def missing_kind(obj: dict[str, Any], error: ApiError) -> bool:
    """The API server has no such resource: an optional CRD that is not installed."""
    return (obj["apiVersion"], obj["kind"]) in OPTIONAL_KINDS and error.status == 404


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
        try:
            items = api.list(api_version, kind, ds.namespace, selector)
        except ApiError as error:
            if missing_kind({"apiVersion": api_version, "kind": kind}, error):
                continue  # no such CRD, so none of ours to prune
            raise
        for item in items:
            name = item["metadata"]["name"]
            if controlled_by(item, ds.uid) and f"{kind}/{name}" not in applied:
                api.delete(api_version, kind, ds.namespace, name)
                deleted.append(f"{kind}/{name}")
    if deleted:
        logger.info("pruned %s of %s/%s", ", ".join(deleted), ds.namespace, ds.name)
    return deleted


def current_status(api: Api, body: dict[str, Any], ds: spec.DjangoService,
                   overrides: list[Condition] | None = None) -> dict[str, Any]:
    """The status from the children; `overrides` replace the conditions of their types."""
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
    if ds.pooler is not None:
        # The app's pods reach the database only through it: not Ready until it has rolled out.
        workers[pooler_name(ds)] = api.get("apps/v1", "Deployment", ds.namespace,
                                           pooler_name(ds))
    if ds.gateway is not None and not serves_http_routes(api, ds.namespace):
        # Also when a child's event refreshes the status: the failure stays until it is fixed.
        return _status_with(body, failed(GATEWAY_API_MISSING, GATEWAY_API_MISSING_MESSAGE),
                            observed_status(ds, deployment, hpa))
    conditions = rollout_conditions(ds, deployment, workers)
    if ds.migrations.enabled:
        gate = migrations.observe(api, body, ds)
        conditions = gated_conditions(conditions, gate.action, gate.message,
                                      deployment is not None)
    conditions = overriding(conditions, list(overrides or []))
    kubelet = pods_failure(api, ds, deployment)
    if kubelet is not None and degraded_reason(conditions) in (None, "ProgressDeadlineExceeded"):
        # The cause, where the rollout's own conditions only say that it does not progress.
        reason, message = kubelet
        conditions = overriding(conditions, with_kstatus([
            Condition("Ready", "False", reason, message),
            Condition("Degraded", "True", reason, message)]))
    # The collector found the pods over the budget: that stays the news until it reads less.
    exceeded = live_budget_exceeded(ds, body.get("status") or {})
    if exceeded is not None and degraded_status(conditions) != "True":
        conditions = overriding(conditions, degraded(*exceeded))
    return _status_with(
        body, conditions + worker_conditions(ds), observed_status(ds, deployment, hpa)
    )


def degraded_reason(conditions: list[Condition]) -> str | None:
    """Degraded's reason among `conditions` while it is True."""
    return next((c.reason for c in conditions if c.type == "Degraded" and c.status == "True"),
                None)


def degraded_status(conditions: list[Condition]) -> str | None:
    """Degraded's status among `conditions` (a rollout failure outranks the budget)."""
    return next((c.status for c in conditions if c.type == "Degraded"), None)


def refresh_status(api: Api, body: dict[str, Any], gate: RolloutGate | None = None
                   ) -> dict[str, Any] | None:
    """Status from the children (on a child's change), keeping a queued rollout's
    `RolloutQueued`; None if the spec is invalid or a migration has just failed."""
    try:
        ds = spec.parse(body)
    except spec.SpecError:
        return None
    queued = [] if gate is None else queued_conditions(ds, gate)
    status = current_status(api, body, ds, queued)
    if _new_warning(body, status) is not None:
        return None  # a new migration failure: the reconcile reports it, with its one event
    return status


def merge_changes(live: Any, patch: Any) -> bool:
    """Whether a JSON merge patch would change `live`: an object changes only where one of
    its keys does, so fields another writer adds (the collector's figures in
    `status.database`) do not make every reconcile write again."""
    if isinstance(live, dict) and isinstance(patch, dict):
        return any(merge_changes(live.get(key), value) for key, value in patch.items())
    return bool(live != patch)


def status_changed(body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Write only what differs, so a settled object keeps its resourceVersion."""
    return merge_changes(body.get("status") or {}, status)


def write_status(api: Api, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch the status when it differs from the object's; True when it wrote."""
    if not status_changed(body, status):
        return False
    metadata = body["metadata"]
    api.patch_status(API_VERSION, KIND, metadata.get("namespace"), metadata["name"], status)
    return True
