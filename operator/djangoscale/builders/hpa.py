"""HorizontalPodAutoscalers on a Pods metric that the operator itself serves.

The web Deployment scales on requests per second per pod, a Celery worker group on its queue
length per worker pod; both read the operator's own custom.metrics.k8s.io server, so no
Prometheus or prometheus-adapter is needed. The HPA owns the Deployment's replicas; the
operator never sets them once the HPA exists (no fight, no GitOps drift).
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata
from djangoscale.contract import RPS_METRIC, WEB_COMPONENT
from djangoscale.spec import DjangoService, ScalePolicy


def _rules(policy: ScalePolicy, select_policy: str) -> dict[str, Any]:
    return {
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


def pods_metric_hpa(
    ds: DjangoService,
    name: str,
    component: str,
    replicas: tuple[int, int],
    metric: str,
    target_per_pod: int,
) -> dict[str, Any]:
    """An HPA of the Deployment `name` on the average of `metric` over its pods."""
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
                        "target": {"type": "AverageValue", "averageValue": str(target_per_pod)},
                    },
                }
            ],
            "behavior": {
                # Up: the larger of the two policies, so bursts are met at once.
                "scaleUp": _rules(ds.autoscaling.scale_up, "Max"),
                # Down: the smaller, so a lull does not drop capacity a burst will need.
                "scaleDown": _rules(ds.autoscaling.scale_down, "Min"),
            },
        },
    }


def build_hpa(ds: DjangoService) -> dict[str, Any]:
    """The web Deployment's HPA: requests per second per pod."""
    return pods_metric_hpa(
        ds, ds.name, WEB_COMPONENT, (ds.min_replicas, ds.max_replicas), RPS_METRIC,
        ds.autoscaling.target_rps_per_pod,
    )
