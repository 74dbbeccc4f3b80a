"""The HorizontalPodAutoscaler: requests per second per pod, served by the operator.

The metric comes from the operator's own custom.metrics.k8s.io server, so no Prometheus or
prometheus-adapter is needed. The HPA owns the Deployment's replicas; the operator never sets
them once the HPA exists (no fight, no GitOps drift).
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders.labels import child_metadata
from djangoscale.spec import DjangoService, ScalePolicy

RPS_METRIC = "djangoscale_requests_per_second"


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


def build_hpa(ds: DjangoService) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(ds, ds.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ds.name},
            "minReplicas": ds.min_replicas,
            "maxReplicas": ds.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": RPS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(ds.autoscaling.target_rps_per_pod),
                        },
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
