"""The DjangoService's status fields other than conditions, from its children, and the
kubelet's reason when its pods cannot run (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from djangoscale.budget import size_pool, unpooled_connections_for
from djangoscale.spec import DjangoService

# What `status.database.guard` says for each pooling mode.
GUARDS = {
    "pgbouncer": "each pod's pgbouncer holds at most poolSizePerPod server connections "
                 "(max_db_connections), sized so that every pod that can run at once fits",
    "pooler": "each pooler pod's pgbouncer holds at most poolSizePerPod server connections "
              "(max_db_connections), sized so that pooling.pooler.replicas.max pooler pods "
              "plus one surge pod fit",
    "django": "Django's pool in each worker process is sized so that every pod that can run "
              "at once fits",
    "none": "admitted only because every thread of every pod that can run at once fits",
    "external": "not guarded: with pooling.mode external the operator sizes no pool; your "
                "pooler outside the pod must keep this service under maxConnections",
}


def database_status(ds: DjangoService) -> dict[str, Any] | None:
    """`status.database`: the budget, how it is kept, and what it allows at max replicas."""
    if ds.database is None:
        return None
    status: dict[str, Any] = {
        "poolingMode": ds.pooling_mode,
        "maxConnections": ds.database.max_connections,
        "budget": ds.database.pool_budget,
        "guarded": ds.pooling_mode != "external",
        "guard": GUARDS[ds.pooling_mode],
    }
    if ds.uses_pgbouncer or ds.uses_pooler or ds.uses_django_pool:
        sizing = size_pool(ds)
        status.update(
            poolSizePerPod=sizing.pool_size_per_pod,
            maxClientConnPerPod=sizing.max_client_conn_per_pod,
            connectionsAtMaxReplicas=sizing.connections_at_max,
        )
    elif ds.pooling_mode == "none":
        status["connectionsAtMaxReplicas"] = unpooled_connections_for(ds)
    return status


def observed_status(
    ds: DjangoService,
    deployment: dict[str, Any] | None,
    hpa: dict[str, Any] | None,
) -> dict[str, Any]:
    """Status fields other than conditions."""
    deployment_status = (deployment or {}).get("status", {})
    status: dict[str, Any] = {
        "replicas": deployment_status.get("replicas", 0),
        "readyReplicas": deployment_status.get("readyReplicas", 0),
    }
    if hpa is not None:
        status["desiredReplicas"] = hpa.get("status", {}).get("desiredReplicas", 0)
    database = database_status(ds)
    if database is not None:
        status["database"] = database
    return status


# Waiting reasons of a container that the kubelet does not get out of by itself: an image it
# cannot pull (or may not, with imagePullPolicy Never), an app that keeps exiting, a container
# it cannot create. Other waiting reasons (ContainerCreating, PodInitializing) are progress.
KUBELET_FAILURES: Final = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError",
})


def kubelet_failure(pods: Iterable[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of the first pod, by name, with a container (the pgbouncer sidecar
    included) waiting for one of KUBELET_FAILURES: the kubelet's reason, its message, and the
    container's last exit when it crashed."""
    for pod in sorted(pods, key=lambda item: str(item["metadata"].get("name"))):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (
                status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in KUBELET_FAILURES:
                continue
            message = (f"pod {pod['metadata'].get('name')}, container {container.get('name')}: "
                       f"{reason}: {waiting.get('message') or 'no message from the kubelet'}")
            exited = (container.get("lastState") or {}).get("terminated")
            if exited:
                message += (f" (last exit: code {exited.get('exitCode')}, "
                            f"{exited.get('reason', 'no reason')})")
            return str(reason), message
    return None
