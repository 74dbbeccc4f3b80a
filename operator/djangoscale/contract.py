"""Names that cross a process boundary, written once.

The operator writes them into objects (the CRD, the Deployment's env, labels, the HPA's metric)
and another process reads them (the API server, `djangoscale serve` in the user's pod, the
HPA controller, kubectl). A name that changes on one side only breaks the other silently, so
both sides import it from here, and `tests/unit/test_contract.py` ties this module to the CRD's
enum, to the Deployment builder and to the launcher's configuration.

Pure constants: the launcher imports this module inside the user's Django image.
"""

from __future__ import annotations

from typing import Final

# -- the custom resource -------------------------------------------------------------------------
GROUP: Final = "djangoscale.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DjangoService"
PLURAL: Final = "djangoservices"

# -- server types (the CRD's spec.server.type enum) and their threads per process by default ----
# What each server handles well: sync servers one request per process, threaded ones a pool,
# gevent many greenlets.
DEFAULT_THREADS: Final[dict[str, int]] = {
    "cherrypy": 100,
    "gunicorn-sync": 1,
    "gunicorn-gthread": 32,
    "gunicorn-gevent": 500,
    "bjoern": 1,
    "waitress": 32,
    "granian": 32,
}
SERVER_TYPES: Final[tuple[str, ...]] = tuple(DEFAULT_THREADS)
# Servers that run one request at a time per process (threads must be 1).
SINGLE_THREADED_SERVERS: Final[tuple[str, ...]] = ("gunicorn-sync", "bjoern")
# The only server whose pool grows past `threads` (the launcher grows cheroot's pool).
GROWING_SERVER: Final = "cherrypy"
# Without spec.server.maxThreads its pool grows by half again, so a pool of 100 threads meets
# a burst with up to 150 before requests queue (the CRD's CEL rules repeat it as (3 x t + 1) / 2).
GROWING_SERVER_GROWTH: Final = 1.5
GREENLET_SERVER: Final = "gunicorn-gevent"

# -- what the HPA scales on (the CRD's spec.autoscaling.metric enum) ---------------------------
RPS: Final = "rps"
CONCURRENCY: Final = "concurrency"
QUEUE_TIME: Final = "queueTime"
SCALING_METRICS: Final[tuple[str, ...]] = (RPS, CONCURRENCY, QUEUE_TIME)
# Servers whose launcher sees when a request became ready and when a thread took it (cheroot's
# queue, gthread's pool queue, waitress's task queue). The others hand a request to its
# handler as they accept it, and the kernel's backlog is invisible to the process.
QUEUE_TIME_SERVERS: Final[tuple[str, ...]] = ("cherrypy", "gunicorn-gthread", "waitress")
# targetConcurrency's default share of what one pod runs at once (workers x maxThreads).
DEFAULT_CONCURRENCY_SHARE: Final = 0.7

# -- environment of the app container: written by the Deployment, read by `djangoscale serve` --
# launcher setting -> variable name
SERVE_ENV: Final[dict[str, str]] = {
    "server": "DJANGOSCALE_SERVER",
    "workers": "DJANGOSCALE_WORKERS",
    "threads": "DJANGOSCALE_THREADS",
    "max_threads": "DJANGOSCALE_MAX_THREADS",
    "queue_size": "DJANGOSCALE_QUEUE_SIZE",
    "timeout": "DJANGOSCALE_TIMEOUT",
    "bind": "DJANGOSCALE_BIND",
    "metrics_bind": "DJANGOSCALE_METRICS_BIND",
}
# HOST:PORT of the pod's pgbouncer, set only with pooling.mode pgbouncer: the launcher reads
# its admin console (SHOW POOLS) with the app's database credentials.
PGBOUNCER_ADDRESS_ENV: Final = "DJANGOSCALE_PGBOUNCER"
# HOST:PORT of the pooler's Service, set only with pooling.mode pooler: the launcher exports
# SHOW POOLS from there for the database ceiling, and never changes that pgbouncer (the
# preStop hook, which shrinks a pool, reads PGBOUNCER_ADDRESS_ENV only).
POOLER_STATS_ADDRESS_ENV: Final = "DJANGOSCALE_POOLER_STATS"
DATABASE_USER_ENV: Final = "DATABASE_USER"
DATABASE_PASSWORD_ENV: Final = "DATABASE_PASSWORD"
# prometheus_client's own variable: where the launcher's processes share their metric files.
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_DIR_IN_POD: Final = "/tmp/djangoscale-metrics"
# Where `djangoscale worker` answers the kubelet's /healthz (the worker container's env).
WORKER_HEALTH_BIND_ENV: Final = "DJANGOSCALE_WORKER_HEALTH_BIND"
# The broker URL a Celery worker reads (Celery's own setting name).
CELERY_BROKER_URL_ENV: Final = "CELERY_BROKER_URL"

# -- metrics -------------------------------------------------------------------------------------
# The launcher's request counter, scraped by the operator's collector (`_total` is the suffix
# prometheus_client adds to a Counter's name).
REQUESTS_COUNTER_NAME: Final = "djangoscale_requests"
REQUESTS_COUNTER: Final = f"{REQUESTS_COUNTER_NAME}_total"
# Pod metrics the operator serves on custom.metrics.k8s.io and the HPAs name.
RPS_METRIC: Final = "djangoscale_requests_per_second"
QUEUE_LENGTH_METRIC: Final = "djangoscale_celery_queue_length"
# Requests in the pod at once (in a thread or waiting for one), averaged over the window.
CONCURRENCY_METRIC: Final = "djangoscale_concurrency"
# The p95 of the time requests waited for a thread over the window, in seconds.
QUEUE_TIME_METRIC: Final = "djangoscale_queue_time_p95_seconds"
# The launcher's histograms the collector reads them from: time in the app, and time waiting
# before it (their sums over time give the requests in the pod, by Little's law).
REQUEST_DURATION_NAME: Final = "djangoscale_request_duration_seconds"
REQUEST_QUEUE_NAME: Final = "djangoscale_request_queue_seconds"
# CPU time of the processes that serve requests (a counter): with the time requests spent in
# the app, the operator's advice on workers and threads (status.recommendations).
CPU_SECONDS_NAME: Final = "djangoscale_cpu_seconds"
# The launcher honours this ingress header (nginx `t=${msec}`, Heroku `t=<microseconds>`): the
# wait then starts when the ingress saw the request (WSGI environ key).
REQUEST_START_HEADER: Final = "HTTP_X_REQUEST_START"
# spec.autoscaling.metric -> the metric the operator serves for it (and the HPA names).
SERVED_METRICS: Final[dict[str, str]] = {
    RPS: RPS_METRIC, CONCURRENCY: CONCURRENCY_METRIC, QUEUE_TIME: QUEUE_TIME_METRIC}
# Server connections a terminating pod's pgbouncer keeps: the pod's preStop hook
# (`djangoscale prestop`) shrinks its pool to this, and the budget sets it aside for every pod
# that may be draining while its replacement runs (Deployments do not wait for terminating
# pods before creating replacements).
DRAINING_POOL_SIZE: Final = 1
# Server connections the pod's pgbouncer holds (SHOW POOLS: every sv_* column, all pools),
# and clients waiting for one: exported by the launcher, summed by the operator's budget guard.
PGBOUNCER_SERVER_CONNECTIONS: Final = "djangoscale_pgbouncer_server_connections"
PGBOUNCER_CLIENTS_WAITING: Final = "djangoscale_pgbouncer_clients_waiting"
# SHOW POOLS' sv_active, sv_idle and maxwait (+ maxwait_us), summed (maxwait: the largest).
PGBOUNCER_SERVERS_ACTIVE: Final = "djangoscale_pgbouncer_servers_active"
PGBOUNCER_SERVERS_IDLE: Final = "djangoscale_pgbouncer_servers_idle"
PGBOUNCER_MAX_WAIT: Final = "djangoscale_pgbouncer_max_wait_seconds"
# The path of the launcher's metrics endpoint.
METRICS_PATH: Final = "/metrics"

# -- labels (the Kubernetes recommended ones) ----------------------------------------------------
NAME_LABEL: Final = "app.kubernetes.io/name"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "djangoscale"
APP_NAME: Final = "django"
WEB_COMPONENT: Final = "web"
WORKER_COMPONENT_PREFIX: Final = "worker-"
# The pgbouncer Deployment of pooling.mode pooler (its Deployment, Service, PDB and HPA).
POOLER_COMPONENT: Final = "pooler"
# On the operator pod that is the active kopf peer (written by that operator, removed when it
# stands by); the chart's metrics API Service selects it.
ACTIVE_PEER_LABEL: Final = "djangoscale.io/active-peer"

# -- server-side apply ---------------------------------------------------------------------------
FIELD_MANAGER: Final = "djangoscale"
# The initial scale to replicas.min is written under its own manager, so the operator's applied
# configuration never owns `replicas` and the HPA keeps it.
INITIAL_SCALE_FIELD_MANAGER: Final = f"{FIELD_MANAGER}-initial-scale"
