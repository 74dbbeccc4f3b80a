"""The Deployment: the app container under `djangoscale serve`, and the pgbouncer sidecar.

The pod passes the Kubernetes "restricted" Pod Security Standard. pgbouncer is a native sidecar
(an init container with restartPolicy Always, Kubernetes >= 1.29): it starts before the app and
stops after it, so a draining app never loses its database mid-request.
"""

from __future__ import annotations

from typing import Any

from djangoscale.budget import ROLLOUT_SURGE, size_pool
from djangoscale.builders import pgbouncer
from djangoscale.builders.labels import child_metadata, common_labels, selector_labels
from djangoscale.contract import (
    DATABASE_PASSWORD_ENV,
    DATABASE_USER_ENV,
    GREENLET_SERVER,
    MULTIPROC_DIR_ENV,
    MULTIPROC_DIR_IN_POD,
    PGBOUNCER_ADDRESS_ENV,
    POOLER_STATS_ADDRESS_ENV,
    SERVE_ENV,
)
from djangoscale.spec import DjangoService

CHECKSUM_ANNOTATION = "djangoscale.io/config-checksum"
# Seconds between the pod leaving the endpoints and SIGTERM: load balancers stop sending first.
PRE_STOP_SLEEP = 5
# Seconds a thread keeps its connection to the pod's own pgbouncer (Django's CONN_MAX_AGE):
# between transactions such a client connection holds no server connection, and keeping it
# saves a connect and a SCRAM exchange per request (docs/benchmarks.md: ~2.7x on a DB view).
PERSISTENT_CONN_MAX_AGE = 60
# Readiness: a pod leaves the Service after two failed checks 5 s apart (10 s), quickly
# enough to stop sending requests to a stuck pod, slowly enough to ride out one slow answer.
READINESS_PERIOD_SECONDS = 5
READINESS_FAILURES = 2
# Liveness: restarted only after a minute of failures (6 x 10 s), longer than any request
# the default timeout allows, so a busy pod is never killed for being busy.
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_FAILURES = 6
# Seconds the kubelet waits for /readyz and /healthz. They are answered by the server's own
# threads, behind the requests already queued, and /readyz does a database round trip through
# the pool: under load they take as long as a request does. With the kubelet's default of 1 s,
# a busy pod was marked unready (its load moved to the others) on a real node.
PROBE_TIMEOUT_SECONDS = 5
# pgbouncer starts in well under a second; the app container waits for it up to 30 s.
PGBOUNCER_STARTUP_PERIOD_SECONDS = 1
PGBOUNCER_STARTUP_FAILURES = 30
# What the sidecar needs at rest: pgbouncer is single-threaded and keeps little memory per
# connection. Requests, no limits: a burst may use more.
PGBOUNCER_REQUESTS = {"cpu": "50m", "memory": "32Mi"}
# Beyond the request timeout and the preStop sleep: time for the server to close its
# sockets and the launcher to flush metrics before SIGKILL.
SHUTDOWN_MARGIN_SECONDS = 10
# Owner read-only, group read-only (the fsGroup), nobody else: the files hold credentials.
SECRET_FILE_MODE = 0o440
# The group of the pod's mounted Secret files (fsGroup), which every container also runs with:
# without it the kubelet leaves them root:root, and a non-root pgbouncer cannot read its config.
# Any non-zero gid works; this is the one djangoscale/pgbouncer runs as.
SECRET_FILE_GROUP = 10002
# Old ReplicaSets kept for `kubectl rollout undo`.
REVISION_HISTORY = 5


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def serve_env(ds: DjangoService) -> list[dict[str, Any]]:
    """The launcher reads its flags from these (see `djangoscale serve --help`)."""
    server = ds.server
    settings = {
        "server": server.type,
        "workers": server.workers,
        "threads": server.threads,
        "max_threads": server.max_threads,
        "queue_size": server.queue_size,
        "timeout": server.timeout_seconds,
        "bind": f"0.0.0.0:{ds.port}",
        "metrics_bind": f"0.0.0.0:{ds.metrics_port}",
    }
    env = [{"name": SERVE_ENV[key], "value": str(value)} for key, value in settings.items()]
    return env + [{"name": MULTIPROC_DIR_ENV, "value": MULTIPROC_DIR_IN_POD}]


def conn_max_age(ds: DjangoService, greenlets: bool) -> int:
    """DATABASE_CONN_MAX_AGE: persistent only to the local pgbouncer and only per thread. A
    greenlet's connection would outlive its greenlet; without pgbouncer a kept connection
    is a server connection held idle; Django's own pool needs 0."""
    behind_pgbouncer = ds.uses_pgbouncer or ds.uses_pooler
    return PERSISTENT_CONN_MAX_AGE if behind_pgbouncer and not greenlets else 0


def database_env(
    ds: DjangoService, secret: dict[str, Any], max_age: int
) -> list[dict[str, Any]]:
    """Django settings read these; the password only ever comes from a Secret reference."""
    assert ds.database is not None and ds.database.secret_name is not None
    user_secret = ds.database.secret_name

    def from_secret(name: str, secret_name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}

    env = []
    if ds.uses_pgbouncer:
        env += [
            {"name": "DATABASE_HOST", "value": pgbouncer.LISTEN_HOST},
            {"name": "DATABASE_PORT", "value": str(pgbouncer.LISTEN_PORT)},
            # The launcher exports SHOW POOLS from here for the operator's budget guard.
            {"name": PGBOUNCER_ADDRESS_ENV,
             "value": f"{pgbouncer.LISTEN_HOST}:{pgbouncer.LISTEN_PORT}"},
        ]
    elif ds.uses_pooler:
        # The pooler's Service; the budget guard reads the pooler pods' SHOW POOLS.
        env += [
            {"name": "DATABASE_HOST", "value": pgbouncer.pgbouncer_host(ds)},
            {"name": "DATABASE_PORT", "value": str(pgbouncer.LISTEN_PORT)},
        ]
    else:
        env += [
            from_secret("DATABASE_HOST", user_secret, "host"),
            from_secret("DATABASE_PORT", user_secret, "port"),
        ]
    if ds.uses_django_pool:
        # Read by the settings snippet in docs/pooling.md: OPTIONS={"pool": {"max_size": ...}}.
        env.append(
            {
                "name": "DATABASE_POOL_MAX_SIZE",
                "value": str(size_pool(ds).pool_size_per_process),
            }
        )
    env.append({"name": "DATABASE_CONN_MAX_AGE", "value": str(max_age)})
    env += [
        from_secret("DATABASE_NAME", user_secret, "dbname"),
        from_secret(DATABASE_USER_ENV, user_secret, "user"),
        from_secret(DATABASE_PASSWORD_ENV, user_secret, "password"),
        from_secret("DATABASE_URL", secret["metadata"]["name"], pgbouncer.DATABASE_URL_KEY),
    ]
    return env


def with_user_env(ds: DjangoService, env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's variables, then spec.env; a name spec.env sets replaces ours (two
    entries of one name would be refused by server-side apply)."""
    names = {item["name"] for item in ds.env}
    return [item for item in env if item["name"] not in names] + [dict(item) for item in ds.env]


def build_app_container(ds: DjangoService, secret: dict[str, Any] | None) -> dict[str, Any]:
    env = serve_env(ds)
    if secret is not None:
        greenlets = ds.server.type == GREENLET_SERVER
        env += database_env(ds, secret, max_age=conn_max_age(ds, greenlets))
        if ds.uses_pooler:
            # The web launcher exports the pooler's SHOW POOLS (its waits, from whichever
            # pooler pod answers) for the database ceiling.
            env.append({"name": POOLER_STATS_ADDRESS_ENV,
                        "value": f"{pgbouncer.pgbouncer_host(ds)}:{pgbouncer.LISTEN_PORT}"})
    env = with_user_env(ds, env)
    container: dict[str, Any] = {
        "name": "app",
        "image": ds.image,
        "imagePullPolicy": ds.image_pull_policy,
        "args": ["djangoscale", "serve", ds.wsgi_app],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": ds.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ds.metrics_port, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": READINESS_FAILURES,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": LIVENESS_PERIOD_SECONDS,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": LIVENESS_FAILURES,
        },
        "lifecycle": {"preStop": pre_stop(PRE_STOP_SLEEP)},
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {**container, **app_env_from_and_resources(ds)}


def app_env_from_and_resources(ds: DjangoService) -> dict[str, Any]:
    """The app container's envFrom and resources, for every container that runs the app's code."""
    fields: dict[str, Any] = {}
    if ds.env_from:
        fields["envFrom"] = [dict(item) for item in ds.env_from]
    if ds.resources:
        fields["resources"] = ds.resources
    return fields


def pre_stop(seconds: int) -> dict[str, Any]:
    """The app container's preStop hook (`djangoscale prestop`): tell the server to drain
    (`Connection: close` from then on, so keep-alive clients move to other pods), with a
    pgbouncer sidecar shrink its pool to DRAINING_POOL_SIZE, the share the budget keeps for
    a terminating pod, then wait `seconds` for load balancers to stop sending."""
    return {"exec": {"command": ["djangoscale", "prestop", "--sleep", str(seconds)]}}


def build_pgbouncer_container(ds: DjangoService, secret: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "pgbouncer",
        "image": ds.pgbouncer.image,
        "restartPolicy": "Always",
        "command": ["pgbouncer"],
        "args": [f"{pgbouncer.CONFIG_DIR}/{pgbouncer.INI_KEY}"],
        "ports": [{"name": "pgbouncer", "containerPort": pgbouncer.LISTEN_PORT}],
        "startupProbe": {
            "tcpSocket": {"port": pgbouncer.LISTEN_PORT},
            "periodSeconds": PGBOUNCER_STARTUP_PERIOD_SECONDS,
            "failureThreshold": PGBOUNCER_STARTUP_FAILURES,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "pgbouncer-config", "mountPath": pgbouncer.CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": {"requests": dict(PGBOUNCER_REQUESTS)},
    }


def pod_placement(ds: DjangoService) -> dict[str, Any]:
    """The pod-level fields every pod of this service shares: account, pull secrets, placement."""
    fields: dict[str, Any] = {}
    if ds.service_account_name:
        fields["serviceAccountName"] = ds.service_account_name
    if ds.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in ds.image_pull_secrets]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
                "priorityClassName"):
        if key in ds.pod_options:
            fields[key] = ds.pod_options[key]
    return fields


def pod_security(secret_files: bool = False) -> dict[str, Any]:
    """The restricted pod security context; `secret_files` adds the group that may read the
    pgbouncer Secret's files (SECRET_FILE_MODE)."""
    group = {"fsGroup": SECRET_FILE_GROUP} if secret_files else {}
    return {"runAsNonRoot": True, **group, "seccompProfile": {"type": "RuntimeDefault"}}


def pgbouncer_config_volume(secret: dict[str, Any]) -> dict[str, Any]:
    """pgbouncer's ini and userlist from the database Secret (sidecar and pooler alike)."""
    return {
        "name": "pgbouncer-config",
        "secret": {
            "secretName": secret["metadata"]["name"],
            "items": [
                {"key": pgbouncer.INI_KEY, "path": pgbouncer.INI_KEY},
                {"key": pgbouncer.USERLIST_KEY, "path": pgbouncer.USERLIST_KEY},
            ],
            "defaultMode": SECRET_FILE_MODE,
        },
    }


def build_deployment(ds: DjangoService, secret: dict[str, Any] | None = None) -> dict[str, Any]:
    """The web Deployment. `secret` is the built database Secret when there is a database."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    init_containers = []
    annotations = {}
    if secret is not None:
        annotations[CHECKSUM_ANNOTATION] = pgbouncer.config_checksum(secret)
        if ds.uses_pgbouncer:
            init_containers.append(build_pgbouncer_container(ds, secret))
            volumes.append(pgbouncer_config_volume(secret))
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(secret_files=True),
        "terminationGracePeriodSeconds": (
            ds.server.timeout_seconds + PRE_STOP_SLEEP + SHUTDOWN_MARGIN_SECONDS
        ),
        "enableServiceLinks": False,
        "containers": [build_app_container(ds, secret)],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    pod_spec.update(pod_placement(ds))
    # The user's pod labels never replace the selector labels the Service and HPA rely on.
    labels = {**ds.pod_options.get("podLabels", {}), **common_labels(ds)}
    annotations = {**ds.pod_options.get("podAnnotations", {}), **annotations}

    template = {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}
    return deployment_object(ds, ds.name, "web", template, ds.min_replicas)


def deployment_object(
    ds: DjangoService, name: str, component: str, template: dict[str, Any], min_replicas: int
) -> dict[str, Any]:
    """A Deployment of the web pods or of a worker group: same rollout, same replicas rule."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ds, component)},
        "strategy": {
            "type": "RollingUpdate",
            # The pool sizing counts exactly this one surge pod against the budget.
            "rollingUpdate": {"maxSurge": ROLLOUT_SURGE, "maxUnavailable": 0},
        },
        "revisionHistoryLimit": REVISION_HISTORY,
        "template": template,
    }
    # With an HPA the replicas belong to it: leaving the field out is what keeps the operator
    # and GitOps re-applies from fighting it. Without one, replicas.min pods run.
    if not ds.autoscaling.enabled:
        spec["replicas"] = min_replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(ds, name, component),
        "spec": spec,
    }
