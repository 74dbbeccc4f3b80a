"""The Celery beat scheduler: exactly one pod, ever.

Two schedulers send every periodic task twice, so beat is its own Deployment with one replica,
strategy Recreate (the old pod is gone before the new one starts: no surge pod during a
rollout), no HPA, and the spec refuses a worker group that would embed a second one (`-B`).
It is the web pod with its container swapped, like a worker, so it has the same database env
and pgbouncer sidecar (django-celery-beat's DatabaseScheduler reads its schedule from the
database); the budget counts its one pod.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from djangoscale.builders.deployment import (
    database_env,
    deployment_object,
    restricted_container_security,
    with_user_env,
)
from djangoscale.builders.workers import broker_env, celery_pod_template
from djangoscale.spec import DjangoService

BEAT_COMPONENT: Final = "beat"
# The schedule's state file and the pid file: the root filesystem is read-only, /tmp is not.
SCHEDULE_FILE: Final = "/tmp/celerybeat-schedule"
PID_FILE: Final = "/tmp/celerybeat.pid"
# Beat only sends messages; it stops in well under this.
BEAT_GRACE_SECONDS: Final = 30


def beat_name(ds: DjangoService) -> str:
    return f"{ds.name}-beat"


def build_beat_container(ds: DjangoService, secret: dict[str, Any] | None) -> dict[str, Any]:
    assert ds.beat is not None
    env = broker_env(ds)
    if secret is not None:
        env += database_env(ds, secret, max_age=0)
    container: dict[str, Any] = {
        "name": BEAT_COMPONENT,
        "image": ds.image,
        "imagePullPolicy": ds.image_pull_policy,
        "args": ["celery", "--app", ds.beat.app, "beat", "--schedule", SCHEDULE_FILE,
                 "--pidfile", PID_FILE, "--loglevel", "INFO"],
        "env": with_user_env(ds, env),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if ds.beat.resources:
        container["resources"] = copy.deepcopy(ds.beat.resources)
    return container


def build_beat_deployment(
    ds: DjangoService, secret: dict[str, Any] | None = None
) -> dict[str, Any]:
    template = celery_pod_template(ds, build_beat_container(ds, secret), BEAT_COMPONENT, secret,
                                   grace_seconds=BEAT_GRACE_SECONDS)
    deployment = deployment_object(ds, beat_name(ds), BEAT_COMPONENT, template, 1)
    # Always one, whatever spec.autoscaling says, and never two during a rollout.
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    return deployment
