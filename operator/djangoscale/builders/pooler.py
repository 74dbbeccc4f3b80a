"""pooling.mode pooler: a pgbouncer Deployment per DjangoService, with its Service, PDB and HPA.

Past a few hundred app pods the sidecar's share of the budget falls below one connection per pod
(`budget.pgbouncer_budget_at_least`). The pooler tier multiplexes every app thread's client
connection over a few pgbouncer pods, and the budget is divided over those pods (their
`replicas.max` plus the rollout's surge pod, one connection kept for each terminating one), as
CloudNativePG's Pooler and Zalando's connection pooler divide `max_db_connections`. The app's
`replicas.max` is then bounded by the pooler's client connections, not by the database.

The pods run the same ini as the sidecar (the database Secret), ending with `%include` of a file
the preStop hook fills with the draining pool size before it reloads pgbouncer.
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders import pgbouncer
from djangoscale.builders.deployment import (
    CHECKSUM_ANNOTATION,
    LIVENESS_FAILURES,
    LIVENESS_PERIOD_SECONDS,
    PRE_STOP_SLEEP,
    READINESS_FAILURES,
    READINESS_PERIOD_SECONDS,
    SHUTDOWN_MARGIN_SECONDS,
    deployment_object,
    pgbouncer_config_volume,
    pod_placement,
    pod_security,
    restricted_container_security,
)
from djangoscale.builders.labels import child_metadata, common_labels, selector_labels
from djangoscale.builders.pdb import build_pdb
from djangoscale.contract import COMPONENT_LABEL, DRAINING_POOL_SIZE, POOLER_COMPONENT
from djangoscale.spec import DjangoService

# A CPU request is what the HPA's utilization is measured against; pgbouncer is one thread.
POOLER_REQUESTS = {"cpu": "100m", "memory": "64Mi"}
# The pooler pods spread over nodes when they can; on a one-node cluster they still run.
ANTI_AFFINITY_WEIGHT = 100
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
# A node drain takes one pooler pod at a time.
POOLER_MAX_UNAVAILABLE = 1
# The pooler scales up at once on CPU and down slowly: a pod that goes takes its clients with it
# (they reconnect, through the Service, to another).
SCALE_DOWN_WINDOW_SECONDS = 300
# The pool limits a terminating pooler pod reloads with (`DRAIN_INI`), then the same preStop
# sleep as the app's while the Service's endpoints drop it.
DRAINING_SETTINGS = ("default_pool_size", "max_db_connections", "max_user_connections")


def drain_command() -> list[str]:
    """The pooler container's preStop: shrink its pool to DRAINING_POOL_SIZE, then wait."""
    settings = "".join(f"{key} = {DRAINING_POOL_SIZE}\\n" for key in DRAINING_SETTINGS)
    return ["/bin/sh", "-c",
            f"printf '{settings}' > {pgbouncer.DRAIN_INI} && kill -HUP 1; sleep {PRE_STOP_SLEEP}"]


def tcp_probe(period_seconds: int, failures: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": "pgbouncer"}, "periodSeconds": period_seconds,
            "failureThreshold": failures}


def build_pooler_container(ds: DjangoService) -> dict[str, Any]:
    assert ds.pooler is not None
    ini = f"{pgbouncer.CONFIG_DIR}/{pgbouncer.INI_KEY}"
    return {
        "name": "pgbouncer",
        "image": ds.pgbouncer.image,
        # The included drain file must exist when pgbouncer reads its ini; pgbouncer is then
        # the container's pid 1, which the preStop hook signals.
        "command": ["/bin/sh", "-c", f": > {pgbouncer.DRAIN_INI} && exec pgbouncer {ini}"],
        "ports": [{"name": "pgbouncer", "containerPort": pgbouncer.LISTEN_PORT,
                   "protocol": "TCP"}],
        "readinessProbe": tcp_probe(READINESS_PERIOD_SECONDS, READINESS_FAILURES),
        "livenessProbe": tcp_probe(LIVENESS_PERIOD_SECONDS, LIVENESS_FAILURES),
        "lifecycle": {"preStop": {"exec": {"command": drain_command()}}},
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "pgbouncer-config", "mountPath": pgbouncer.CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": ds.pooler.resources or {"requests": dict(POOLER_REQUESTS)},
    }


def pooler_anti_affinity(ds: DjangoService) -> dict[str, Any]:
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": ANTI_AFFINITY_WEIGHT,
                    "podAffinityTerm": {
                        "labelSelector": {
                            "matchLabels": selector_labels(ds, POOLER_COMPONENT)
                        },
                        "topologyKey": HOSTNAME_TOPOLOGY_KEY,
                    },
                }
            ]
        }
    }


def build_pooler_deployment(ds: DjangoService, secret: dict[str, Any]) -> dict[str, Any]:
    """The pooler's pods; their replicas belong to the pooler's HPA."""
    assert ds.pooler is not None
    # The app's placement and pull secrets; not its service account (pgbouncer calls no API)
    # nor its affinity (the pooler spreads its own pods).
    placement = {key: value for key, value in pod_placement(ds).items()
                 if key not in ("serviceAccountName", "affinity")}
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(secret_files=True),
        # A client's transaction may run up to the app's timeout after the drain sleep.
        "terminationGracePeriodSeconds": (
            ds.server.timeout_seconds + PRE_STOP_SLEEP + SHUTDOWN_MARGIN_SECONDS
        ),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "containers": [build_pooler_container(ds)],
        "volumes": [{"name": "tmp", "emptyDir": {}}, pgbouncer_config_volume(secret)],
        "affinity": pooler_anti_affinity(ds),
        **placement,
    }
    template = {
        "metadata": {
            "labels": common_labels(ds, POOLER_COMPONENT),
            "annotations": {CHECKSUM_ANNOTATION: pgbouncer.config_checksum(secret)},
        },
        "spec": pod_spec,
    }
    deployment = deployment_object(ds, pgbouncer.pooler_name(ds), POOLER_COMPONENT, template,
                                   ds.pooler.min_replicas)
    # The pooler's HPA runs whether or not the app autoscales.
    deployment["spec"].pop("replicas", None)
    return deployment


def build_pooler_service(ds: DjangoService) -> dict[str, Any]:
    """The app's pods connect here (DATABASE_HOST)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(ds, pgbouncer.pooler_name(ds), POOLER_COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ds, POOLER_COMPONENT),
            "ports": [{"name": "pgbouncer", "port": pgbouncer.LISTEN_PORT,
                       "targetPort": "pgbouncer", "protocol": "TCP"}],
        },
    }


def build_pooler_pdb(ds: DjangoService) -> dict[str, Any]:
    return build_pdb(ds, pgbouncer.pooler_name(ds), POOLER_COMPONENT, POOLER_MAX_UNAVAILABLE)


def build_pooler_hpa(ds: DjangoService) -> dict[str, Any]:
    """The pooler's own HPA, on the pgbouncer container's CPU."""
    assert ds.pooler is not None
    name = pgbouncer.pooler_name(ds)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(ds, name, POOLER_COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": ds.pooler.min_replicas,
            "maxReplicas": ds.pooler.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization",
                                   "averageUtilization": ds.pooler.target_cpu_utilization},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_SECONDS},
            },
        },
    }


def is_pooler(child: dict[str, Any]) -> bool:
    """A child of the pooler tier: it runs no app code, so no migration holds it."""
    labels = child["metadata"].get("labels") or {}
    return bool(labels.get(COMPONENT_LABEL) == POOLER_COMPONENT)


def build_pooler(ds: DjangoService, secret: dict[str, Any]) -> list[dict[str, Any]]:
    """The pooler's children, Deployment first."""
    return [build_pooler_deployment(ds, secret), build_pooler_service(ds),
            build_pooler_pdb(ds), build_pooler_hpa(ds)]
