"""rollout/machine.py under spec.rollout.quality: the golden-set gate before any weight and the
live comparison verdict during the steps, as pure transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mmop.operator import conditions, models
from mmop.operator.rollout import machine
from mmop.operator.rollout.machine import Decision
from mmop.operator.rollout.observations import Observations, SmokeResult, VersionObservation
from mmop.operator.rollout.quality import GoldenResult
from mmop.runtime import scoring

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
UP = VersionObservation(exists=True, replicas=1, ready=1, available=True)
OK = SmokeResult(True, "answered")
GATE = {"minSamples": 5, "mirrorPercent": 20}
AGREE = scoring.LABEL_AGREEMENT


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


def snap(requests: float, errors: float = 0) -> models.MetricsSnapshot:
    return models.MetricsSnapshot(
        requests=requests, errors=errors, pods=["p1"], buckets={"0.1": requests, "+Inf": requests}
    )


def reasons(d: Decision) -> list[str]:
    return [e.reason for e in d.events]


def cond(status: models.MultimodalModelStatus, type_: str) -> models.Condition:
    found = conditions.get(status.conditions, type_)
    assert found is not None
    return found


def qspec(version: str = "v2", **gate: Any) -> models.MultimodalModelSpec:
    return spec(version, quality={**GATE, **gate})


def decide(
    s: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    at: float = 0,
    golden: GoldenResult | None = None,
    metrics: models.MetricsSnapshot | None = None,
    smoke: SmokeResult | None = OK,
    versions: dict[str, VersionObservation] | None = None,
) -> Decision:
    obs = Observations(
        now=T0 + timedelta(seconds=at),
        versions=versions or {"v1": UP, "v2": UP},
        smoke=smoke,
        canary_metrics=metrics,
        golden=golden,
    )
    return machine.next_rollout_decision(spec=s, status=status, generation=1, obs=obs)


def ready_v1() -> models.MultimodalModelStatus:
    first = decide(spec(), models.MultimodalModelStatus(), smoke=None, versions={"v1": UP})
    status = decide(spec(), first.status, smoke=None, versions={"v1": UP}).status
    assert status.phase == models.Phase.READY
    return status


def created(s: models.MultimodalModelSpec) -> models.MultimodalModelStatus:
    status = decide(s, ready_v1(), smoke=None, versions={"v1": UP}).status
    assert status.canary_version == "v2" and status.canary_weight == 0
    return status


def golden(score: float | None, *, problem: str | None = None, n: int = 10) -> GoldenResult:
    return GoldenResult(AGREE, n if score is not None else 0, score, problem=problem)


def quality_snap(requests: float, compared: float, total: float) -> models.MetricsSnapshot:
    base = snap(requests)
    return base.model_copy(
        update={"quality_count": {AGREE: compared}, "quality_sum": {AGREE: total}}
    )


# --- golden set ------------------------------------------------------------------------------
class TestGoldenGate:
    def test_wanted_only_with_a_gate_and_before_verification(self) -> None:
        status = created(qspec())
        assert machine.wants_golden_check(qspec(), status)
        assert not machine.wants_golden_check(spec("v2"), status)
        verified = decide(qspec(), status, at=5, golden=golden(1.0), metrics=snap(0)).status
        assert not machine.wants_golden_check(qspec(), verified)

    def test_pass_verifies_and_gives_the_first_weight(self) -> None:
        d = decide(qspec(), created(qspec()), at=5, golden=golden(1.0), metrics=snap(0))
        assert d.status.canary_weight == 10
        assert d.status.rollout is not None and d.status.rollout.verified_at is not None
        check = d.status.rollout.last_check
        assert check is not None and check.quality is not None
        assert check.quality.source == models.QualitySource.GOLDEN
        assert (check.quality.metric, check.quality.score, check.quality.threshold) == (
            AGREE,
            1.0,
            0.95,
        )
        assert check.quality.samples == 10
        assert check.quality.result == models.CheckResult.PASSED
        assert "QualityCheckPassed" in reasons(d)
        assert reasons(d).index("QualityCheckPassed") < reasons(d).index("CanaryVerified")

    def test_below_threshold_rolls_back_before_any_weight(self) -> None:
        d = decide(qspec(), created(qspec()), at=5, golden=golden(0.4), metrics=snap(0))
        s = d.status
        assert s.phase == models.Phase.ROLLING_BACK
        assert s.canary_weight == 0
        assert s.rollout is not None and s.rollout.verified_at is None
        assert s.rollout.last_check is not None and s.rollout.last_check.quality is not None
        assert s.rollout.last_check.quality.result == models.CheckResult.FAILED
        assert s.rollout.last_check.quality.score == 0.4
        (event,) = [e for e in d.events if e.reason == "QualityCheckFailed"]
        assert event.type == "Warning"
        assert "0.4000" in event.message and "0.95" in event.message
        # next pass: the canary goes, phase Failed, history and the Progressing condition say why
        done = decide(qspec(), s, at=6).status
        assert done.phase == models.Phase.FAILED
        assert done.canary_version is None
        assert done.history[-1].result == models.HistoryResult.ROLLED_BACK
        assert done.history[-1].reason.startswith("QualityCheckFailed: ")
        assert "label_agreement 0.4000 below the minimum 0.95" in done.history[-1].reason
        progressing = cond(done, "Progressing")
        assert progressing.reason == "QualityCheckFailed"
        assert "0.4000" in progressing.message

    def test_word_error_rate_is_a_maximum(self) -> None:
        asr = models.parse_spec(
            {
                **qspec().wire(),
                "model": {"source": "hf://openai/whisper", "task": "automatic-speech-recognition"},
            }
        )
        status = created(asr)
        wer = scoring.WORD_ERROR_RATE
        ok = decide(asr, status, at=5, golden=GoldenResult(wer, 10, 0.05), metrics=snap(0))
        assert ok.status.canary_weight == 10
        bad = decide(asr, status, at=5, golden=GoldenResult(wer, 10, 0.5), metrics=snap(0))
        assert bad.status.phase == models.Phase.ROLLING_BACK
        assert "above the maximum 0.1" in bad.status.message

    def test_missing_result_holds_at_weight_zero(self) -> None:
        d = decide(qspec(), created(qspec()), at=5, golden=None, metrics=snap(0))
        assert d.action == "wait-quality"
        assert d.status.canary_weight == 0
        assert d.status.rollout is not None and d.status.rollout.verified_at is None
        assert d.status.phase == models.Phase.PROGRESSING

    def test_incomplete_result_holds_and_says_why_once(self) -> None:
        problem = "golden set ConfigMap gs: sample 'a' is not JSON"
        first = decide(qspec(), created(qspec()), at=5, golden=golden(None, problem=problem))
        s = first.status
        assert s.canary_weight == 0 and s.rollout is not None and s.rollout.verified_at is None
        assert s.rollout.last_check is not None
        assert s.rollout.last_check.result == models.CheckResult.INCONCLUSIVE
        assert problem in s.rollout.last_check.message
        assert problem in cond(s, "Progressing").message
        assert reasons(first) == ["QualityCheckPending"]
        again = decide(qspec(), s, at=10, golden=golden(None, problem=problem))
        assert again.events == () and again.status.rollout == s.rollout
        # past the progress deadline it is rolled back, saying why
        late = decide(qspec(), s, at=301, golden=golden(None, problem=problem))
        assert late.status.phase == models.Phase.ROLLING_BACK
        assert "ProgressDeadlineExceeded" in late.status.message
        assert problem in late.status.message

    def test_without_a_gate_no_golden_result_is_needed(self) -> None:
        d = decide(spec("v2"), created(spec("v2")), at=5, golden=None, metrics=snap(0))
        assert d.status.canary_weight == 10


# --- live comparison -------------------------------------------------------------------------
def at_first_step(s: models.MultimodalModelSpec) -> models.MultimodalModelStatus:
    status = decide(s, created(s), at=5, golden=golden(1.0), metrics=quality_snap(0, 0, 0)).status
    assert status.canary_weight == 10
    return status


class TestLiveComparison:
    def test_fewer_than_min_samples_is_inconclusive(self) -> None:
        status = at_first_step(qspec())
        d = decide(qspec(), status, at=70, metrics=quality_snap(50, 4, 4))
        assert d.action == "inconclusive"
        assert d.status.canary_weight == 10
        check = d.status.rollout.last_check if d.status.rollout else None
        assert check is not None and check.result == models.CheckResult.INCONCLUSIVE
        assert check.quality is not None and check.quality.samples == 4
        assert check.quality.source == models.QualitySource.LIVE
        assert "fewer than minSamples 5" in check.message
        # the window keeps growing from the same baseline: enough comparisons later -> a step
        d2 = decide(qspec(), d.status, at=75, metrics=quality_snap(60, 6, 6))
        assert d2.status.canary_weight == 50

    def test_enough_agreeing_comparisons_pass(self) -> None:
        d = decide(qspec(), at_first_step(qspec()), at=70, metrics=quality_snap(50, 20, 19.5))
        assert d.action == "step" and d.status.canary_weight == 50
        check = d.status.rollout.last_check if d.status.rollout else None
        assert check is not None and check.quality is not None
        assert check.quality.score == 0.975 and check.quality.samples == 20
        assert check.quality.scores == {AGREE: 0.975}

    def test_below_threshold_fails_and_rolls_back_as_quality(self) -> None:
        status = at_first_step(qspec())
        first = decide(qspec(), status, at=70, metrics=quality_snap(50, 20, 10))
        assert first.action == "fail-check"
        assert first.status.canary_weight == 10
        assert first.status.rollout is not None and first.status.rollout.failed_checks == 1
        assert "label_agreement 0.5000 below the minimum 0.95" in (
            first.status.rollout.last_check.message if first.status.rollout.last_check else ""
        )
        second = decide(qspec(), first.status, at=140, metrics=quality_snap(100, 40, 20))
        assert second.status.phase == models.Phase.ROLLING_BACK
        assert "QualityCheckFailed" in reasons(second)
        assert second.status.message.startswith("QualityCheckFailed: ")

    def test_healthy_traffic_without_comparisons_never_passes(self) -> None:
        status = at_first_step(qspec())
        for i in range(1, 4):
            status = decide(qspec(), status, at=70 * i, metrics=quality_snap(50 * i, 0, 0)).status
            assert status.canary_weight == 10

    def test_mirror_percent_zero_needs_no_live_comparison(self) -> None:
        s = qspec(mirrorPercent=0)
        d = decide(s, at_first_step(s), at=70, metrics=quality_snap(50, 0, 0))
        assert d.status.canary_weight == 50
        assert d.status.rollout is not None and d.status.rollout.last_check is not None
        assert d.status.rollout.last_check.quality is None

    def test_error_rate_failure_keeps_its_own_reason(self) -> None:
        status = at_first_step(qspec())
        bad = quality_snap(50, 20, 20).model_copy(update={"errors": 25})
        first = decide(qspec(), status, at=70, metrics=bad)
        worse = quality_snap(100, 40, 40).model_copy(update={"errors": 50})
        second = decide(qspec(), first.status, at=140, metrics=worse)
        assert second.status.message.startswith("AnalysisFailed: ")


# --- the mirror env survives promotion --------------------------------------------------------
def test_promotion_keeps_the_canarys_mirror_for_the_new_stable() -> None:
    s = qspec()
    status = at_first_step(s)
    metrics = quality_snap(50, 20, 20)
    for i, weight in enumerate((50, 100), start=1):
        metrics = quality_snap(50 * (i + 1), 20 * (i + 1), 20 * (i + 1))
        status = decide(s, status, at=70 * i, metrics=metrics).status
        assert status.canary_weight == weight
    done = decide(s, status, at=300, metrics=quality_snap(200, 80, 80)).status
    assert done.stable_version == "v2" and done.phase == models.Phase.READY
    assert done.stable_mirror == models.Mirror(version="v1", percent=20)
    (retiring,) = [v for v in done.versions if v.role == models.VersionRole.RETIRING]
    assert retiring.name == "v1" and retiring.mirror is None
