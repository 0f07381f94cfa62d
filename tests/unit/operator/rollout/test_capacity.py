"""rollout/capacity.py: the free GPUs from listed Nodes and Pods, the capacity plan, and the
state machine driving a GPU canary with it (Surge, Swap, Auto, hold), all as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mmop.operator import conditions, models
from mmop.operator.builders.plan import plan_versions
from mmop.operator.rollout import capacity, machine
from mmop.operator.rollout.observations import Observations, SmokeResult, VersionObservation

GPU = "nvidia.com/gpu"
T0 = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)


# --- free GPUs -----------------------------------------------------------------------------------
def node(
    name: str,
    gpus: int,
    *,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "allocatable": {GPU: str(gpus), "cpu": "8"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    gpus: int, *, on: str | None = "n1", phase: str = "Running", init: int = 0
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"limits": {GPU: str(gpus)}}}],
    }
    if init:
        spec["initContainers"] = [{"name": "i", "resources": {"limits": {GPU: str(init)}}}]
    if on:
        spec["nodeName"] = on
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def free(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    *,
    selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
) -> capacity.GpuCapacity:
    return capacity.free_gpus(
        nodes=nodes,
        pods=pods,
        resource=GPU,
        node_selector=selector or {},
        tolerations=tolerations or [],
    )


class TestFreeGpus:
    def test_allocatable_minus_the_requests_of_pods_bound_there(self) -> None:
        found = free([node("n1", 4), node("n2", 2)], [pod(1), pod(2), pod(1, on="n2")])
        assert dict(found.free_by_node) == {"n1": 1, "n2": 1}
        assert found.free == 2
        assert found.largest == 4
        # two pods of one GPU fit (one per node); no pod of two
        assert found.fitting(1) == 2
        assert found.fitting(2) == 0

    def test_terminating_pods_hold_their_gpus_finished_ones_do_not(self) -> None:
        terminating = pod(1)
        terminating["metadata"]["deletionTimestamp"] = "2026-12-05T12:00:00Z"
        found = free([node("n1", 2)], [terminating, pod(1, phase="Succeeded")])
        assert found.free == 1

    def test_unbound_pods_will_take_free_gpus_first(self) -> None:
        found = free([node("n1", 2)], [pod(1, on=None)])
        assert found.pending == 1
        assert found.free == 1
        assert found.fitting(1) == 1

    def test_init_containers_count_when_larger(self) -> None:
        assert free([node("n1", 4)], [pod(1, init=3)]).free == 1

    def test_only_nodes_the_pods_may_use(self) -> None:
        nodes = [
            node("a100", 2, labels={"pool": "a100"}),
            node("t4", 8, labels={"pool": "t4"}),
            node(
                "tainted", 8, labels={"pool": "a100"}, taints=[{"key": "x", "effect": "NoSchedule"}]
            ),
            node("down", 8, labels={"pool": "a100"}, ready=False),
            node("cordoned", 8, labels={"pool": "a100"}, unschedulable=True),
            node(
                "soft",
                1,
                labels={"pool": "a100"},
                taints=[{"key": "y", "effect": "PreferNoSchedule"}],
            ),
        ]
        found = free(nodes, [], selector={"pool": "a100"})
        assert dict(found.free_by_node) == {"a100": 2, "soft": 1}
        tolerated = free(
            nodes, [], selector={"pool": "a100"}, tolerations=[{"key": "x", "operator": "Exists"}]
        )
        assert set(tolerated.free_by_node) == {"a100", "soft", "tainted"}

    @pytest.mark.parametrize(
        ("toleration", "ok"),
        [
            ({"operator": "Exists"}, True),
            ({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
            ({"key": "gpu", "operator": "Equal", "value": "a"}, True),
            ({"key": "gpu", "value": "b"}, False),
            ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
            ({"key": "other", "operator": "Exists"}, False),
        ],
    )
    def test_toleration_rules(self, toleration: dict[str, str], ok: bool) -> None:
        taint = {"key": "gpu", "value": "a", "effect": "NoSchedule"}
        assert capacity.tolerates([toleration], taint) is ok


# --- the plan --------------------------------------------------------------------------------
def gpus(n: int, *, largest: int = 4) -> capacity.GpuCapacity:
    return capacity.GpuCapacity(resource=GPU, free_by_node={"n1": n}, largest=largest)


def given(**overrides: Any) -> capacity.CapacityInput:
    base: dict[str, Any] = {
        "mode": models.CapacityMode.AUTO,
        "gpus_per_replica": 1,
        "wanted": 1,
        "peak": 2,
        "canary_pods": 0,
        "stable_replicas": 2,
        "stable_gpus_per_replica": 1,
        "stable_pods": 2,
        "stable_ready": 2,
        "observed": gpus(0),
    }
    return capacity.CapacityInput(**(base | overrides))


class TestPlan:
    def test_auto_surges_when_the_whole_canary_fits(self) -> None:
        cap = capacity.plan_capacity(None, given(observed=gpus(2)))
        assert (cap.mode, cap.canary_replicas, cap.lent_replicas, cap.held) == (
            models.CapacityMode.SURGE,
            1,
            0,
            False,
        )
        assert cap.gpus_free == 2

    def test_auto_swaps_when_no_gpu_is_free_one_replica_at_a_time(self) -> None:
        cap = capacity.plan_capacity(None, given())
        assert cap.mode == models.CapacityMode.SWAP
        assert (cap.lent_replicas, cap.canary_replicas, cap.held) == (1, 0, False)
        # the lent stable pod still terminates: its GPU is not free yet, nothing more moves
        same = capacity.plan_capacity(cap, given())
        assert (same.lent_replicas, same.canary_replicas) == (1, 0)
        # gone: the canary gets its GPU
        moved = capacity.plan_capacity(cap, given(stable_pods=1, stable_ready=1, observed=gpus(1)))
        assert (moved.lent_replicas, moved.canary_replicas) == (1, 1)
        assert "1 replica(s) lent by the stable" in moved.message

    def test_swap_never_takes_the_stables_last_ready_replica(self) -> None:
        cap = models.CapacityStatus(
            mode=models.CapacityMode.SWAP, lent_replicas=1, canary_replicas=1, stable_replicas=2
        )
        more = capacity.plan_capacity(
            cap, given(wanted=2, canary_pods=1, stable_pods=1, stable_ready=1)
        )
        assert (more.lent_replicas, more.canary_replicas) == (1, 1)
        assert more.gpus_needed == 1
        assert not more.held

    def test_swap_waits_for_a_fully_ready_stable_before_lending(self) -> None:
        cap = capacity.plan_capacity(None, given(stable_replicas=3, stable_pods=3, stable_ready=2))
        assert (cap.mode, cap.lent_replicas) == (models.CapacityMode.SWAP, 0)
        assert cap.held

    def test_a_single_replica_stable_cannot_lend_so_the_canary_holds(self) -> None:
        cap = capacity.plan_capacity(None, given(stable_replicas=1, stable_pods=1, stable_ready=1))
        assert cap.held and cap.mode is None
        assert cap.gpus_needed == 1 and cap.gpus_free == 0
        assert "needs 1 nvidia.com/gpu per pod, 0 free" in cap.message
        assert "cannot lend" in cap.message

    def test_surge_holds_rather_than_take_from_the_stable(self) -> None:
        cap = capacity.plan_capacity(None, given(mode=models.CapacityMode.SURGE))
        assert cap.held and cap.mode == models.CapacityMode.SURGE
        assert cap.lent_replicas == 0
        assert "Surge" in cap.message
        freed = capacity.plan_capacity(cap, given(mode=models.CapacityMode.SURGE, observed=gpus(1)))
        assert (freed.held, freed.canary_replicas) == (False, 1)

    def test_a_stable_holding_fewer_gpus_cannot_lend_enough(self) -> None:
        cap = capacity.plan_capacity(None, given(gpus_per_replica=2, stable_gpus_per_replica=1))
        assert cap.held and cap.lent_replicas == 0

    def test_a_pod_no_node_can_hold_says_so(self) -> None:
        cap = capacity.plan_capacity(None, given(gpus_per_replica=3, observed=gpus(0, largest=2)))
        assert cap.held
        assert "no matching node has 3 allocatable (the largest has 2)" in cap.message

    def test_unknown_capacity_takes_nothing_from_the_stable(self) -> None:
        cap = capacity.plan_capacity(None, given(wanted=2, observed=None))
        assert (cap.mode, cap.canary_replicas, cap.lent_replicas) == (
            models.CapacityMode.SURGE,
            2,
            0,
        )
        swap = capacity.plan_capacity(None, given(mode=models.CapacityMode.SWAP, observed=None))
        assert (swap.lent_replicas, swap.canary_replicas, swap.held) == (0, 0, True)

    def test_the_next_pod_waits_until_the_last_one_exists(self) -> None:
        cap = models.CapacityStatus(mode=models.CapacityMode.SURGE, canary_replicas=1)
        waiting = capacity.plan_capacity(cap, given(wanted=2, canary_pods=0, observed=gpus(4)))
        assert waiting.canary_replicas == 1
        grown = capacity.plan_capacity(cap, given(wanted=2, canary_pods=1, observed=gpus(4)))
        assert grown.canary_replicas == 2


# --- the state machine and the plan, together ------------------------------------------------
def gpu_spec(
    version: str = "v1", *, replicas: int = 2, **rollout: Any
) -> models.MultimodalModelSpec:
    return models.parse_spec(
        {
            "version": version,
            "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
            "resources": {"gpu": 1},
            "replicas": replicas,
            "rollout": {
                "steps": [50, 100],
                "stepInterval": "10s",
                "progressDeadlineSeconds": 60,
                "analysis": {"minRequests": 10},
                **rollout,
            },
        }
    )


def obs_of(pods: int, ready: int | None = None) -> VersionObservation:
    ready = pods if ready is None else ready
    return VersionObservation(
        exists=True, replicas=pods, ready=ready, available=ready > 0, pods=pods
    )


def decide(
    s: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    at: float,
    versions: dict[str, VersionObservation],
    free_gpus: int | None,
    smoke: SmokeResult | None = None,
    metrics: models.MetricsSnapshot | None = None,
) -> machine.Decision:
    obs = Observations(
        now=T0 + timedelta(seconds=at),
        versions=versions,
        smoke=smoke,
        canary_metrics=metrics,
        gpus=None if free_gpus is None else gpus(free_gpus),
    )
    return machine.next_rollout_decision(spec=s, status=status, generation=2, obs=obs)


def stable_v1(replicas: int = 2) -> models.MultimodalModelStatus:
    s = gpu_spec(replicas=replicas)
    first = decide(s, models.MultimodalModelStatus(), at=0, versions={}, free_gpus=None)
    up = {"v1": obs_of(replicas)}
    return decide(s, first.status, at=1, versions=up, free_gpus=None).status


def planned(s: models.MultimodalModelSpec, status: models.MultimodalModelStatus) -> dict[str, Any]:
    mm = models.MultimodalModel.model_validate(
        {"metadata": {"name": "m", "namespace": "d"}, "spec": s.wire(), "status": status.wire()}
    )
    return {p.name: p.replicas for p in plan_versions(mm)}


def progressing(status: models.MultimodalModelStatus) -> models.Condition:
    found = conditions.get(status.conditions, conditions.PROGRESSING)
    assert found is not None
    return found


def snap(requests: float) -> models.MetricsSnapshot:
    return models.MetricsSnapshot(
        requests=requests, errors=0, pods=["p"], buckets={"0.1": requests, "+Inf": requests}
    )


def swap_in(
    v2: models.MultimodalModelSpec, *, replicas: int = 2
) -> tuple[machine.Decision, machine.Decision]:
    """A Swap canary's first pod, with no GPU spare: the stable lends a replica (t=10), then
    the lent pod is gone and its GPU free (t=12). Both decisions."""
    lent = decide(v2, stable_v1(replicas), at=10, versions={"v1": obs_of(replicas)}, free_gpus=0)
    landed = decide(v2, lent.status, at=12, versions={"v1": obs_of(replicas - 1)}, free_gpus=1)
    return lent, landed


def verified(
    v2: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    versions: dict[str, VersionObservation],
) -> machine.Decision:
    """The canary up and its smoke test passed (t=20, no GPU free): its first step."""
    return decide(
        v2,
        status,
        at=20,
        versions=versions,
        free_gpus=0,
        smoke=SmokeResult(True, "ok"),
        metrics=snap(0),
    )


class TestSwapRollout:
    def test_no_spare_gpu_swaps_replica_by_replica_then_promotes(self) -> None:
        v2 = gpu_spec("v2")
        lent, d = swap_in(v2)
        cap = lent.status.rollout.capacity if lent.status.rollout else None
        assert cap is not None and cap.mode == models.CapacityMode.SWAP
        assert (cap.lent_replicas, cap.canary_replicas) == (1, 0)
        assert "ReplicaLent" in [e.reason for e in lent.events]
        # the stable gives one replica up; the canary has no Deployment until its GPU is free
        assert planned(v2, lent.status) == {"v1": 1}
        # the lent pod is gone: its GPU is the canary's
        assert planned(v2, d.status) == {"v1": 1, "v2": 1}
        # verified, first step; the stable keeps its last replica at every weight
        up = {"v1": obs_of(1), "v2": obs_of(1)}
        d = verified(v2, d.status, versions=up)
        assert d.status.canary_weight == 50
        d = decide(v2, d.status, at=31, versions=up, free_gpus=0, metrics=snap(20))
        assert d.status.canary_weight == 100
        assert planned(v2, d.status) == {"v1": 1, "v2": 1}
        assert d.status.rollout is not None and d.status.rollout.capacity is not None
        assert d.status.rollout.capacity.gpus_needed == 1  # weight 100 asks for 2
        d = decide(v2, d.status, at=42, versions=up, free_gpus=0, metrics=snap(40))
        assert d.action == "promote"
        # the old stable goes at once (its GPU is what the new stable's second pod needs)
        assert [v.name for v in d.status.versions] == ["v2"]
        assert planned(v2, d.status) == {"v2": 2}

    def test_rollback_gives_every_replica_back_to_the_stable(self) -> None:
        v2 = gpu_spec("v2")
        _, d = swap_in(v2)
        assert planned(v2, d.status) == {"v1": 1, "v2": 1}
        # the canary never comes up: rolled back after the deadline
        broken = {"v1": obs_of(1), "v2": obs_of(1, ready=0)}
        d = decide(v2, d.status, at=80, versions=broken, free_gpus=0)
        assert d.status.phase == models.Phase.ROLLING_BACK
        d = decide(v2, d.status, at=81, versions=broken, free_gpus=0)
        assert d.status.phase == models.Phase.FAILED
        assert planned(v2, d.status) == {"v1": 2}

    def test_the_weight_waits_for_a_lent_replica_in_flight(self) -> None:
        v2 = gpu_spec("v2", replicas=4, steps=[25, 50, 100])
        _, d = swap_in(v2, replicas=4)
        up = {"v1": obs_of(3), "v2": obs_of(1)}
        d = verified(v2, d.status, versions=up)
        assert d.status.canary_weight == 25
        d = decide(v2, d.status, at=31, versions=up, free_gpus=0, metrics=snap(20))
        assert d.status.canary_weight == 50
        # 50% calls for 2 canary pods: a second replica is lent...
        d = decide(v2, d.status, at=32, versions=up, free_gpus=0)
        cap = d.status.rollout.capacity if d.status.rollout else None
        assert cap is not None and (cap.lent_replicas, cap.canary_replicas) == (2, 1)
        assert planned(v2, d.status) == {"v1": 2, "v2": 1}
        # ...and until it lands the next step is not taken, whatever the analysis says
        d = decide(
            v2,
            d.status,
            at=45,
            versions={"v1": obs_of(3, 2), "v2": obs_of(1)},
            free_gpus=0,
            metrics=snap(40),
        )
        assert d.status.canary_weight == 50
        assert d.action == "wait-gpus"


class TestHold:
    def test_surge_holds_with_insufficient_gpu_then_starts_by_itself(self) -> None:
        v2 = gpu_spec("v2", capacity="Surge")
        d = decide(v2, stable_v1(), at=10, versions={"v1": obs_of(2)}, free_gpus=0)
        cond = progressing(d.status)
        assert (cond.status, cond.reason) == ("False", "InsufficientGPU")
        assert "needs 1 nvidia.com/gpu per pod, 0 free" in d.status.message
        assert [e.reason for e in d.events].count("InsufficientGPU") == 1
        assert planned(v2, d.status) == {"v1": 2}  # no canary Deployment: nothing Pending
        assert d.requeue_after is not None
        # long past progressDeadlineSeconds: a hold is not a failure, and says so only once
        for at in (100, 200, 300):
            d = decide(v2, d.status, at=at, versions={"v1": obs_of(2)}, free_gpus=0)
            assert d.status.phase == models.Phase.PROGRESSING
            assert "InsufficientGPU" not in [e.reason for e in d.events]
        # a GPU frees up: the canary gets its pod, and its deadline starts now
        d = decide(v2, d.status, at=301, versions={"v1": obs_of(2)}, free_gpus=1)
        assert "GPUsAvailable" in [e.reason for e in d.events]
        assert progressing(d.status).reason == "CanaryVerifying"
        assert planned(v2, d.status) == {"v1": 2, "v2": 1}
        d = decide(
            v2, d.status, at=330, versions={"v1": obs_of(2), "v2": obs_of(1, 0)}, free_gpus=0
        )
        assert d.status.phase == models.Phase.PROGRESSING

    def test_cpu_models_are_not_planned(self) -> None:
        s = gpu_spec("v2").model_copy(update={"resources": models.Resources(gpu=0)})
        d = decide(s, stable_v1(), at=10, versions={"v1": obs_of(2)}, free_gpus=0)
        assert d.status.rollout is not None and d.status.rollout.capacity is None
        assert not machine.wants_capacity(s, d.status)
        assert machine.wants_capacity(gpu_spec("v2"), d.status)


def test_no_matching_node_is_unknown_not_full() -> None:
    """A GPU pool scaled to zero (a cluster autoscaler adds nodes for Pending pods): nothing to
    plan with, so the canary surges as without capacity planning and the stable keeps all."""
    empty = capacity.free_gpus(nodes=[], pods=[], resource=GPU, node_selector={}, tolerations=[])
    cap = capacity.plan_capacity(None, given(observed=empty))
    assert (cap.mode, cap.canary_replicas, cap.lent_replicas, cap.held) == (
        models.CapacityMode.SURGE,
        1,
        0,
        False,
    )
    assert "no node matches" in cap.message
