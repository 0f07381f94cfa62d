"""reconcile/observe.py: Deployments and Pods -> version observations."""

from __future__ import annotations

from typing import Any

from mmop.operator.reconcile import observe


def _deployment(
    *, revision: str = "r1", ready: int = 1, generation: int = 2, observed: int = 2
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "m-v1",
            "generation": generation,
            "annotations": {"mmop.io/revision": revision},
        },
        "spec": {"replicas": 2},
        "status": {"readyReplicas": ready, "observedGeneration": observed},
    }


def _pod(
    name: str = "m-v1-a", *, ready: bool = True, revision: str = "r1", **status: Any
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {
            "name": name,
            "labels": {"mmop.io/version": "v1"},
            "annotations": {"mmop.io/revision": revision},
        },
        "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": conditions, **status},
    }


def test_available_needs_the_expected_revision_and_a_ready_pod() -> None:
    assert observe.observe_version(_deployment(), [_pod()], revision="r1").available
    assert not observe.observe_version(_deployment(), [_pod()], revision="r2").available
    assert not observe.observe_version(
        _deployment(ready=0), [_pod(ready=False)], revision="r1"
    ).available
    assert not observe.observe_version(_deployment(observed=1), [_pod()], revision="r1").available
    assert not observe.observe_version(
        _deployment(), [_pod(revision="r0")], revision="r1"
    ).available


def test_missing_deployment() -> None:
    assert observe.observe_version(None, [], revision="r1") == observe.VersionObservation()


def test_unschedulable_pod_is_a_problem() -> None:
    pod = _pod(ready=False)
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    }
    obs = observe.observe_version(_deployment(ready=0), [pod], revision="r1")
    assert obs.problem is not None and "Insufficient nvidia.com/gpu" in obs.problem


def test_crash_loop_is_a_problem() -> None:
    pod = _pod(
        ready=False,
        containerStatuses=[
            {
                "name": "runtime",
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            }
        ],
    )
    obs = observe.observe_version(_deployment(ready=0), [pod], revision="r1")
    assert obs.problem is not None and "CrashLoopBackOff" in obs.problem


def test_pod_infos_skip_terminating_pods() -> None:
    gone = _pod("m-v1-b")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    infos = observe.pod_infos([_pod(), gone])
    assert [(p.name, p.ip, p.ready, p.revision) for p in infos] == [
        ("m-v1-a", "10.0.0.5", True, "r1")
    ]
