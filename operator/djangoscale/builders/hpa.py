"""HorizontalPodAutoscalers on Pods metrics that the operator itself serves.

The web Deployment scales on requests per second, requests at once (concurrency) or the p95
queue time per pod, one HPA metric each (the HPA follows the one asking for the most pods),
a Celery worker group on its queue
length per worker pod; both read the operator's own custom.metrics.k8s.io server, so no
Prometheus or prometheus-adapter is needed. The HPA owns the Deployment's replicas; the
operator never sets them once the HPA exists (no fight, no GitOps drift).
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata
from djangoscale.contract import CONCURRENCY, QUEUE_TIME, RPS, SERVED_METRICS, WEB_COMPONENT
from djangoscale.spec import DjangoService, ScalePolicy


def _rules(policy: ScalePolicy, select_policy: str) -> dict[str, Any]:
    rules: dict[str, Any] = {
        "stabilizationWindowSeconds": policy.stabilization_window_seconds,
        "selectPolicy": select_policy,
        "policies": [
            {
                "type": "Percent",
                "value": policy.max_percent_per_period,
                "periodSeconds": policy.period_seconds,
            },
            {
                "type": "Pods",
                "value": policy.max_pods_per_period,
                "periodSeconds": policy.period_seconds,
            },
        ],
    }
    if policy.tolerance is not None:
        # A quantity in milli-units (0.05 -> "50m"), as the API server prints it back.
        rules["tolerance"] = f"{round(policy.tolerance * 1000)}m"
    return rules


def pods_metric_hpa(
    ds: DjangoService,
    name: str,
    component: str,
    replicas: tuple[int, int],
    targets: dict[str, str],
) -> dict[str, Any]:
    """An HPA of the Deployment `name` on the average over its pods of each metric in
    `targets` (metric name -> target quantity per pod)."""
    min_replicas, max_replicas = replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(ds, name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {"type": "AverageValue", "averageValue": target},
                    },
                }
                for metric, target in targets.items()
            ],
            "behavior": {
                # Up: the larger of the two policies, so bursts are met at once.
                "scaleUp": _rules(ds.autoscaling.scale_up, "Max"),
                # Down: the smaller, so a lull does not drop capacity a burst will need.
                "scaleDown": _rules(ds.autoscaling.scale_down, "Min"),
            },
        },
    }


def metric_targets(ds: DjangoService) -> dict[str, str]:
    """The web HPA's targets per pod, by served metric name (queue time in seconds, written in
    milli-units as the HPA prints it back: 100 ms -> "100m")."""
    autoscaling = ds.autoscaling
    targets = {
        RPS: str(autoscaling.target_rps_per_pod),
        CONCURRENCY: str(autoscaling.target_concurrency),
        QUEUE_TIME: f"{autoscaling.target_queue_time_ms}m",
    }
    return {SERVED_METRICS[metric]: targets[metric] for metric in autoscaling.metrics}


def build_hpa(ds: DjangoService) -> dict[str, Any]:
    """The web Deployment's HPA: one Pods metric per spec.autoscaling metric."""
    return pods_metric_hpa(
        ds, ds.name, WEB_COMPONENT, (ds.min_replicas, ds.max_replicas), metric_targets(ds))
