"""Celery worker groups: per group a Deployment, a PodDisruptionBudget and an HPA on queue length.

Why these defaults: gevent workers on RabbitMQ tend to die one after another under load, and a
worker with the default prefetch takes many more tasks than it runs. So a group runs native threads
(`--pool threads`), reserves one message per thread (`--prefetch-multiplier 1`, `-O fair`) and
acknowledges after the task ran (acks late), so a killed worker's task goes back to the queue.

A worker pod is the web pod with its app container swapped: the same pgbouncer sidecar, volumes,
securityContext, database env and config checksum, taken from `build_deployment` rather than
copied. The database budget already counts the worker pods (`DjangoService.max_pods`).
"""

from __future__ import annotations

import copy
from typing import Any

from djangoscale.builders.deployment import (
    build_deployment,
    database_env,
    deployment_object,
    pre_stop,
    restricted_container_security,
    with_user_env,
)
from djangoscale.builders.hpa import pods_metric_hpa
from djangoscale.builders.labels import common_labels
from djangoscale.builders.pdb import build_pdb
from djangoscale.contract import (
    CELERY_BROKER_URL_ENV,
    QUEUE_LENGTH_METRIC,
    WORKER_COMPONENT_PREFIX,
    WORKER_HEALTH_BIND_ENV,
)
from djangoscale.spec import DjangoService, WorkerGroup

# Keys of the user's broker Secret.
BROKER_URL_KEY = "url"
BROKER_MANAGEMENT_URL_KEY = "managementUrl"
# SIGTERM starts Celery's warm shutdown: stop taking messages, finish the running tasks. This is
# how long they get before SIGKILL; with acks late a task cut off here is redelivered, not lost.
WORKER_GRACE_SECONDS = 300
# Liveness: `djangoscale worker` answers /healthz while its consumer loop ticks (a broker-free
# stand-in for `celery inspect ping`, which starts a Python process and a broker connection).
HEALTH_PATH = "/healthz"
# Importing Django and connecting to the broker may take a while on a cold node: up to 2 min.
STARTUP_PERIOD_SECONDS = 2
STARTUP_FAILURES = 60
# A wedged consumer loop is restarted after a minute (3 x 20 s); each check may take 5 s.
LIVENESS_PERIOD_SECONDS = 20
LIVENESS_TIMEOUT_SECONDS = 5
LIVENESS_FAILURES = 3


def worker_name(ds: DjangoService, group: WorkerGroup) -> str:
    return f"{ds.name}-worker-{group.name}"


def worker_component(group: WorkerGroup) -> str:
    return f"{WORKER_COMPONENT_PREFIX}{group.name}"


def worker_args(group: WorkerGroup) -> list[str]:
    """The command line, every scheduling flag spelled out so `kubectl get -o yaml` shows it."""
    return [
        "djangoscale", "worker",
        "--app", group.app,
        "--pool", group.pool,
        "--concurrency", str(group.concurrency),
        "--prefetch-multiplier", str(group.prefetch_multiplier),
        "-O", "fair",
        "--queues", ",".join(group.queues),
        "--acks-late" if group.acks_late else "--no-acks-late",
        *(["--", *group.args] if group.args else []),
    ]


def broker_env(ds: DjangoService) -> list[dict[str, Any]]:
    assert ds.broker is not None
    ref = {"secretKeyRef": {"name": ds.broker.secret_name, "key": BROKER_URL_KEY}}
    return [{"name": CELERY_BROKER_URL_ENV, "valueFrom": ref}]


def build_worker_container(
    ds: DjangoService, group: WorkerGroup, secret: dict[str, Any] | None
) -> dict[str, Any]:
    env = [{"name": WORKER_HEALTH_BIND_ENV, "value": f"0.0.0.0:{ds.metrics_port}"}]
    env += broker_env(ds)
    if secret is not None:
        # 0: no launcher runs before a task to drop a connection a restarted pgbouncer closed,
        # and a task is long next to a connect to the pod's own pgbouncer.
        env += database_env(ds, secret, max_age=0)
    env = with_user_env(ds, env)
    health = {"httpGet": {"path": HEALTH_PATH, "port": "health"}}
    container: dict[str, Any] = {
        "name": "worker",
        "image": ds.image,
        "imagePullPolicy": ds.image_pull_policy,
        "args": worker_args(group),
        "env": env,
        "ports": [{"name": "health", "containerPort": ds.metrics_port, "protocol": "TCP"}],
        "startupProbe": {**health, "periodSeconds": STARTUP_PERIOD_SECONDS,
                         "failureThreshold": STARTUP_FAILURES},
        "livenessProbe": {**health, "periodSeconds": LIVENESS_PERIOD_SECONDS,
                          "timeoutSeconds": LIVENESS_TIMEOUT_SECONDS,
                          "failureThreshold": LIVENESS_FAILURES},
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if ds.uses_pgbouncer:
        # No load balancer to wait for: shrink the pool and let Celery's warm shutdown run.
        container["lifecycle"] = {"preStop": pre_stop(0)}
    if group.resources:
        container["resources"] = copy.deepcopy(group.resources)
    return container


def celery_pod_template(
    ds: DjangoService, container: dict[str, Any], component: str,
    secret: dict[str, Any] | None, grace_seconds: int = WORKER_GRACE_SECONDS,
) -> dict[str, Any]:
    """The web pod's template with its app container swapped for a Celery one."""
    web = build_deployment(ds, secret)
    template: dict[str, Any] = copy.deepcopy(web["spec"]["template"])
    pod = template["spec"]
    if "envFrom" in pod["containers"][0]:
        container["envFrom"] = pod["containers"][0]["envFrom"]
    pod["containers"] = [container]
    pod["terminationGracePeriodSeconds"] = grace_seconds
    # The user's pod labels stay; the selector labels name this component, not the web pods.
    labels = template["metadata"]["labels"]
    template["metadata"]["labels"] = {**labels, **common_labels(ds, component)}
    return template


def build_worker_deployment(
    ds: DjangoService, group: WorkerGroup, secret: dict[str, Any] | None = None
) -> dict[str, Any]:
    template = celery_pod_template(
        ds, build_worker_container(ds, group, secret), worker_component(group), secret)
    return deployment_object(
        ds, worker_name(ds, group), worker_component(group), template, group.min_replicas
    )


def build_worker_pdb(ds: DjangoService, group: WorkerGroup) -> dict[str, Any]:
    return build_pdb(ds, worker_name(ds, group), worker_component(group))


def build_worker_hpa(ds: DjangoService, group: WorkerGroup) -> dict[str, Any]:
    """Scale on (ready + unacked messages of the group's queues) per worker pod.

    The operator serves each pod the group's total divided by its pod count, so the HPA's
    average is total / pods and it wants ceil(total / targetQueueLengthPerWorker) pods.
    """
    # A Pods metric needs a pod to read it from: scaling to zero would need an External
    # metric and the HPAScaleToZero feature gate, so replicas.min 0 runs one pod.
    replicas = (max(1, group.min_replicas), group.max_replicas)
    return pods_metric_hpa(
        ds, worker_name(ds, group), worker_component(group), replicas,
        {QUEUE_LENGTH_METRIC: str(group.target_queue_length_per_worker)},
    )


def build_workers(ds: DjangoService, secret: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every worker group's children, in apply order."""
    children = []
    for group in ds.workers:
        children += [build_worker_deployment(ds, group, secret), build_worker_pdb(ds, group)]
        if ds.autoscaling.enabled:
            children.append(build_worker_hpa(ds, group))
    return children
