"""The typed model of a DjangoService, parsed and validated once.

Validation runs the CRD's own OpenAPI schema (the file in `crds/`, shipped as package data,
checked by `djangoscale.schema` as the API server checks it, unknown fields included) and then
the cross-field rules the CRD states in CEL, with the same messages. So `djangoscale
render`, the operator and the API server's admission all refuse the same objects, and the
defaults live in one place: the schema.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from djangoscale import schema
from djangoscale.budget import budget_problems, pods_at_most, threads_at_most
from djangoscale.contract import (
    CONCURRENCY,
    DEFAULT_CONCURRENCY_SHARE,
    DEFAULT_THREADS,
    GROUP,
    GROWING_SERVER,
    KIND,
    PLURAL,
    QUEUE_TIME,
    QUEUE_TIME_SERVERS,
    RPS,
    SINGLE_THREADED_SERVERS,
    VERSION,
)

__all__ = ["DEFAULT_THREADS", "GROUP", "KIND", "PLURAL", "VERSION"]

NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Children are named <name>-database, <name>-worker-<group>: the Service name is a DNS label.
MAX_NAME_LENGTH = 47
# Pod-level fields passed through to the pod template unchanged, by their spec name.
POD_OPTIONS = (
    "podAnnotations", "podLabels", "nodeSelector", "tolerations", "affinity",
    "topologySpreadConstraints", "priorityClassName",
)


class SpecError(ValueError):
    """A DjangoService that cannot be run, with one line per problem naming the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ServerSpec:
    type: str
    workers: int
    threads: int
    max_threads: int
    queue_size: int
    timeout_seconds: int

    @property
    def concurrency(self) -> int:
        """Requests one pod may run at once: each may hold a database connection."""
        return self.workers * self.max_threads


@dataclass(frozen=True)
class ScalePolicy:
    stabilization_window_seconds: int
    max_percent_per_period: int
    max_pods_per_period: int
    period_seconds: int
    tolerance: float | None = None  # None: the cluster's default (the HPA omits the field)


# `autoscaling.behavior.preset` -> (scaleUp, scaleDown). A field given in the spec overrides its
# preset value. The HPA's own default (2x or +4 pods per 15 s) throttles what the panic window
# sees; `burst` lets one period add 9x the pods, so one HPA sync after the panic window sees
# a 10x step, the Deployment asks for 10x the pods.
BEHAVIOR_PRESETS: dict[str, tuple[ScalePolicy, ScalePolicy]] = {
    "conservative": (ScalePolicy(60, 50, 2, 30), ScalePolicy(600, 5, 1, 120)),
    "default": (ScalePolicy(0, 100, 4, 15), ScalePolicy(300, 10, 2, 60)),
    "burst": (ScalePolicy(0, 900, 100, 15), ScalePolicy(300, 10, 2, 60)),
}


@dataclass(frozen=True)
class PrometheusSource:
    address: str
    query: str

    def query_for(self, namespace: str, name: str) -> str:
        return self.query.replace("{namespace}", namespace).replace("{name}", name)


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool
    target_rps_per_pod: int
    scale_up: ScalePolicy
    scale_down: ScalePolicy
    # The RPS windows and the burst rule (`djangoscale.autoscaling.windows`); defaults in the CRD.
    stable_window_seconds: int
    panic_window_seconds: int
    panic_threshold: float
    prometheus: PrometheusSource | None = None
    # What the HPA scales on (one HPA metric each); targets per pod.
    metrics: tuple[str, ...] = (RPS,)
    target_concurrency: int = 1
    target_queue_time_ms: int = 100
    # Cap the served values while the pods' pgbouncers make clients wait (DatabaseSaturated).
    database_ceiling: bool = True

    def target_of(self, metric: str) -> float:
        """The target per pod of one of `metrics`, in what the operator serves (queue time in
        seconds)."""
        return {RPS: float(self.target_rps_per_pod), CONCURRENCY: float(self.target_concurrency),
                QUEUE_TIME: self.target_queue_time_ms / 1000}[metric]


@dataclass(frozen=True)
class DatabaseSpec:
    secret_name: str | None
    max_connections: int
    reserved_connections: int

    @property
    def pool_budget(self) -> int:
        """Connections the pods may share once the reserve is kept aside."""
        return self.max_connections - self.reserved_connections


@dataclass(frozen=True)
class PgBouncerSpec:
    enabled: bool
    pool_mode: str
    max_client_conn: int | None
    pool_size: int | None
    image: str


@dataclass(frozen=True)
class PoolerSpec:
    """The pgbouncer Deployment of pooling.mode pooler: the app's pods connect to its Service,
    and the budget is divided over its pods (its image and poolMode are spec.pgbouncer's)."""

    min_replicas: int
    max_replicas: int
    max_client_conn: int
    target_cpu_utilization: int
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerGroup:
    """A Celery worker Deployment: native threads and fair prefetch by default."""

    name: str
    app: str
    queues: tuple[str, ...]
    concurrency: int
    pool: str
    prefetch_multiplier: int
    acks_late: bool
    min_replicas: int
    max_replicas: int
    target_queue_length_per_worker: int
    resources: dict[str, Any] = field(default_factory=dict)
    # More `celery worker` arguments, after the operator's.
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class BrokerSpec:
    type: str
    secret_name: str


@dataclass(frozen=True)
class MigrationsSpec:
    """The migration Job that gates a rollout (docs/lifecycle.md)."""

    enabled: bool
    command: tuple[str, ...]
    active_deadline_seconds: int
    backoff_limit: int


MIGRATIONS_OFF = MigrationsSpec(False, (), 1, 0)


@dataclass(frozen=True)
class IngressSpec:
    hosts: tuple[str, ...]
    class_name: str | None = None
    tls_secret_name: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewaySpec:
    """An HTTPRoute: parentRefs as written (Gateway API ParentReference fields)."""

    parent_refs: tuple[dict[str, Any], ...]
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class StaticFilesSpec:
    """collectstatic at pod start into an emptyDir (off: collected at image build time)."""

    enabled: bool
    command: tuple[str, ...]
    mount_path: str


STATIC_FILES_IN_IMAGE = StaticFilesSpec(False, (), "/")


@dataclass(frozen=True)
class BeatSpec:
    """The one Celery beat scheduler."""

    app: str
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DjangoService:
    name: str
    namespace: str
    uid: str | None
    generation: int | None
    image: str
    image_pull_policy: str
    image_pull_secrets: tuple[str, ...]
    wsgi_app: str
    port: int
    metrics_port: int
    service_account_name: str | None
    server: ServerSpec
    min_replicas: int
    max_replicas: int
    autoscaling: AutoscalingSpec
    database: DatabaseSpec | None
    pgbouncer: PgBouncerSpec
    # pgbouncer (a sidecar per pod), pooler (a pgbouncer Deployment the pods connect to),
    # django (Django's own psycopg pool per process), none, or external (the user's pooler
    # outside the pod; the operator does not divide the budget).
    pooling_mode: str
    resources: dict[str, Any] = field(default_factory=dict)
    env: tuple[dict[str, Any], ...] = ()
    max_unavailable: int | str = 1
    workers: tuple[WorkerGroup, ...] = ()
    broker: BrokerSpec | None = None
    # Passed through to the pod as written (validated by the API server's own pod schema).
    pod_options: dict[str, Any] = field(default_factory=dict)
    env_from: tuple[dict[str, Any], ...] = ()
    migrations: MigrationsSpec = MIGRATIONS_OFF
    ingress: IngressSpec | None = None
    gateway: GatewaySpec | None = None
    beat: BeatSpec | None = None
    static_files: StaticFilesSpec = STATIC_FILES_IN_IMAGE
    # Set with pooling.mode pooler (which needs a database), else None.
    pooler: PoolerSpec | None = None

    @property
    def max_pods(self) -> int:
        """The most pods that can hold database connections at once, surge pods included."""
        return pods_at_most(self.max_replicas, [w.max_replicas for w in self.workers],
                            beat=self.beat is not None)

    @property
    def uses_pgbouncer(self) -> bool:
        return self.database is not None and self.pooling_mode == "pgbouncer"

    @property
    def uses_pooler(self) -> bool:
        return self.pooler is not None

    @property
    def uses_django_pool(self) -> bool:
        return self.database is not None and self.pooling_mode == "django"


@functools.cache
def crd() -> dict[str, Any]:
    text = resources.files("djangoscale").joinpath("data/crd.yaml").read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def crd_version() -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in crd()["spec"]["versions"] if v["name"] == VERSION)
    return found


def spec_schema() -> dict[str, Any]:
    found: dict[str, Any] = crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return found


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in schema defaults as the API server does (structural defaulting)."""
    if isinstance(value, list) and schema.get("type") == "array":
        return [apply_defaults(item, schema.get("items", {})) for item in value]
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    result = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in result and "default" in sub:
            result[key] = copy.deepcopy(sub["default"])
        if key in result:
            result[key] = apply_defaults(result[key], sub)
    return result


def schema_problems(spec: dict[str, Any]) -> list[str]:
    """The CRD schema's verdict on a spec (defaults applied): types, bounds, unknown fields."""
    found = schema.problems(spec, spec_schema())
    return [f"{schema.field_path('spec', path)}: {message}"
            for path, message in sorted(found, key=lambda item: list(item[0]))]


def cross_field_problems(spec: dict[str, Any]) -> list[str]:
    """The CRD's CEL rules, in Python: the CRD's message, then the figures CEL cannot print.

    (The API server refuses a `messageExpression` with `string(int)` as too costly, so the
    admission messages are static; these add the numbers.)
    """
    problems = []
    replicas, server = spec["replicas"], spec["server"]
    if replicas["min"] > replicas["max"]:
        problems.append(
            "spec.replicas.min: must be <= spec.replicas.max "
            f"({replicas['min']} > {replicas['max']})"
        )
    threads, max_threads = server.get("threads"), server.get("maxThreads")
    if threads is not None and max_threads is not None and max_threads < threads:
        problems.append(
            f"spec.server.maxThreads: must be >= spec.server.threads ({max_threads} < {threads})"
        )
    if server["type"] in SINGLE_THREADED_SERVERS and threads not in (None, 1):
        problems.append(
            "spec.server.threads: gunicorn-sync and bjoern serve one request at a time per "
            "worker; threads must be 1 (use gunicorn-gthread or cherrypy for threads)"
        )
    if (
        server["type"] != GROWING_SERVER
        and threads is not None
        and max_threads is not None
        and max_threads != threads
    ):
        problems.append(
            "spec.server.maxThreads: only cherrypy grows its pool; for other servers set it "
            f"equal to spec.server.threads or leave it out ({server['type']})"
        )
    if spec["metricsPort"] == spec["port"]:
        problems.append("spec.metricsPort: must differ from spec.port")
    autoscaling = spec["autoscaling"]
    if autoscaling["panicWindowSeconds"] >= autoscaling["stableWindowSeconds"]:
        problems.append(
            "spec.autoscaling.panicWindowSeconds: must be shorter than "
            "spec.autoscaling.stableWindowSeconds "
            f"({autoscaling['panicWindowSeconds']} >= {autoscaling['stableWindowSeconds']})"
        )
    problems += _metric_problems(spec)
    env_names = [item["name"] for item in spec.get("env", [])]
    for index, name in enumerate(env_names):
        if name in env_names[:index]:
            problems.append(f"spec.env[{index}]: duplicate name {name!r} (set each variable once)")
    problems += _worker_problems(spec)
    explicit_mode = spec["pooling"].get("mode")
    mode = pooling_mode(spec)
    if explicit_mode == "pgbouncer" and not spec["pgbouncer"]["enabled"]:
        problems.append("spec.pooling.mode: pgbouncer contradicts spec.pgbouncer.enabled=false")
    problems += _pooler_problems(spec, mode)
    database = spec.get("database")
    if database is not None:
        problems += budget_problems(spec, database, mode, explicit_mode)
    problems += _lifecycle_problems(spec)
    return problems


def _pooler_problems(spec: dict[str, Any], mode: str) -> list[str]:
    """The pooler's own rules; its budget rules are in `budget_problems`."""
    problems = []
    replicas = spec["pooling"]["pooler"]["replicas"]
    if replicas["min"] > replicas["max"]:
        problems.append(
            "spec.pooling.pooler.replicas.min: must be <= spec.pooling.pooler.replicas.max "
            f"({replicas['min']} > {replicas['max']})"
        )
    if mode == "pooler" and "database" not in spec:
        problems.append("spec.pooling.mode: pooler needs spec.database (there is no database "
                        "to pool)")
    if mode == "pooler" and spec["pgbouncer"]["poolMode"] != "transaction":
        problems.append(
            "spec.pgbouncer.poolMode: pooling.mode pooler shares a few server connections "
            "among every app thread; session pooling would tie one to each client for its life "
            "(use transaction)"
        )
    if mode == "pooler" and not spec["pgbouncer"]["enabled"]:
        problems.append("spec.pooling.mode: pooler runs pgbouncer; it contradicts "
                        "spec.pgbouncer.enabled=false")
    return problems


def scaling_metrics(autoscaling: dict[str, Any]) -> tuple[str, ...]:
    """`metrics` as given, else the one `metric` (rps when neither is given)."""
    if "metrics" in autoscaling:
        return tuple(autoscaling["metrics"])
    return (autoscaling.get("metric", RPS),)


def default_target_concurrency(pod_concurrency: int) -> int:
    """70 % of what one pod runs at once, as Knative targets 70 % of a container's."""
    return max(1, int(pod_concurrency * DEFAULT_CONCURRENCY_SHARE))


def _metric_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    autoscaling, server = spec["autoscaling"], spec["server"]
    if "metric" in autoscaling and "metrics" in autoscaling:
        problems.append("spec.autoscaling.metrics: give spec.autoscaling.metric (one) or "
                        "spec.autoscaling.metrics (several), not both")
    metrics = scaling_metrics(autoscaling)
    if QUEUE_TIME in metrics and server["type"] not in QUEUE_TIME_SERVERS:
        problems.append(
            "spec.autoscaling.metric: queueTime needs a server whose launcher sees the wait "
            "before a thread takes a request (cherrypy, gunicorn-gthread, waitress); use "
            f"concurrency with this spec.server.type ({server['type']})")
    pod_concurrency = server["workers"] * threads_at_most(server)
    target = autoscaling.get("targetConcurrency")
    if target is not None and target > pod_concurrency:
        problems.append(
            "spec.autoscaling.targetConcurrency: must be <= what one pod runs at once "
            f"(spec.server.workers x maxThreads) ({target} > {pod_concurrency})")
    if "prometheus" in autoscaling and set(metrics) - {RPS}:
        problems.append(
            "spec.autoscaling.prometheus: gives requests per second only; concurrency and "
            "queueTime are read from the pods (leave prometheus out)")
    return problems


def migrations_enabled(spec: dict[str, Any]) -> bool:
    """On by default when there is a database to migrate."""
    enabled: bool = spec["migrations"].get("enabled", "database" in spec)
    return enabled


def _lifecycle_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    database = spec.get("database")
    if database is not None and migrations_enabled(spec) and database["reservedConnections"] < 1:
        problems.append(
            "spec.database.reservedConnections: the migration Job connects on a reserved "
            "connection: must be >= 1 while spec.migrations is enabled (or set "
            "spec.migrations.enabled: false)"
        )
    if "beat" in spec:
        if "broker" not in spec:
            problems.append("spec.broker: required when spec.beat is set")
        for index, group in enumerate(spec.get("workers", [])):
            if any(runs_beat(arg) for arg in group.get("args", [])):
                problems.append(BEAT_IN_A_WORKER.replace("[]", f"[{index}]", 1))
    return problems


BEAT_IN_A_WORKER = (
    "spec.workers[].args: -B/--beat would run a second scheduler inside the worker; spec.beat "
    "already runs the one scheduler (drop the flag)"
)


def runs_beat(arg: str) -> bool:
    """`celery worker -B` / `--beat` embeds a beat scheduler in the worker."""
    return arg == "--beat" or arg.startswith("--beat=") or arg.startswith("-B")


def _worker_problems(spec: dict[str, Any]) -> list[str]:
    problems = []
    workers = spec.get("workers", [])
    if workers and "broker" not in spec:
        problems.append("spec.broker: required when spec.workers is set")
    names = [group["name"] for group in workers]
    for index, group in enumerate(workers):
        where = f"spec.workers[{index}]"
        if names.count(group["name"]) > 1:
            problems.append(f"{where}.name: duplicate worker group name {group['name']!r}")
        if group["pool"] == "gevent" and not group["allowGevent"]:
            problems.append(
                f"{where}.pool: gevent needs allowGevent: true (monkey patching leaks database "
                "connections; threads are the default for a reason)"
            )
        if group["replicas"]["min"] > group["replicas"]["max"]:
            problems.append(
                f"{where}.replicas.min: must be <= replicas.max "
                f"({group['replicas']['min']} > {group['replicas']['max']})"
            )
    return problems


def pooling_mode(spec: dict[str, Any]) -> str:
    explicit: str | None = spec["pooling"].get("mode")
    if explicit is not None:
        return explicit
    return "pgbouncer" if spec["pgbouncer"]["enabled"] else "none"


def _scale_policy(raw: dict[str, Any], preset: ScalePolicy) -> ScalePolicy:
    """The preset's rules with the fields the spec gives."""
    return ScalePolicy(
        stabilization_window_seconds=raw.get("stabilizationWindowSeconds",
                                             preset.stabilization_window_seconds),
        max_percent_per_period=raw.get("maxPercentPerPeriod", preset.max_percent_per_period),
        max_pods_per_period=raw.get("maxPodsPerPeriod", preset.max_pods_per_period),
        period_seconds=raw.get("periodSeconds", preset.period_seconds),
        tolerance=raw.get("tolerance", preset.tolerance),
    )


def _server(raw: dict[str, Any]) -> ServerSpec:
    return ServerSpec(
        type=raw["type"],
        workers=raw["workers"],
        threads=raw.get("threads", DEFAULT_THREADS[raw["type"]]),
        max_threads=threads_at_most(raw),
        queue_size=raw["queueSize"],
        timeout_seconds=raw["timeoutSeconds"],
    )


def parse(body: dict[str, Any]) -> DjangoService:
    """Parse a DjangoService object (as from the API or a YAML file); raise SpecError."""
    problems = []
    if body.get("apiVersion") not in (None, f"{GROUP}/{VERSION}"):
        problems.append(f"apiVersion: must be {GROUP}/{VERSION}")
    if body.get("kind") not in (None, KIND):
        problems.append(f"kind: must be {KIND}")
    declared = crd_version()["schema"]["openAPIV3Schema"]["properties"]
    problems += [f"{key}: unknown field (not declared in the schema)" for key in body
                 if key not in declared]
    metadata = body.get("metadata") or {}
    if not metadata.get("name"):
        problems.append("metadata.name: required")
    elif not NAME_PATTERN.match(metadata["name"]) or len(metadata["name"]) > MAX_NAME_LENGTH:
        problems.append(
            "metadata.name: must be a DNS-1035 label (lowercase letters, digits, '-', starting "
            f"with a letter) of at most {MAX_NAME_LENGTH} characters: it names the Service, and "
            "the children add suffixes"
        )
    raw_spec = body.get("spec")
    if not isinstance(raw_spec, dict):
        raise SpecError(problems + ["spec: required"])
    spec = apply_defaults(raw_spec, spec_schema())
    problems += schema_problems(spec)
    if problems:
        raise SpecError(problems)
    problems = cross_field_problems(spec)
    if problems:
        raise SpecError(problems)

    autoscaling = spec["autoscaling"]
    behavior = autoscaling["behavior"]
    preset_up, preset_down = BEHAVIOR_PRESETS[behavior["preset"]]
    database = spec.get("database")
    pgbouncer = spec["pgbouncer"]
    return DjangoService(
        name=metadata["name"],
        namespace=metadata.get("namespace") or "default",
        uid=metadata.get("uid"),
        generation=metadata.get("generation"),
        image=spec["image"],
        image_pull_policy=spec["imagePullPolicy"],
        image_pull_secrets=tuple(spec.get("imagePullSecrets", ())),
        wsgi_app=spec["wsgiApp"],
        port=spec["port"],
        metrics_port=spec["metricsPort"],
        service_account_name=spec.get("serviceAccountName"),
        server=_server(spec["server"]),
        min_replicas=spec["replicas"]["min"],
        max_replicas=spec["replicas"]["max"],
        autoscaling=AutoscalingSpec(
            enabled=autoscaling["enabled"],
            target_rps_per_pod=autoscaling["targetRPSPerPod"],
            scale_up=_scale_policy(behavior["scaleUp"], preset_up),
            scale_down=_scale_policy(behavior["scaleDown"], preset_down),
            stable_window_seconds=autoscaling["stableWindowSeconds"],
            panic_window_seconds=autoscaling["panicWindowSeconds"],
            panic_threshold=float(autoscaling["panicThreshold"]),
            prometheus=None
            if "prometheus" not in autoscaling
            else PrometheusSource(
                address=autoscaling["prometheus"]["address"],
                query=autoscaling["prometheus"]["query"],
            ),
            metrics=scaling_metrics(autoscaling),
            target_concurrency=autoscaling.get("targetConcurrency") or default_target_concurrency(
                spec["server"]["workers"] * threads_at_most(spec["server"])),
            target_queue_time_ms=autoscaling["targetQueueTimeMilliseconds"],
            database_ceiling=autoscaling["databaseCeiling"],
        ),
        database=None
        if database is None
        else DatabaseSpec(
            secret_name=database.get("secretName"),
            max_connections=database["maxConnections"],
            reserved_connections=database["reservedConnections"],
        ),
        pgbouncer=PgBouncerSpec(
            enabled=pgbouncer["enabled"],
            pool_mode=pgbouncer["poolMode"],
            max_client_conn=pgbouncer.get("maxClientConn"),
            pool_size=pgbouncer.get("poolSize"),
            image=pgbouncer["image"],
        ),
        pooling_mode=pooling_mode(spec),
        resources=copy.deepcopy(spec.get("resources", {})),
        env=tuple(copy.deepcopy(spec.get("env", []))),
        max_unavailable=spec["disruption"]["maxUnavailable"],
        workers=tuple(_worker_group(group) for group in spec.get("workers", [])),
        pod_options={key: copy.deepcopy(spec[key]) for key in POD_OPTIONS if key in spec},
        env_from=tuple(copy.deepcopy(spec.get("envFrom", []))),
        broker=None
        if "broker" not in spec
        else BrokerSpec(type=spec["broker"]["type"], secret_name=spec["broker"]["secretName"]),
        migrations=_migrations(spec),
        ingress=_ingress(spec.get("ingress")),
        gateway=None if "gateway" not in spec else GatewaySpec(
            parent_refs=tuple(copy.deepcopy(spec["gateway"]["parentRefs"])),
            hostnames=tuple(spec["gateway"].get("hostnames", ())),
        ),
        beat=None if "beat" not in spec else BeatSpec(
            app=spec["beat"]["app"], resources=copy.deepcopy(spec["beat"].get("resources", {}))),
        pooler=_pooler(spec) if database is not None and pooling_mode(spec) == "pooler" else None,
        static_files=StaticFilesSpec(
            enabled=spec["staticFiles"]["enabled"],
            command=tuple(spec["staticFiles"]["command"]),
            mount_path=spec["staticFiles"]["mountPath"],
        ),
    )


class ParsedSpecs:
    """`parse` for loops that see every DjangoService each round (the collection every 2 s):
    what `parse` reads changes only with the object's metadata.generation (the API server
    bumps it on every spec edit), so each object is parsed once an edit, not once a round.
    At 1,000 objects parsing them all took about 40 % of the operator's CPU at rest."""

    def __init__(self) -> None:
        # (namespace, name) -> ((uid, generation), the spec or its problems)
        self._parsed: dict[tuple[str, str], tuple[tuple[Any, Any],
                                                   DjangoService | list[str]]] = {}

    def parse(self, body: dict[str, Any]) -> DjangoService:
        metadata = body.get("metadata") or {}
        version = (metadata.get("uid"), metadata.get("generation"))
        if None in version:  # not from the API server: nothing says it is unchanged
            return parse(body)
        key = (metadata.get("namespace") or "default", str(metadata.get("name")))
        cached = self._parsed.get(key)
        if cached is None or cached[0] != version:
            try:
                cached = version, parse(body)
            except SpecError as error:
                cached = version, error.problems
            self._parsed[key] = cached
        if isinstance(cached[1], list):
            raise SpecError(cached[1])
        return cached[1]

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget the objects not in `keys` (deleted ones)."""
        keep = set(keys)
        for key in [key for key in self._parsed if key not in keep]:
            del self._parsed[key]


def _pooler(spec: dict[str, Any]) -> PoolerSpec:
    raw = spec["pooling"]["pooler"]
    return PoolerSpec(
        min_replicas=raw["replicas"]["min"],
        max_replicas=raw["replicas"]["max"],
        max_client_conn=raw["maxClientConn"],
        target_cpu_utilization=raw["targetCPUUtilizationPercentage"],
        resources=copy.deepcopy(raw.get("resources", {})),
    )


def _ingress(raw: dict[str, Any] | None) -> IngressSpec | None:
    if raw is None:
        return None
    return IngressSpec(
        hosts=tuple(raw["hosts"]),
        class_name=raw.get("className"),
        tls_secret_name=(raw.get("tls") or {}).get("secretName"),
        annotations=dict(raw.get("annotations", {})),
    )


def _migrations(spec: dict[str, Any]) -> MigrationsSpec:
    raw = spec["migrations"]
    return MigrationsSpec(
        enabled=migrations_enabled(spec),
        command=tuple(raw["command"]),
        active_deadline_seconds=raw["activeDeadlineSeconds"],
        backoff_limit=raw["backoffLimit"],
    )


def _worker_group(raw: dict[str, Any]) -> WorkerGroup:
    return WorkerGroup(
        name=raw["name"],
        app=raw["app"],
        queues=tuple(raw["queues"]),
        concurrency=raw["concurrency"],
        pool=raw["pool"],
        prefetch_multiplier=raw["prefetchMultiplier"],
        acks_late=raw["acksLate"],
        min_replicas=raw["replicas"]["min"],
        max_replicas=raw["replicas"]["max"],
        target_queue_length_per_worker=raw["targetQueueLengthPerWorker"],
        resources=copy.deepcopy(raw.get("resources", {})),
        args=tuple(raw.get("args", ())),
    )
