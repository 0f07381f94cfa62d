"""rollout/machine.py: every transition of the rollout state machine, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mmop.operator import conditions, models
from mmop.operator.rollout import machine
from mmop.operator.rollout.machine import Decision
from mmop.operator.rollout.observations import Observations, SmokeResult, VersionObservation

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
UP = VersionObservation(exists=True, replicas=1, ready=1, available=True)
DOWN = VersionObservation(exists=True, replicas=1, ready=0, available=False)
OK = SmokeResult(True, "answered")


def spec(version: str = "v1", **rollout: Any) -> models.MultimodalModelSpec:
    return models.parse_spec(
        {
            "version": version,
            "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
            "resources": {"gpu": 0},
            "rollout": {
                "steps": [10, 50, 100],
                "stepInterval": "60s",
                "maxFailedChecks": 2,
                "progressDeadlineSeconds": 300,
                "scaleDownDelaySeconds": 60,
                "analysis": {"minRequests": 10, "maxErrorRate": 0.05, "maxLatencyP99Ms": 500},
                **rollout,
            },
        }
    )


def snap(
    requests: float, errors: float = 0, *, fast: bool = True, pods: tuple[str, ...] = ("p1",)
) -> models.MetricsSnapshot:
    le = "0.1" if fast else "5.0"
    return models.MetricsSnapshot(
        requests=requests, errors=errors, pods=list(pods), buckets={le: requests, "+Inf": requests}
    )


def decide(
    s: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    at: float = 0,
    versions: dict[str, VersionObservation] | None = None,
    smoke: SmokeResult | None = None,
    metrics: models.MetricsSnapshot | None = None,
) -> Decision:
    obs = Observations(
        now=T0 + timedelta(seconds=at), versions=versions or {}, smoke=smoke, canary_metrics=metrics
    )
    return machine.next_rollout_decision(spec=s, status=status, generation=1, obs=obs)


def reasons(d: Decision) -> list[str]:
    return [e.reason for e in d.events]


def cond(status: models.MultimodalModelStatus, type_: str) -> models.Condition:
    found = conditions.get(status.conditions, type_)
    assert found is not None
    return found


def ready_v1() -> models.MultimodalModelStatus:
    d1 = decide(spec(), models.MultimodalModelStatus())
    return decide(spec(), d1.status, versions={"v1": UP}).status


def verified_v2(at: float = 0) -> models.MultimodalModelStatus:
    """v1 stable, canary v2 verified and at the first step (10%)."""
    created = decide(spec("v2"), ready_v1(), at=at, versions={"v1": UP}).status
    return decide(
        spec("v2"), created, at=at + 5, versions={"v1": UP, "v2": UP}, smoke=OK, metrics=snap(0)
    ).status


# --- first version ---------------------------------------------------------------------------
class TestFirstDeploy:
    def test_pending_to_deploying(self) -> None:
        d = decide(spec(), models.MultimodalModelStatus())
        assert d.status.phase == models.Phase.DEPLOYING
        assert (d.status.stable_version, d.status.stable_revision) == ("v1", spec().revision())
        assert d.status.stable_spec == spec().serving()
        assert reasons(d) == ["Deploying"]
        assert cond(d.status, "Ready").status == "False"
        assert cond(d.status, "Ready").reason == "Deploying"
        assert d.requeue_after is not None

    def test_deploying_to_ready_when_available(self) -> None:
        status = ready_v1()
        assert status.phase == models.Phase.READY
        assert cond(status, "Ready").status == "True"
        assert cond(status, "Ready").reason == "StableServing"
        assert cond(status, "Progressing").status == "False"
        assert status.versions == [
            models.VersionStatus(
                name="v1",
                revision=spec().revision(),
                role=models.VersionRole.STABLE,
                weight=100,
                replicas=1,
                ready_replicas=1,
            )
        ]
        assert (status.replicas, status.ready_replicas) == (1, 1)

    def test_spec_change_while_deploying_replaces_in_place(self) -> None:
        first = decide(spec(), models.MultimodalModelStatus()).status
        d = decide(spec("v2"), first, versions={"v1": DOWN})
        assert d.status.stable_version == "v2"
        assert d.status.canary_version is None
        assert d.status.phase == models.Phase.DEPLOYING

    def test_ready_is_idempotent(self) -> None:
        status = ready_v1()
        again = decide(spec(), status, at=30, versions={"v1": UP})
        assert again.status == status
        assert again.events == ()
        assert again.action == "none"


# --- canary ----------------------------------------------------------------------------------
class TestCanary:
    def test_new_revision_creates_canary_at_zero(self) -> None:
        d = decide(spec("v2"), ready_v1(), versions={"v1": UP})
        assert (d.status.canary_version, d.status.canary_weight) == ("v2", 0)
        assert d.status.phase == models.Phase.PROGRESSING
        assert reasons(d) == ["CanaryCreated"]
        assert cond(d.status, "Progressing").reason == "CanaryVerifying"
        assert cond(d.status, "Ready").status == "True"  # stable keeps serving

    def test_no_weight_before_available_and_tested(self) -> None:
        created = decide(spec("v2"), ready_v1(), versions={"v1": UP}).status
        waiting = decide(spec("v2"), created, at=5, versions={"v1": UP, "v2": DOWN})
        assert waiting.status.canary_weight == 0
        untested = decide(spec("v2"), created, at=5, versions={"v1": UP, "v2": UP}, smoke=None)
        assert untested.status.canary_weight == 0
        assert untested.status.rollout is not None
        assert untested.status.rollout.verified_at is None

    def test_verified_canary_gets_first_step(self) -> None:
        status = verified_v2()
        assert status.canary_weight == 10
        assert status.rollout is not None and status.rollout.verified_at is not None
        assert [v.weight for v in status.versions] == [90, 10]

    def test_analysis_waits_for_the_interval(self) -> None:
        status = verified_v2()
        d = decide(spec("v2"), status, at=30, versions={"v1": UP, "v2": UP}, metrics=snap(50))
        assert d.status.canary_weight == 10
        assert d.requeue_after == pytest.approx(35)

    def test_passing_check_steps_up(self) -> None:
        d = decide(
            spec("v2"), verified_v2(), at=70, versions={"v1": UP, "v2": UP}, metrics=snap(50)
        )
        assert d.status.canary_weight == 50
        assert d.action == "step"
        assert d.status.rollout is not None and d.status.rollout.last_check is not None
        assert d.status.rollout.last_check.result == models.CheckResult.PASSED
        assert d.status.rollout.last_check.requests == 50
        assert "CanaryWeight" in reasons(d)

    def test_too_little_traffic_holds_and_never_passes(self) -> None:
        status = verified_v2()
        for at in (70, 130, 190, 300):  # within progressDeadlineSeconds (300 s) of the first
            d = decide(spec("v2"), status, at=at, versions={"v1": UP, "v2": UP}, metrics=snap(3))
            assert d.status.canary_weight == 10
            assert d.status.rollout is not None and d.status.rollout.last_check is not None
            assert d.status.rollout.last_check.result == models.CheckResult.INCONCLUSIVE
            status = d.status
        # traffic adds up across held intervals: enough now, so it passes
        d = decide(spec("v2"), status, at=310, versions={"v1": UP, "v2": UP}, metrics=snap(12))
        assert d.status.canary_weight == 50

    def test_failing_checks_roll_back(self) -> None:
        status = verified_v2()
        bad = snap(100, errors=30)
        d1 = decide(spec("v2"), status, at=70, versions={"v1": UP, "v2": UP}, metrics=bad)
        assert d1.status.rollout is not None and d1.status.rollout.failed_checks == 1
        assert d1.status.canary_weight == 10
        assert "CanaryCheckFailed" in reasons(d1)
        d2 = decide(
            spec("v2"),
            d1.status,
            at=140,
            versions={"v1": UP, "v2": UP},
            metrics=snap(200, errors=60),
        )
        assert d2.status.phase == models.Phase.ROLLING_BACK
        assert d2.status.canary_weight == 0
        assert d2.status.canary_version == "v2"  # the route moves first, the pods next pass
        assert "AnalysisFailed" in reasons(d2)
        d3 = decide(spec("v2"), d2.status, at=141, versions={"v1": UP, "v2": UP})
        assert d3.status.phase == models.Phase.FAILED
        assert d3.status.canary_version is None
        assert d3.status.failed_revision == spec("v2").revision()
        assert d3.status.history[-1].result == models.HistoryResult.ROLLED_BACK
        assert "error rate" in d3.status.history[-1].reason
        assert cond(d3.status, "Ready").status == "True"
        assert cond(d3.status, "Progressing").reason == "RolledBack"

    def test_slow_canary_fails_on_latency(self) -> None:
        d = decide(
            spec("v2"),
            verified_v2(),
            at=70,
            versions={"v1": UP, "v2": UP},
            metrics=snap(100, fast=False),
        )
        assert d.status.rollout is not None and d.status.rollout.last_check is not None
        assert d.status.rollout.last_check.result == models.CheckResult.FAILED
        assert "p99 latency" in d.status.rollout.last_check.message

    def test_canary_without_ready_pods_fails_its_check(self) -> None:
        down = VersionObservation(
            exists=True, replicas=1, ready=0, problem="pod x CrashLoopBackOff"
        )
        d = decide(
            spec("v2"), verified_v2(), at=70, versions={"v1": UP, "v2": down}, metrics=snap(50)
        )
        assert d.status.rollout is not None and d.status.rollout.failed_checks == 1
        assert "CrashLoopBackOff" in d.status.rollout.last_check.message  # type: ignore[union-attr]

    def test_failed_stays_failed_until_the_spec_changes(self) -> None:
        status = verified_v2()
        for at in (70, 140, 141):
            status = decide(
                spec("v2"),
                status,
                at=at,
                versions={"v1": UP, "v2": UP},
                metrics=snap(at * 10, errors=at * 5),
            ).status
        assert status.phase == models.Phase.FAILED
        again = decide(spec("v2"), status, at=500, versions={"v1": UP})
        assert again.status.canary_version is None and again.events == ()
        v3 = decide(spec("v3"), status, at=600, versions={"v1": UP})
        assert v3.status.canary_version == "v3"
        assert v3.status.failed_revision is None

    def test_progress_deadline_rolls_back(self) -> None:
        created = decide(spec("v2"), ready_v1(), versions={"v1": UP}).status
        pending = VersionObservation(
            exists=True,
            replicas=1,
            ready=0,
            problem="pod clip-v2-x Unschedulable: Insufficient gpu",
        )
        before = decide(spec("v2"), created, at=299, versions={"v1": UP, "v2": pending})
        assert before.status.phase == models.Phase.PROGRESSING
        after = decide(spec("v2"), created, at=301, versions={"v1": UP, "v2": pending})
        assert after.status.phase == models.Phase.ROLLING_BACK
        assert reasons(after) == ["ProgressDeadlineExceeded"]
        assert "Unschedulable" in after.status.message

    def test_failing_test_inference_counts_once_per_interval(self) -> None:
        created = decide(spec("v2"), ready_v1(), versions={"v1": UP}).status
        bad = SmokeResult(False, "HTTP 500")
        d1 = decide(spec("v2"), created, at=5, versions={"v1": UP, "v2": UP}, smoke=bad)
        assert d1.status.rollout is not None and d1.status.rollout.failed_checks == 1
        d2 = decide(spec("v2"), d1.status, at=10, versions={"v1": UP, "v2": UP}, smoke=bad)
        assert d2.status.rollout is not None and d2.status.rollout.failed_checks == 1
        d3 = decide(spec("v2"), d2.status, at=70, versions={"v1": UP, "v2": UP}, smoke=bad)
        assert d3.status.phase == models.Phase.ROLLING_BACK
        assert d3.status.canary_weight == 0


class TestPromotion:
    def _at_100(self) -> models.MultimodalModelStatus:
        status = verified_v2()
        status = decide(
            spec("v2"), status, at=70, versions={"v1": UP, "v2": UP}, metrics=snap(50)
        ).status
        status = decide(
            spec("v2"), status, at=140, versions={"v1": UP, "v2": UP}, metrics=snap(100)
        ).status
        assert status.canary_weight == 100
        assert status.phase == models.Phase.PROMOTING
        return status

    def test_promotes_after_the_last_step(self) -> None:
        d = decide(
            spec("v2"), self._at_100(), at=210, versions={"v1": UP, "v2": UP}, metrics=snap(150)
        )
        s = d.status
        assert (s.stable_version, s.canary_version, s.canary_weight) == ("v2", None, 0)
        assert s.stable_revision == spec("v2").revision()
        assert s.phase == models.Phase.READY
        assert s.history[-1].result == models.HistoryResult.PROMOTED
        retiring = [v for v in s.versions if v.role == models.VersionRole.RETIRING]
        assert [v.name for v in retiring] == ["v1"]
        assert retiring[0].retire_after == conditions.rfc3339(T0 + timedelta(seconds=270))
        assert "Promoted" in reasons(d)
        assert cond(s, "Progressing").reason == "RolloutComplete"

    def test_old_version_retires_after_the_delay(self) -> None:
        promoted = decide(
            spec("v2"), self._at_100(), at=210, versions={"v1": UP, "v2": UP}, metrics=snap(150)
        ).status
        kept = decide(spec("v2"), promoted, at=260, versions={"v1": UP, "v2": UP})
        assert [v.name for v in kept.status.versions] == ["v2", "v1"]
        assert kept.requeue_after == pytest.approx(10)
        gone = decide(spec("v2"), kept.status, at=271, versions={"v1": UP, "v2": UP})
        assert [v.name for v in gone.status.versions] == ["v2"]
        assert "VersionRetired" in reasons(gone)

    def test_going_back_to_the_retiring_version_needs_no_analysis(self) -> None:
        promoted = decide(
            spec("v2"), self._at_100(), at=210, versions={"v1": UP, "v2": UP}, metrics=snap(150)
        ).status
        d = decide(spec("v1"), promoted, at=220, versions={"v1": UP, "v2": UP})
        assert (d.status.stable_version, d.status.canary_version) == ("v1", None)
        assert d.action == "revert"
        assert [v.name for v in d.status.versions if v.role == models.VersionRole.RETIRING] == [
            "v2"
        ]


class TestChangesMidRollout:
    def test_new_revision_restarts_from_zero(self) -> None:
        status = decide(
            spec("v2"), verified_v2(), at=70, versions={"v1": UP, "v2": UP}, metrics=snap(50)
        ).status
        assert status.canary_weight == 50
        d = decide(spec("v3"), status, at=80, versions={"v1": UP, "v2": UP})
        assert (d.status.canary_version, d.status.canary_weight) == ("v3", 0)
        assert d.status.history[-1].result == models.HistoryResult.SUPERSEDED
        assert d.status.rollout is not None and d.status.rollout.verified_at is None

    def test_same_version_label_new_revision_gets_a_fresh_name(self) -> None:
        status = verified_v2()
        changed = spec("v2").model_copy(update={"runtime": models.RuntimeSpec(image="rt:new")})
        d = decide(changed, status, at=20, versions={"v1": UP, "v2": UP})
        assert d.status.canary_version == f"v2-{changed.revision()[:6]}"

    def test_back_to_stable_cancels_without_analysis(self) -> None:
        d = decide(spec("v1"), verified_v2(), at=20, versions={"v1": UP, "v2": UP})
        assert (d.status.canary_version, d.status.canary_weight) == (None, 0)
        assert d.status.phase == models.Phase.READY
        assert d.status.history[-1].result == models.HistoryResult.CANCELLED

    def test_paused_holds_the_weight(self) -> None:
        status = verified_v2()
        d = decide(
            spec("v2", paused=True),
            status,
            at=500,
            versions={"v1": UP, "v2": UP},
            metrics=snap(500),
        )
        assert d.status.canary_weight == 10
        assert cond(d.status, "Progressing").reason == "CanaryPaused"
        resumed = decide(
            spec("v2"), d.status, at=510, versions={"v1": UP, "v2": UP}, metrics=snap(500)
        )
        assert resumed.status.canary_weight == 50


class TestManual:
    def manual(self, weight: int, **extra: Any) -> models.MultimodalModelSpec:
        return spec("v2", strategy="Manual", canaryWeight=weight, **extra)

    def test_weight_follows_the_user(self) -> None:
        created = decide(self.manual(30), ready_v1(), versions={"v1": UP}).status
        d = decide(self.manual(30), created, at=5, versions={"v1": UP, "v2": UP}, smoke=OK)
        assert d.status.canary_weight == 30
        d2 = decide(self.manual(60), d.status, at=10, versions={"v1": UP, "v2": UP})
        assert d2.status.canary_weight == 60
        assert cond(d2.status, "Progressing").reason == "ManualWeight"

    def test_refuses_weight_to_an_unready_canary(self) -> None:
        created = decide(self.manual(30), ready_v1(), versions={"v1": UP}).status
        verified = decide(
            self.manual(30), created, at=5, versions={"v1": UP, "v2": UP}, smoke=OK
        ).status
        d = decide(self.manual(30), verified, at=10, versions={"v1": UP, "v2": DOWN})
        assert d.status.canary_weight == 0
        assert d.action == "refuse-weight"

    def test_weight_100_promotes(self) -> None:
        created = decide(self.manual(100), ready_v1(), versions={"v1": UP}).status
        d = decide(self.manual(100), created, at=5, versions={"v1": UP, "v2": UP}, smoke=OK)
        assert d.status.stable_version == "v2"
        assert d.status.history[-1].result == models.HistoryResult.PROMOTED


class TestHealth:
    def test_stable_without_ready_pods_is_degraded(self) -> None:
        d = decide(spec(), ready_v1(), at=30, versions={"v1": DOWN})
        assert d.status.phase == models.Phase.DEGRADED
        assert cond(d.status, "Ready").reason == "StableUnavailable"
        back = decide(spec(), d.status, at=40, versions={"v1": UP})
        assert back.status.phase == models.Phase.READY

    def test_ready_transition_time_moves_only_on_change(self) -> None:
        status = ready_v1()
        since = cond(status, "Ready").last_transition_time
        later = decide(spec(), status, at=100, versions={"v1": UP}).status
        assert cond(later, "Ready").last_transition_time == since


def _scenario() -> list[
    tuple[
        models.MultimodalModelSpec,
        models.MultimodalModelStatus,
        float,
        dict[str, VersionObservation],
        models.MetricsSnapshot | None,
    ]
]:
    """Snapshots of every phase along one rollout, with the inputs of the next pass."""
    both = {"v1": UP, "v2": UP}
    steps: list[Any] = [(spec(), models.MultimodalModelStatus(), 0, {}, None)]
    status = decide(spec(), models.MultimodalModelStatus()).status  # Deploying
    steps.append((spec(), status, 1, {"v1": UP}, None))
    status = ready_v1()  # Ready
    steps.append((spec("v2"), status, 2, {"v1": UP}, None))
    status = decide(spec("v2"), status, at=2, versions={"v1": UP}).status  # Progressing, w=0
    steps.append((spec("v2"), status, 3, both, snap(0)))
    status = verified_v2(at=3)  # Progressing, w=10
    steps.append((spec("v2"), status, 80, both, snap(50)))
    status = decide(spec("v2"), status, at=200, versions=both, metrics=snap(500, 400)).status
    steps.append((spec("v2"), status, 300, both, snap(900, 800)))
    status = decide(spec("v2"), status, at=300, versions=both, metrics=snap(900, 800)).status
    steps.append((spec("v2"), status, 301, both, None))  # RollingBack
    status = decide(spec("v2"), status, at=301, versions=both).status
    steps.append((spec("v2"), status, 400, {"v1": UP}, None))  # Failed
    return steps


@pytest.mark.parametrize("index", range(8))
def test_a_restarted_operator_decides_the_same(index: int) -> None:
    """All progress is in status: a status read back from the API (JSON) gives the same
    decision as the in-memory one, from every phase."""
    s, status, at, versions, metrics = _scenario()[index]
    from_api = models.MultimodalModelStatus.model_validate(status.wire())
    smoke = OK if index == 3 else None
    a = decide(s, status, at=at, versions=versions, metrics=metrics, smoke=smoke)
    b = decide(s, from_api, at=at, versions=versions, metrics=metrics, smoke=smoke)
    assert a.status.wire() == b.status.wire()
    assert a.events == b.events


def test_scenario_covers_every_phase() -> None:
    phases = {st.phase for _, st, *_ in _scenario()}
    assert {
        models.Phase.PENDING,
        models.Phase.DEPLOYING,
        models.Phase.READY,
        models.Phase.PROGRESSING,
        models.Phase.ROLLING_BACK,
        models.Phase.FAILED,
    } <= phases


# --- issue 12: comparative analysis, inconclusive deadline, retiring before weight ------------
def decide_both(
    s: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    at: float,
    canary: models.MetricsSnapshot | None,
    stable: models.MetricsSnapshot | None,
    smoke: SmokeResult | None = None,
) -> Decision:
    obs = Observations(
        now=T0 + timedelta(seconds=at),
        versions={"v1": UP, "v2": UP},
        smoke=smoke,
        canary_metrics=canary,
        stable_metrics=stable,
    )
    return machine.next_rollout_decision(spec=s, status=status, generation=1, obs=obs)


def verified_with_stable(stable: models.MetricsSnapshot) -> models.MultimodalModelStatus:
    created = decide(spec("v2"), ready_v1(), versions={"v1": UP}).status
    d = decide_both(spec("v2"), created, at=5, canary=snap(0), stable=stable, smoke=OK)
    assert d.status.rollout is not None and d.status.rollout.stable_baseline == stable
    return d.status


class TestComparativeAnalysis:
    def test_canary_worse_than_stable_in_the_same_window_fails(self) -> None:
        status = verified_with_stable(snap(1000, 10, pods=("s1",)))
        # stable: 1000 more requests, 20 errors (2 %); canary: 100 requests, 10 errors (10 %)
        d = decide_both(
            spec("v2"),
            status,
            at=70,
            canary=snap(100, 10),
            stable=snap(2000, 30, pods=("s1",)),
        )
        check = d.status.rollout.last_check  # type: ignore[union-attr]
        assert check is not None and check.result == models.CheckResult.FAILED
        assert (check.stable_error_rate, check.stable_requests) == (0.02, 1000)
        assert "stable 2.00% + maxErrorRate 5.00%" in check.message

    def test_canary_as_good_as_a_stable_with_client_errors_passes(self) -> None:
        # Both answer 10 % bad client input with 400: that is the traffic, not the canary.
        status = verified_with_stable(snap(1000, 100, pods=("s1",)))
        d = decide_both(
            spec("v2"),
            status,
            at=70,
            canary=snap(100, 10),
            stable=snap(2000, 200, pods=("s1",)),
        )
        assert d.status.canary_weight == 50
        check = d.status.rollout.last_check  # type: ignore[union-attr]
        assert check is not None and check.stable_error_rate == 0.1
        # the next window's stable baseline moved with the canary's
        assert d.status.rollout.stable_baseline == snap(2000, 200, pods=("s1",))  # type: ignore[union-attr]

    def test_without_stable_data_the_reference_is_zero(self) -> None:
        status = verified_with_stable(snap(1000, 100, pods=("s1",)))
        d = decide_both(spec("v2"), status, at=70, canary=snap(100, 10), stable=None)
        check = d.status.rollout.last_check  # type: ignore[union-attr]
        assert check is not None and check.result == models.CheckResult.FAILED
        assert check.stable_error_rate is None

    def test_last_stable_reference_carries_over_when_stable_gets_no_traffic(self) -> None:
        status = verified_with_stable(snap(1000, 100, pods=("s1",)))
        status = decide_both(
            spec("v2"), status, at=70, canary=snap(100, 10), stable=snap(2000, 200, pods=("s1",))
        ).status
        # the stable gets no traffic this window (say the canary is at 100 %)
        d = decide_both(
            spec("v2"), status, at=140, canary=snap(200, 20), stable=snap(2000, 200, pods=("s1",))
        )
        check = d.status.rollout.last_check  # type: ignore[union-attr]
        assert check is not None and check.result == models.CheckResult.PASSED
        assert (check.stable_error_rate, check.stable_requests) == (0.1, 0)


class TestInconclusiveDeadline:
    def test_inconclusive_after_verification_rolls_back_after_the_deadline(self) -> None:
        status = verified_v2()  # verified at 5; progressDeadlineSeconds 300
        for at in (70, 200, 369):
            d = decide(spec("v2"), status, at=at, versions={"v1": UP, "v2": UP}, metrics=snap(1))
            assert d.status.phase == models.Phase.PROGRESSING, at
            status = d.status
        assert status.rollout is not None
        assert status.rollout.inconclusive_since == conditions.rfc3339(T0 + timedelta(seconds=70))
        d = decide(spec("v2"), status, at=370, versions={"v1": UP, "v2": UP}, metrics=snap(1))
        assert d.status.phase == models.Phase.ROLLING_BACK
        assert d.status.canary_weight == 0
        assert "AnalysisInconclusive" in reasons(d)
        assert "progressDeadlineSeconds (300 s)" in d.status.message

    def test_metrics_unavailable_count_as_inconclusive_too(self) -> None:
        status = verified_v2()
        status = decide(spec("v2"), status, at=70, versions={"v1": UP, "v2": UP}).status
        d = decide(spec("v2"), status, at=371, versions={"v1": UP, "v2": UP})
        assert d.status.phase == models.Phase.ROLLING_BACK

    def test_a_conclusive_check_restarts_the_clock(self) -> None:
        status = verified_v2()
        status = decide(
            spec("v2"), status, at=70, versions={"v1": UP, "v2": UP}, metrics=snap(1)
        ).status
        status = decide(
            spec("v2"), status, at=200, versions={"v1": UP, "v2": UP}, metrics=snap(50)
        ).status
        assert status.canary_weight == 50 and status.rollout is not None
        assert status.rollout.inconclusive_since is None
        d = decide(spec("v2"), status, at=400, versions={"v1": UP, "v2": UP}, metrics=snap(51))
        assert d.status.phase == models.Phase.PROGRESSING

    def test_paused_time_does_not_count(self) -> None:
        status = verified_v2()
        status = decide(
            spec("v2"), status, at=70, versions={"v1": UP, "v2": UP}, metrics=snap(1)
        ).status
        status = decide(
            spec("v2", paused=True), status, at=1000, versions={"v1": UP, "v2": UP}, metrics=snap(1)
        ).status
        assert status.rollout is not None and status.rollout.inconclusive_since is None
        d = decide(spec("v2"), status, at=1010, versions={"v1": UP, "v2": UP}, metrics=snap(1))
        assert d.status.phase == models.Phase.PROGRESSING


class TestRetiringBeforeWeight:
    def test_retiring_version_goes_before_a_new_canary_gets_weight(self) -> None:
        promoted = decide(
            spec("v2"),
            TestPromotion()._at_100(),
            at=210,
            versions={"v1": UP, "v2": UP},
            metrics=snap(150),
        ).status
        created = decide(spec("v3"), promoted, at=215, versions={"v1": UP, "v2": UP}).status
        up3 = {"v1": UP, "v2": UP, "v3": UP}
        d = decide(spec("v3"), created, at=220, versions=up3, smoke=OK, metrics=snap(0))
        assert d.status.canary_weight == 0  # not yet: v1 is still retiring
        assert d.status.rollout is not None and d.status.rollout.verified_at is None
        assert not [v for v in d.status.versions if v.role == models.VersionRole.RETIRING]
        assert "VersionRetired" in reasons(d)
        d = decide(spec("v3"), d.status, at=225, versions=up3, smoke=OK, metrics=snap(0))
        assert d.status.canary_weight == 10


class TestStopCanary:
    def test_stop_canary_moves_weight_to_zero_and_rolls_back(self) -> None:
        status = verified_v2()
        d = machine.stop_canary(
            spec=spec("v2"),
            status=status,
            generation=1,
            obs=Observations(now=T0, versions={"v1": UP, "v2": UP}),
            reason="NameConflict",
            message="Service clip-v2 exists and belongs to MultimodalModel clip-v2",
        )
        assert d.status.canary_weight == 0
        assert d.status.phase == models.Phase.ROLLING_BACK
        assert "NameConflict" in reasons(d)
        done = decide(spec("v2"), d.status, at=2, versions={"v1": UP, "v2": UP})
        assert done.status.phase == models.Phase.FAILED
        assert "NameConflict" in done.status.history[-1].reason
