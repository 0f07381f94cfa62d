"""devcluster/controllers/deployment_decisions.py: hashes and names, which pods to create or
delete, and the Deployment status (counts and conditions) that kubectl rollout status reads."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mmop.devcluster.controllers import deployment_decisions
from mmop.devcluster.controllers.deployment_decisions import PodView, Strategy

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-01-01T12:00:00Z"


def _deployment(
    *,
    replicas: int | None = 2,
    generation: int = 1,
    status: dict[str, Any] | None = None,
    strategy: dict[str, Any] | None = None,
    deadline: int | None = 600,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {}}}
    if replicas is not None:
        spec["replicas"] = replicas
    if strategy is not None:
        spec["strategy"] = strategy
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {
        "metadata": {"name": "clip-v1", "namespace": "ml", "uid": "d-1", "generation": generation},
        "spec": spec,
        "status": status or {},
    }


def _pod(name: str, *, current: bool = True, ready: bool = False, created: str = "1") -> PodView:
    return PodView(
        name=name, current=current, created=created, running=ready, ready=ready, available=ready
    )


class TestNames:
    def test_hash_is_stable_and_follows_the_template(self) -> None:
        a = deployment_decisions.template_hash({"spec": {"containers": [{"name": "x"}]}})
        assert a == deployment_decisions.template_hash({"spec": {"containers": [{"name": "x"}]}})
        assert a != deployment_decisions.template_hash({"spec": {"containers": [{"name": "y"}]}})
        assert set(a) <= set(deployment_decisions.SAFE_ALPHABET)

    def test_pod_name(self) -> None:
        name = deployment_decisions.pod_name("clip-v1", "5bc885997f", random.Random(1))
        assert re.fullmatch(r"clip-v1-5bc885997f-[bcdfghjklmnpqrstvwxz2456789]{5}", name)

    def test_build_pod_copies_the_template_and_owns_it(self) -> None:
        dep = _deployment()
        dep["spec"]["template"]["metadata"]["annotations"] = {"mmop.io/revision": "r1"}
        dep["spec"]["template"]["spec"] = {"containers": [{"name": "runtime"}]}
        pod = deployment_decisions.build_pod(dep, hash_="h", name="clip-v1-h-abcde")
        assert pod["metadata"]["labels"] == {"app": "a", "pod-template-hash": "h"}
        assert pod["metadata"]["annotations"] == {"mmop.io/revision": "r1"}
        assert pod["metadata"]["namespace"] == "ml"
        assert pod["spec"] == {"containers": [{"name": "runtime"}]}
        assert deployment_decisions.controller_uid(pod) == "d-1"


class TestStrategy:
    def test_percentages_round_like_the_real_controller(self) -> None:
        dep = _deployment(
            replicas=3,
            strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        assert deployment_decisions.strategy(dep) == Strategy(max_surge=1, max_unavailable=0)

    def test_zero_and_zero_allows_one_unavailable(self) -> None:
        dep = _deployment(
            replicas=2, strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}
        )
        assert deployment_decisions.strategy(dep).max_unavailable == 1

    def test_recreate(self) -> None:
        assert deployment_decisions.strategy(_deployment(strategy={"type": "Recreate"})).recreate

    def test_absent_replicas_mean_one(self) -> None:
        assert deployment_decisions.desired_replicas(_deployment(replicas=None)) == 1


class TestPlanPods:
    surge = Strategy(max_surge=1, max_unavailable=0)

    def test_scale_up(self) -> None:
        plan = deployment_decisions.plan_pods(
            desired=3, strategy=self.surge, new=[_pod("a")], old=[]
        )
        assert plan == deployment_decisions.PodPlan(create=2)

    def test_scale_down_removes_unready_and_newest_first(self) -> None:
        new = [
            _pod("old-ready", ready=True, created="1"),
            _pod("young-ready", ready=True, created="2"),
            _pod("unready", created="0"),
        ]
        plan = deployment_decisions.plan_pods(desired=1, strategy=self.surge, new=new, old=[])
        assert plan.delete == ("unready", "young-ready")

    def test_rolling_update_surges_then_keeps_the_old_pod(self) -> None:
        old = [_pod("old", current=False, ready=True)]
        plan = deployment_decisions.plan_pods(desired=1, strategy=self.surge, new=[], old=old)
        assert plan == deployment_decisions.PodPlan(create=1)
        waiting = deployment_decisions.plan_pods(
            desired=1, strategy=self.surge, new=[_pod("new")], old=old
        )
        assert waiting == deployment_decisions.PodPlan()

    def test_rolling_update_retires_the_old_pod_once_the_new_is_ready(self) -> None:
        old = [_pod("old", current=False, ready=True)]
        plan = deployment_decisions.plan_pods(
            desired=1, strategy=self.surge, new=[_pod("new", ready=True)], old=old
        )
        assert plan == deployment_decisions.PodPlan(delete=("old",))

    def test_unhealthy_old_pods_go_first(self) -> None:
        old = [_pod("old-ok", current=False, ready=True), _pod("old-bad", current=False)]
        plan = deployment_decisions.plan_pods(
            desired=2, strategy=self.surge, new=[_pod("n1", ready=True)], old=old
        )
        assert plan.delete[0] == "old-bad"

    def test_recreate_deletes_old_before_creating(self) -> None:
        old = [_pod("old", current=False, ready=True)]
        recreate = Strategy(recreate=True)
        assert deployment_decisions.plan_pods(desired=1, strategy=recreate, new=[], old=old) == (
            deployment_decisions.PodPlan(delete=("old",))
        )
        assert deployment_decisions.plan_pods(desired=1, strategy=recreate, new=[], old=[]) == (
            deployment_decisions.PodPlan(create=1)
        )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


class TestStatus:
    def test_counts(self) -> None:
        pods = [_pod("a", ready=True), _pod("b"), _pod("c", current=False, ready=True)]
        status = deployment_decisions.deployment_status(
            _deployment(generation=3), pods, now=NOW, replica_set="clip-v1-h"
        )
        assert status["observedGeneration"] == 3
        assert (
            status["replicas"],
            status["updatedReplicas"],
            status["readyReplicas"],
            status["availableReplicas"],
            status["unavailableReplicas"],
        ) == (3, 2, 2, 2, 1)

    def test_new_deployment_is_progressing_and_not_available(self) -> None:
        status = deployment_decisions.deployment_status(
            _deployment(), [_pod("a"), _pod("b")], now=NOW, replica_set="clip-v1-h"
        )
        assert _conditions(status) == {
            "Available": ("False", "MinimumReplicasUnavailable"),
            "Progressing": ("True", "NewReplicaSetCreated"),
        }
        progressing = status["conditions"][1]
        assert progressing["message"] == 'Created new replica set "clip-v1-h"'

    def test_complete(self) -> None:
        pods = [_pod("a", ready=True), _pod("b", ready=True)]
        status = deployment_decisions.deployment_status(
            _deployment(), pods, now=NOW, replica_set="clip-v1-h"
        )
        assert _conditions(status) == {
            "Available": ("True", "MinimumReplicasAvailable"),
            "Progressing": ("True", "NewReplicaSetAvailable"),
        }
        assert status["conditions"][1]["message"] == (
            'ReplicaSet "clip-v1-h" has successfully progressed.'
        )

    def _after(
        self, status: dict[str, Any], pods: list[PodView], *, at: datetime, replicas: int = 2
    ) -> dict[str, Any]:
        return deployment_decisions.deployment_status(
            _deployment(replicas=replicas, status=status), pods, now=at, replica_set="clip-v1-h"
        )

    def test_progress_then_deadline(self) -> None:
        start = deployment_decisions.deployment_status(
            _deployment(), [_pod("a"), _pod("b")], now=NOW, replica_set="clip-v1-h"
        )
        progressed = self._after(
            start, [_pod("a", ready=True), _pod("b")], at=NOW + timedelta(seconds=30)
        )
        assert _conditions(progressed)["Progressing"] == ("True", "ReplicaSetUpdated")
        stuck = self._after(
            progressed, [_pod("a", ready=True), _pod("b")], at=NOW + timedelta(seconds=300)
        )
        assert _conditions(stuck)["Progressing"] == ("True", "ReplicaSetUpdated")
        late = self._after(
            stuck, [_pod("a", ready=True), _pod("b")], at=NOW + timedelta(seconds=700)
        )
        assert _conditions(late)["Progressing"] == ("False", "ProgressDeadlineExceeded")
        assert (
            late["conditions"][1]["message"] == 'ReplicaSet "clip-v1-h" has timed out progressing.'
        )

    def test_timestamps_stay_when_nothing_changes(self) -> None:
        pods = [_pod("a", ready=True), _pod("b", ready=True)]
        first = self._after({}, pods, at=NOW)
        again = self._after(first, pods, at=NOW + timedelta(minutes=5))
        assert again == first

    def test_pure_scale_up_never_times_out(self) -> None:
        done = self._after({}, [_pod("a", ready=True), _pod("b", ready=True)], at=NOW)
        scaled = self._after(
            done,
            [_pod("a", ready=True), _pod("b", ready=True), _pod("c")],
            at=NOW + timedelta(hours=2),
            replicas=3,
        )
        assert _conditions(scaled)["Progressing"] == ("True", "NewReplicaSetAvailable")

    def test_new_template_resets_the_clock(self) -> None:
        done = self._after({}, [_pod("a", ready=True), _pod("b", ready=True)], at=NOW)
        status = deployment_decisions.deployment_status(
            _deployment(status=done),
            [_pod("a", current=False, ready=True), _pod("b", current=False, ready=True)],
            now=NOW + timedelta(hours=1),
            replica_set="clip-v1-new",
        )
        progressing = status["conditions"][1]
        assert (progressing["reason"], progressing["lastUpdateTime"]) == (
            "NewReplicaSetCreated",
            "2026-01-01T13:00:00Z",
        )

    def test_no_deadline_no_progressing_condition(self) -> None:
        status = deployment_decisions.deployment_status(
            _deployment(deadline=None), [], now=NOW, replica_set="x"
        )
        assert [c["type"] for c in status["conditions"]] == ["Available"]


class TestPodView:
    def _pod(self, *, ready_since: str | None, hash_: str = "h") -> dict[str, Any]:
        conditions = [{"type": "PodScheduled", "status": "True"}]
        if ready_since:
            conditions.append(
                {"type": "Ready", "status": "True", "lastTransitionTime": ready_since}
            )
        return {
            "metadata": {
                "name": "p",
                "labels": {"pod-template-hash": hash_},
                "creationTimestamp": STAMP,
            },
            "spec": {"nodeName": "mmop-dev"},
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "containerStatuses": [{"restartCount": 2}],
            },
        }

    def test_ready_pod(self) -> None:
        view = deployment_decisions.pod_view(
            self._pod(ready_since=STAMP), current_hash="h", now=NOW
        )
        assert (view.current, view.ready, view.available, view.restarts) == (True, True, True, 2)

    @pytest.mark.parametrize(("seconds", "available"), [(5, False), (15, True)])
    def test_min_ready_seconds(self, seconds: int, available: bool) -> None:
        view = deployment_decisions.pod_view(
            self._pod(ready_since=STAMP),
            current_hash="other",
            now=NOW + timedelta(seconds=seconds),
            min_ready_seconds=10,
        )
        assert (view.current, view.available) == (False, available)
