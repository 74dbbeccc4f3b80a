"""kopf glue for RPS autoscaling: a pod index, one collecting loop over every DjangoService, and
the metrics API server's lifecycle. The work is in `collector`, `windows` and `apiserver`.

Pods come from a kopf index (a watch kept in memory), not from a list call per round, so
collection costs no API requests however often it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf
from aiohttp import web

from djangoscale import background, k8s, spec
from djangoscale.autoscaling import collector
from djangoscale.autoscaling.apiserver import (
    REQUESTHEADER_CONFIGMAP,
    PodValue,
    build_app,
    generate_serving_cert,
    requestheader_settings,
    server_ssl_context,
    start_server,
    write_serving_cert,
)
from djangoscale.autoscaling.sharding import (
    PEER_READ_INTERVALS,
    SHARD_READ_PATH,
    Assignment,
    Samples,
    ShardReader,
    ShareOfService,
    build_shard_app,
)
from djangoscale.autoscaling.windows import ServiceWindows
from djangoscale.background import ServiceKey
from djangoscale.builders.pgbouncer import CredentialsError, DatabaseCredentials
from djangoscale.context import OperatorContext, context_of
from djangoscale.contract import (
    API_VERSION,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    POOLER_COMPONENT,
    RPS_METRIC,
    WEB_COMPONENT,
)
from djangoscale.k8s import Api, ApiError, object_path
from djangoscale.k8s.api import MERGE_PATCH
from djangoscale.operator_metrics import (
    COLLECTION_ROUND_SECONDS,
    DATABASE_BUDGET,
    SHARD_ASSIGNED_PODS,
)
from djangoscale.peering import active_peer_patch
from djangoscale.settings import OperatorSettings

logger = logging.getLogger(__name__)
# /readyz stays up through this many missed collection rounds (a slow API), at least
# READY_MIN_AGE_SECONDS, so one slow round does not flap the APIService's endpoints
# (`ready_max_age`).
READY_MISSED_ROUNDS = 5
READY_MIN_AGE_SECONDS = 10.0
# How often the operator looks whether its pod's active-peer label is still right (the
# peering object itself is read at most every PEERING_CHECK_SECONDS).
ACTIVE_PEER_LABEL_SECONDS = 1.0


def pod_ready(status: dict[str, Any], meta: dict[str, Any]) -> bool:
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def pod_target(name: str, namespace: str | None, labels: kopf.Labels, status: kopf.Status,
               meta: kopf.Meta) -> dict[tuple[str, str], collector.PodTarget] | None:
    instance = labels.get(INSTANCE_LABEL)
    if not instance or namespace is None:
        return None
    ready = pod_ready(dict(status), dict(meta))
    target = collector.PodTarget(
        name=name,
        ip=status.get("podIP") or "",
        ready=ready,
        labels=tuple(sorted(labels.items())),
        starting=collector.pod_starting(dict(status), dict(meta), ready),
        uid=str(meta.get("uid") or ""),
    )
    return {(namespace, instance): target}


@kopf.index("", "v1", "pods",
            labels={MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: WEB_COMPONENT})
def rps_pods(name: str, namespace: str | None, labels: kopf.Labels, status: kopf.Status,
             meta: kopf.Meta, **_: Any) -> dict[tuple[str, str], collector.PodTarget] | None:
    return pod_target(name, namespace, labels, status, meta)


@kopf.index("", "v1", "pods",
            labels={MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: POOLER_COMPONENT})
def pooler_pods(name: str, namespace: str | None, labels: kopf.Labels, status: kopf.Status,
                meta: kopf.Meta, **_: Any) -> dict[tuple[str, str], collector.PodTarget] | None:
    """The pooler's pods (pooling.mode pooler): they hold the server connections."""
    return pod_target(name, namespace, labels, status, meta)


def database_login(api: Api, ds: spec.DjangoService) -> tuple[str, str] | None:
    """The app's user and password (the pooler's admin console takes them), from the user's
    database Secret; None, logged, when it cannot be read."""
    if ds.database is None or ds.database.secret_name is None:
        return None
    try:
        secret = api.get("v1", "Secret", ds.namespace, ds.database.secret_name)
        if secret is None:
            raise CredentialsError(f"Secret {ds.database.secret_name} does not exist")
        credentials = DatabaseCredentials.from_secret_data(secret.get("data") or {},
                                                           ds.database.secret_name)
    except (ApiError, CredentialsError) as error:
        logger.warning("not reading the pooler of %s/%s: %s", ds.namespace, ds.name,
                       getattr(error, "reason", error))
        return None
    return credentials.user, credentials.password


# How long the pooler's login read from the database Secret is used before it is read again.
# Read every round it cost one GET per pooler service a round (500 a second at 1,000 services
# every 2 s); a changed password still reaches the guard within a round, since a refused
# login drops it.
LOGIN_READ_SECONDS = 60.0


@dataclass(frozen=True)
class CachedLogin:
    read_at: float  # monotonic
    secret: str | None  # the Secret it came from
    login: tuple[str, str] | None  # None: the read failed (retried next round)


@dataclass
class RoundShares:
    """This round's assignment, and the other peers' reads of their shares (merged)."""

    me: str
    assignment: Assignment
    reads: asyncio.Task[dict[ServiceKey, Samples]]

    def mine(self, pod: collector.PodTarget) -> bool:
        return self.assignment.owns(self.me, pod.shard_key)

    async def of(self, key: ServiceKey) -> Samples:
        return (await self.reads).get(key, {})


class RpsCollection:
    """One collection round over every DjangoService: read its pods from the index, publish
    per-pod values, write status if it changed. The stable/panic windows of each service are
    kept across rounds, and dropped with the service. With `reader`, the other live peers
    read their share of the pods (`djangoscale.autoscaling.sharding`)."""

    def __init__(self, context: OperatorContext,
                 services: kopf.Index[ServiceKey, dict[str, Any]],
                 pods: kopf.Index[ServiceKey, collector.PodTarget],
                 poolers: kopf.Index[ServiceKey, collector.PodTarget],
                 reader: ShardReader | None = None) -> None:
        self.context, self.services, self.pods = context, services, pods
        self.poolers, self.reader = poolers, reader
        self.windows: dict[ServiceKey, ServiceWindows] = {}
        self.logins: dict[ServiceKey, CachedLogin] = {}
        self.parsed = spec.ParsedSpecs()
        self.assigned_peers: set[str] = set()  # the peers SHARD_ASSIGNED_PODS has a value for

    async def shares(self, specs: dict[ServiceKey, spec.DjangoService]) -> RoundShares | None:
        """Send every other live, reachable peer its share of this round's pods; None when
        this replica reads them all."""
        if self.reader is None:
            return None
        me = self.reader.shards.me
        addresses = {}
        for peer in await self.context.live_peer_names():
            if peer != me and (ip := await self.context.peer_ip(peer)) is not None:
                addresses[peer] = f"http://{ip}:{self.context.settings.shard_port}"
        assignment = self.reader.assignment([me, *addresses])
        work: dict[str, dict[ServiceKey, list[tuple[str, str]]]] = {}
        ports: dict[ServiceKey, int] = {}
        assigned = dict.fromkeys(assignment.peers, 0)
        seen: list[str] = []
        for key, ds in specs.items():
            ports[key] = ds.metrics_port
            for pod in collector.read_targets(ds, self.pods.get(key, [])):
                seen.append(pod.shard_key)
                owner = assignment.owner(pod.shard_key)
                assigned[owner] += 1
                if owner != me:
                    work.setdefault(owner, {}).setdefault(key, []).append((pod.name, pod.ip))
        assignment.retain(seen)
        self.publish_assignment(assigned)
        if assignment.peers == (me,):
            return None
        reader = self.reader

        async def read_all() -> dict[ServiceKey, Samples]:
            reads = await asyncio.gather(*(
                reader.read(peer, addresses[peer] + SHARD_READ_PATH, {
                    key: ShareOfService(ports[key], tuple(pods)) for key, pods in share.items()})
                for peer, share in work.items()))
            merged: dict[ServiceKey, Samples] = {}
            for found in reads:
                for key, samples in found.items():
                    merged.setdefault(key, {}).update(samples)
            return merged

        return RoundShares(me, assignment, asyncio.create_task(read_all()))

    def publish_assignment(self, assigned: dict[str, int]) -> None:
        """The pods each live peer reads this round, on the operator's metrics port (a peer
        that left drops out of it)."""
        for peer in self.assigned_peers - set(assigned):
            with contextlib.suppress(KeyError):
                SHARD_ASSIGNED_PODS.remove(peer)
        for peer, count in assigned.items():
            SHARD_ASSIGNED_PODS.labels(peer).set(count)
        self.assigned_peers = set(assigned)

    async def pooler_login(self, key: ServiceKey,
                           ds: spec.DjangoService) -> tuple[str, str] | None:
        """The app's login for the pooler's admin console: read from the database Secret
        at most every LOGIN_READ_SECONDS (and again at once after a failed read or login)."""
        now = time.monotonic()
        secret = ds.database.secret_name if ds.database else None
        cached = self.logins.get(key)
        if (cached is None or cached.login is None or cached.secret != secret
                or now - cached.read_at >= LOGIN_READ_SECONDS):
            login = await asyncio.to_thread(database_login, self.context.api, ds)
            cached = self.logins[key] = CachedLogin(now, secret, login)
        return cached.login

    async def round(self) -> None:
        with COLLECTION_ROUND_SECONDS.time():
            await self.collect_all()

    async def collect_all(self) -> None:
        services = background.latest(self.services)
        for key in set(self.logins) - set(services):
            del self.logins[key]
        for key in set(self.windows) - set(services):
            del self.windows[key]
            with contextlib.suppress(KeyError):
                DATABASE_BUDGET.remove(*key)
            for store in self.context.web_stores.values():
                store.drop(*key)
        if services:
            # Ready while there is something to collect: a standby peer, whose watches kopf
            # holds, stays out of the APIService's endpoints as before.
            self.context.rps.beat()
        # Parsed once a round, for the shares and the collection alike.
        self.parsed.retain(services)
        specs = {key: ds for key, body in services.items()
                 if (ds := parse_enabled(body, self.parsed))}
        shares = await self.shares(specs)
        await background.each(services.items(),
                              lambda item: self.collect(item, specs.get(item[0]), shares),
                              logger, "RPS collection", describe=lambda item: item[0])
        if shares is not None:
            await asyncio.gather(shares.reads, return_exceptions=True)

    async def collect(self, item: tuple[ServiceKey, dict[str, Any]],
                      ds: spec.DjangoService | None, shares: RoundShares | None = None) -> None:
        """One DjangoService's round; `ds` is its parsed spec, None when it does not
        autoscale (or its spec is wrong)."""
        (namespace, name), body = item
        context, stores = self.context, self.context.web_stores
        if ds is None:
            for store in stores.values():
                store.drop(namespace, name)
            return
        windows = self.windows.get((namespace, name))
        if windows is None:
            # Window lengths come from the spec at each round; the values the last status gave
            # carry over a takeover (a new operator starts from them, not from nothing).
            windows = self.windows[(namespace, name)] = ServiceWindows(
                carried=collector.carried_rates(body),
                carried_values=collector.carried_values(body))
        pods = list(self.pods.get((namespace, name), []))
        poolers = list(self.poolers.get((namespace, name), []))
        login = await self.pooler_login((namespace, name), ds) if ds.uses_pooler else None
        reading = await collector.collect(
            ds, pods, windows, context.scraper,
            mine=None if shares is None else shares.mine,
            remote=None if shares is None else shares.of((namespace, name)),
            poolers=poolers, pooler_login=login)
        if login is not None and reading.pods_reporting < sum(1 for p in poolers if p.ip):
            # A pooler pod refused the login (a changed password) or did not answer: the
            # next round reads the Secret again.
            self.logins.pop((namespace, name), None)
        if reading.budget is not None:
            DATABASE_BUDGET.labels(namespace, name).set(reading.budget)
        labels = {pod.name: pod.label_dict for pod in pods}
        # RPS is served whatever the metric (its status is the takeover's starting point).
        served = {RPS_METRIC: reading.decision.per_pod, **collector.served_values(ds, reading)}
        for metric, store in stores.items():
            if metric in served:
                store.put(namespace, name, [
                    PodValue(pod, labels.get(pod, {}), value)
                    for pod, value in served[metric].items()
                ])
            else:
                store.drop(namespace, name)
        for warning in (collector.budget_warning(body, reading),
                        collector.saturation_warning(body, reading)):
            if warning is not None:
                await asyncio.to_thread(k8s.warn, context.api, body, *warning)
        patch = collector.status_patch(body, reading, ds)
        if patch is not None:
            # The patch replaces the whole conditions list, merged into the index's body: only
            # onto that very version, or a condition the reconciler wrote since (a kubelet
            # failure, a failed migration) would be put back as it was, and its event posted
            # again when it comes back.
            try:
                await asyncio.to_thread(context.api.patch_status, API_VERSION, KIND,
                                        namespace, name, patch,
                                        body.get("metadata", {}).get("resourceVersion"))
            except ApiError as error:
                if error.status == 409:
                    logger.debug("RPS status of %s/%s: the object moved on; next round",
                                 namespace, name)
                    return
                logger.warning("could not write RPS status of %s/%s: %s %s", namespace, name,
                               error.status, error.reason)


def parse_enabled(body: dict[str, Any], parsed: spec.ParsedSpecs) -> spec.DjangoService | None:
    """The DjangoService, if it autoscales (a spec error is the reconciler's to report)."""
    try:
        ds = parsed.parse(body)
    except spec.SpecError:
        return None
    return ds if ds.autoscaling.enabled else None


def ready_max_age(settings: OperatorSettings) -> float:
    """How long after the collector's latest round the metrics API still serves: a few missed
    rounds (a slow API) do not flap it, nor, with sharding, a round that waited its whole
    PEER_READ_INTERVALS for a peer that does not answer (a frozen or lost node) before reading
    the share itself."""
    rounds = READY_MISSED_ROUNDS + (PEER_READ_INTERVALS if settings.shard_port >= 0 else 0)
    return max(READY_MIN_AGE_SECONDS, rounds * settings.scrape_interval)


def shard_reader(context: OperatorContext) -> ShardReader | None:
    """In a pod of a peered operator with sharding on: the active peer's side of it."""
    settings = context.settings
    if context.peering is None or settings.pod_name is None or settings.shard_port < 0:
        return None
    if settings.key_file is None:
        # The exchange is signed with the metrics API's key, which only the chart's Secret
        # gives every replica alike.
        logger.warning("sharded collection needs the metrics API's key file; reading every "
                       "pod here")
        return None
    return ShardReader(settings.pod_name, context.scraper,
                       timeout=PEER_READ_INTERVALS * settings.scrape_interval,
                       key_file=settings.key_file)


@kopf.on.startup()
async def start_rps_collection(memo: object, djangoservices: kopf.Index[ServiceKey, Any],
                               rps_pods: kopf.Index[ServiceKey, Any],
                               pooler_pods: kopf.Index[ServiceKey, Any], **_: Any) -> None:
    """One collecting loop for all DjangoServices, every `scrape_interval` (not a daemon per
    object: that would bring kopf's finalizer, see `djangoscale.background`)."""
    context = context_of(memo)
    collection = RpsCollection(context, djangoservices, rps_pods, pooler_pods,
                               shard_reader(context))
    context.start("rps-collection", background.run_every(
        context.settings.scrape_interval, collection.round, logger, "RPS collection",
        active=context.active))


def read_requestheader_configmap(api: Api) -> dict[str, Any]:
    namespace, name = REQUESTHEADER_CONFIGMAP
    configmap = api.get("v1", "ConfigMap", namespace, name)
    if configmap is None:
        raise ValueError("the ConfigMap does not exist")
    return configmap


@kopf.on.startup()
async def start_metrics_api(logger: kopf.Logger, memo: object, **_: Any) -> None:
    context = context_of(memo)
    settings = context.settings
    bind = settings.bind or "0.0.0.0"
    if settings.port < 0:
        logger.info("custom.metrics.k8s.io server disabled")
        return
    try:
        configmap = await asyncio.to_thread(read_requestheader_configmap, context.api)
        client_ca, allowed_names = requestheader_settings(configmap)
    except (ApiError, ValueError) as error:
        # The reconciler is still useful without the metrics API: say why and go on.
        logger.error("not serving custom.metrics.k8s.io: cannot read %s/%s: %s",
                     *REQUESTHEADER_CONFIGMAP, getattr(error, "reason", error))
        return
    if settings.cert_file and settings.key_file:
        cert_file, key_file = settings.cert_file, settings.key_file
    else:
        generated = generate_serving_cert(settings.cert_dns_names)
        cert_file, key_file = write_serving_cert(generated)
        logger.info("serving with a generated certificate (APIService needs "
                    "insecureSkipTLSVerify, or give --metrics-api-cert-file/--key-file)")
    tls = server_ssl_context(cert_file, key_file, client_ca)
    app = build_app(context.rps, allowed_names, ready_max_age=ready_max_age(settings),
                    extra=context.extra_pod_metrics)
    try:
        runner, port = await start_server(app, tls, bind, settings.port)
    except OSError as error:
        # Not fatal for reconciling, and kopf would retry a failed startup handler forever.
        logger.error("not serving custom.metrics.k8s.io on %s:%d: %s", bind, settings.port,
                     error)
        return
    # On the operator's own memo, before kopf copies it for any object.
    context.metrics_server = runner
    logger.info("serving custom.metrics.k8s.io/v1beta2 on https://%s:%d (clients: %s)",
                bind, port, ", ".join(allowed_names) or "any front-proxy cert")


@kopf.on.startup()
async def start_shard_server(logger: kopf.Logger, memo: object, **_: Any) -> None:
    """On every replica, standby included: the endpoint where the active peer sends this
    replica its share of the pods to read."""
    context = context_of(memo)
    reader = shard_reader(context)
    if reader is None:
        return
    runner = web.AppRunner(build_shard_app(context.scraper, reader.key_file), access_log=None)
    await runner.setup()
    bind = context.settings.bind or "0.0.0.0"
    try:
        await web.TCPSite(runner, bind, context.settings.shard_port).start()
    except OSError as error:
        await runner.cleanup()
        logger.error("not reading a share of the pods on %s:%d: %s", bind,
                     context.settings.shard_port, error)
        return
    context.shard_server = runner
    logger.info("reading a share of the pods on request at http://%s:%d%s", bind,
                context.settings.shard_port, SHARD_READ_PATH)


class ActivePeerLabel:
    """Keeps the operator's own pod labelled while it is the active peer, and unlabelled while
    it stands by (`djangoscale.peering` says why). The first round writes either way: a
    restarted container finds the label its previous process left."""

    def __init__(self, context: OperatorContext, namespace: str, pod: str) -> None:
        self.context, self.namespace, self.pod = context, namespace, pod
        self.labelled: bool | None = None

    async def round(self) -> None:
        active = await self.context.active_pod(self.pod)
        if active == self.labelled:
            return
        await asyncio.to_thread(
            self.context.api.call, "PATCH", object_path("v1", "Pod", self.namespace, self.pod),
            body=active_peer_patch(active), content_type=MERGE_PATCH)
        self.labelled = active
        logger.info("pod %s/%s %s", self.namespace, self.pod,
                    "labelled as the active peer" if active else "is on standby: unlabelled")


@kopf.on.startup()
async def start_active_peer_label(memo: object, **_: Any) -> None:
    """In a pod (the chart gives its name and namespace): label it while it is the active
    peer, for the metrics API Service."""
    context = context_of(memo)
    pod, namespace = context.settings.pod_name, context.settings.pod_namespace
    if pod is None or namespace is None:
        return
    label = ActivePeerLabel(context, namespace, pod)
    context.start("active-peer-label", background.run_every(
        ACTIVE_PEER_LABEL_SECONDS, label.round, logger, "active peer label"))
