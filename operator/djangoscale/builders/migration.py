"""The migration Job: the migration command, once per image and command, before new code serves.

Its name carries a hash of the image and the command, so re-applying the same commit (a GitOps
replay) finds the Job, or the Deployments already marked with that hash, and runs nothing; a
changed image or command is a new name, so a new Job. Finished Jobs go away by TTL.

The Job connects straight to the database (the host and port of the user's Secret), not through
a pgbouncer sidecar: it is one process holding one connection for its whole run, so a pooler has
nothing to pool; `migrate` takes advisory locks and runs DDL in transactions that need a real
session (a transaction-mode pooler would break them, a session-mode one only adds a hop); and a
sidecar would be one more container to start, probe and stop before the Job can complete. That
one connection comes out of `spec.database.reservedConnections` (the spec refuses 0 while
migrations are on), never out of the pods' pools.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from djangoscale.builders.deployment import (
    app_env_from_and_resources,
    pod_placement,
    pod_security,
    restricted_container_security,
    with_user_env,
)
from djangoscale.builders.labels import child_metadata, common_labels
from djangoscale.spec import DjangoService

MIGRATE_COMPONENT: Final = "migrate"
# On the Job and on every Deployment: the hash of the image and command the pods were
# migrated for. The live Deployment's value is how the operator knows what already ran.
MIGRATION_ANNOTATION: Final = "djangoscale.io/migration"
# On the Job: the DjangoService generation that created it; a later spec change retries a
# failed Job, the same spec never does.
GENERATION_ANNOTATION: Final = "djangoscale.io/generation"
# A finished Job (and its pod's log) stays a day for `kubectl logs`, then goes.
TTL_SECONDS_AFTER_FINISHED: Final = 86400
# <name (at most 47)>-migrate-<7 hex> fits the 63 characters of the job-name label.
HASH_LENGTH: Final = 7
CONTAINER_NAME: Final = "migrate"


def migration_hash(ds: DjangoService) -> str:
    """What decides whether migrations must run again: the image and the command."""
    text = json.dumps([ds.image, list(ds.migrations.command)])
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def migration_job_name(ds: DjangoService) -> str:
    return f"{ds.name}-{MIGRATE_COMPONENT}-{migration_hash(ds)}"


def migration_env(ds: DjangoService) -> list[dict[str, Any]]:
    """Straight to the database: host and port of the user's Secret, no pool, no pgbouncer.

    No DATABASE_URL (the pods' one names their pgbouncer) and no DATABASE_POOL_MAX_SIZE (a
    psycopg pool opens several connections at start).
    """
    env: list[dict[str, Any]] = [{"name": "DATABASE_CONN_MAX_AGE", "value": "0"}]
    if ds.database is not None and ds.database.secret_name is not None:
        secret = ds.database.secret_name
        env += [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for name, key in (
                ("DATABASE_HOST", "host"), ("DATABASE_PORT", "port"), ("DATABASE_NAME", "dbname"),
                ("DATABASE_USER", "user"), ("DATABASE_PASSWORD", "password"),
            )
        ]
    return with_user_env(ds, env)


def build_migration_job(ds: DjangoService) -> dict[str, Any]:
    """The Job for the spec's image and command (build it only when migrations are enabled)."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": ds.image,
        "imagePullPolicy": ds.image_pull_policy,
        "command": list(ds.migrations.command),
        "env": migration_env(ds),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **app_env_from_and_resources(ds),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security(),
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        **pod_placement(ds),
    }
    labels = {**ds.pod_options.get("podLabels", {}), **common_labels(ds, MIGRATE_COMPONENT)}
    template_metadata: dict[str, Any] = {"labels": labels}
    if "podAnnotations" in ds.pod_options:
        template_metadata["annotations"] = dict(ds.pod_options["podAnnotations"])
    metadata = child_metadata(ds, migration_job_name(ds), MIGRATE_COMPONENT)
    metadata["annotations"] = {MIGRATION_ANNOTATION: migration_hash(ds)}
    if ds.generation is not None:
        metadata["annotations"][GENERATION_ANNOTATION] = str(ds.generation)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": ds.migrations.backoff_limit,
            "activeDeadlineSeconds": ds.migrations.active_deadline_seconds,
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def mark_migrated(deployment: dict[str, Any], ds: DjangoService) -> dict[str, Any]:
    """The Deployment, annotated with the migration its pod template needs."""
    annotations = deployment["metadata"].setdefault("annotations", {})
    annotations[MIGRATION_ANNOTATION] = migration_hash(ds)
    return deployment
