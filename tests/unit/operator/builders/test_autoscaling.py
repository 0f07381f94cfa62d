"""builders/autoscaling.py: HPAs on CPU, QPS and GPU; canary bounds follow the weight."""

from __future__ import annotations

import pytest

from mmop.operator import models
from mmop.operator.builders import autoscaling
from mmop.operator.builders.plan import plan_versions
from tests.support.models import WithCanary


class TestBuildHpa:
    def test_three_signals(self, clip: models.MultimodalModel) -> None:
        hpa = autoscaling.build_hpa(clip, plan_versions(clip)[0])
        assert hpa is not None
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "clip-v1",
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
        cpu, qps, gpu = hpa["spec"]["metrics"]
        assert cpu == {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
        assert qps == {
            "type": "Pods",
            "pods": {
                "metric": {"name": "mmop_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "20"},
            },
        }
        assert gpu == {
            "type": "Pods",
            "pods": {
                "metric": {"name": "mmop_gpu_utilization_percent"},
                "target": {"type": "AverageValue", "averageValue": "80"},
            },
        }

    def test_behavior_passes_through(self, clip: models.MultimodalModel) -> None:
        hpa = autoscaling.build_hpa(clip, plan_versions(clip)[0])
        assert hpa is not None
        assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}

    def test_fractional_qps_target_is_a_quantity(self) -> None:
        metric = models.Metric(type=models.MetricType.QPS, target_per_replica=2.5)
        assert autoscaling.build_metric(metric)["pods"]["target"]["averageValue"] == "2500m"

    def test_no_autoscaling_no_hpa(self, clip: models.MultimodalModel) -> None:
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"autoscaling": None})})
        assert autoscaling.build_hpa(mm, plan_versions(mm)[0]) is None

    @pytest.mark.parametrize(
        ("weight", "bounds"), [(0, (1, 1)), (10, (1, 1)), (25, (1, 2)), (50, (1, 4)), (100, (2, 8))]
    )
    def test_canary_bounds_follow_weight(
        self,
        clip: models.MultimodalModel,
        with_canary: WithCanary,
        weight: int,
        bounds: tuple[int, int],
    ) -> None:
        mm = with_canary(clip, weight=weight)
        stable, canary = plan_versions(mm)
        hpa = autoscaling.build_hpa(mm, canary)
        assert hpa is not None
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == bounds
        stable_hpa = autoscaling.build_hpa(mm, stable)
        assert stable_hpa is not None
        assert (stable_hpa["spec"]["minReplicas"], stable_hpa["spec"]["maxReplicas"]) == (2, 8)
