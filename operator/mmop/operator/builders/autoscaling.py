"""HorizontalPodAutoscaler (autoscaling/v2) of one version: CPU, QPS and GPU signals."""

from __future__ import annotations

from typing import Any

from mmop.operator import models, naming
from mmop.operator.builders import meta
from mmop.operator.builders.plan import VersionPlan
from mmop.runtime import contract


def _quantity(value: float) -> str:
    """A Kubernetes quantity for a per-pod target: whole numbers plain, fractions in milli."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def build_metric(metric: models.Metric) -> dict[str, Any]:
    if metric.type == models.MetricType.CPU:
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": metric.target_utilization},
            },
        }
    if metric.type == models.MetricType.QPS:
        assert metric.target_per_replica is not None
        name, target = contract.METRIC_REQUESTS_PER_SECOND, metric.target_per_replica
    else:
        assert metric.target_utilization is not None
        name, target = contract.METRIC_GPU_UTILIZATION, float(metric.target_utilization)
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": _quantity(target)},
        },
    }


def build_hpa(mm: models.MultimodalModel, plan: VersionPlan) -> dict[str, Any] | None:
    """None when the spec has no autoscaling (the Deployment's replicas rule then)."""
    autoscaling = mm.spec.autoscaling
    if autoscaling is None:
        return None
    name = naming.versioned_name(mm.metadata.name, plan.name)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": plan.min_replicas,
        "maxReplicas": plan.max_replicas,
        "metrics": [build_metric(m) for m in autoscaling.metrics],
    }
    if autoscaling.behavior:
        spec["behavior"] = dict(autoscaling.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta.object_meta(mm, name=name, version=plan.name),
        "spec": spec,
    }
