"""devcluster/kubelet/resources.py: requests, fit, the scheduler's message, GPU indices, QoS."""

from __future__ import annotations

from decimal import Decimal

from mmop.devcluster.kubelet import resources


def _spec(*containers: dict[str, object], init: tuple[dict[str, object], ...] = ()) -> dict:
    return {"containers": list(containers), "initContainers": list(init)}


def _container(
    requests: dict[str, str] | None = None, limits: dict[str, str] | None = None
) -> dict:
    wanted: dict[str, object] = {}
    if requests:
        wanted["requests"] = requests
    if limits:
        wanted["limits"] = limits
    return {"name": "c", "resources": wanted}


class TestPodRequests:
    def test_sums_containers_and_counts_a_pod_slot(self) -> None:
        spec = _spec(_container({"cpu": "1", "memory": "1Gi"}), _container({"cpu": "500m"}))
        requests = resources.pod_requests(spec)
        assert requests == {"cpu": Decimal("1.5"), "memory": Decimal(2**30), "pods": Decimal(1)}

    def test_limits_stand_in_for_missing_requests(self) -> None:
        spec = _spec(_container({"cpu": "4"}, {"memory": "16Gi", "nvidia.com/gpu": "2"}))
        requests = resources.pod_requests(spec)
        assert requests["nvidia.com/gpu"] == 2
        assert requests["memory"] == 16 * 2**30

    def test_init_containers_count_by_their_maximum(self) -> None:
        spec = _spec(_container({"cpu": "1"}), init=(_container({"cpu": "3"}),))
        assert resources.pod_requests(spec)["cpu"] == 3


class TestFit:
    capacity = resources.node_capacity(gpus=1)

    def test_realistic_gpu_pod_fits_an_idle_node(self) -> None:
        requests = resources.pod_requests(
            _spec(_container({"cpu": "4", "memory": "16Gi"}, {"nvidia.com/gpu": "1"}))
        )
        assert resources.insufficient(requests, allocatable=self.capacity, used={}) == []

    def test_gpu_in_use_does_not_fit(self) -> None:
        requests = resources.pod_requests(_spec(_container(limits={"nvidia.com/gpu": "1"})))
        used = {"nvidia.com/gpu": Decimal(1)}
        short = resources.insufficient(requests, allocatable=self.capacity, used=used)
        assert short == ["nvidia.com/gpu"]

    def test_unknown_extended_resource_never_fits(self) -> None:
        requests = resources.pod_requests(_spec(_container(limits={"amd.com/gpu": "1"})))
        assert resources.insufficient(requests, allocatable=self.capacity, used={}) == [
            "amd.com/gpu"
        ]

    def test_zero_gpu_request_fits_a_node_without_gpus(self) -> None:
        requests = resources.pod_requests(_spec(_container(limits={"nvidia.com/gpu": "0"})))
        capacity = resources.node_capacity(gpus=0)
        assert resources.insufficient(requests, allocatable=capacity, used={}) == []

    def test_message_reads_like_the_real_scheduler(self) -> None:
        message = resources.unschedulable_message(["nvidia.com/gpu"])
        assert message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        both = resources.unschedulable_message(["cpu", "nvidia.com/gpu"])
        assert both == "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient nvidia.com/gpu."


class TestDevices:
    def test_lowest_free_indices(self) -> None:
        assert resources.pick_devices(2, total=4, in_use=[0, 2]) == [1, 3]

    def test_none_when_too_few(self) -> None:
        assert resources.pick_devices(2, total=2, in_use=[1]) is None

    def test_zero_asks_for_nothing(self) -> None:
        assert resources.pick_devices(0, total=0, in_use=[]) == []


class TestQos:
    def test_best_effort(self) -> None:
        assert resources.qos_class(_spec(_container())) == "BestEffort"

    def test_guaranteed_when_requests_equal_limits(self) -> None:
        spec = _spec(_container({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}))
        assert resources.qos_class(spec) == "Guaranteed"

    def test_burstable_otherwise(self) -> None:
        spec = _spec(_container({"cpu": "4", "memory": "16Gi"}, {"memory": "16Gi"}))
        assert resources.qos_class(spec) == "Burstable"


def test_node_capacity_offers_the_configured_gpus() -> None:
    capacity = resources.node_capacity(gpus=3)
    assert capacity["nvidia.com/gpu"] == "3"
    assert Decimal(capacity["cpu"]) >= 64
