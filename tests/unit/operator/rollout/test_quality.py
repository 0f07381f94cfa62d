"""rollout/quality.py: live comparison scores from /metrics, the live and golden verdicts."""

from __future__ import annotations

import httpx
import pytest

from mmop.operator import models
from mmop.operator.reconcile import probes
from mmop.operator.reconcile.observe import PodInfo
from mmop.operator.rollout import analysis, quality
from mmop.runtime import scoring

AGREE, WER = scoring.LABEL_AGREEMENT, scoring.WORD_ERROR_RATE
GATE = models.Quality(min_samples=10)

METRICS_TEXT = """\
# TYPE mmop_requests_total counter
mmop_requests_total{model="clip",endpoint="infer",code="200"} 30.0
# TYPE mmop_quality_score summary
mmop_quality_score_count{metric="label_agreement"} 12.0
mmop_quality_score_sum{metric="label_agreement"} 9.0
mmop_quality_score_count{metric="embedding_cosine"} 2.0
mmop_quality_score_sum{metric="embedding_cosine"} 1.5
"""


def snap(count: float, total: float, *, pods: tuple[str, ...] = ("p1",)) -> models.MetricsSnapshot:
    return models.MetricsSnapshot(
        requests=100, pods=list(pods), quality_count={AGREE: count}, quality_sum={AGREE: total}
    )


def test_scores_are_read_from_the_same_scrape_as_the_counters() -> None:
    snap_a = analysis.parse_runtime_metrics(METRICS_TEXT, pod="a")
    assert snap_a.requests == 30
    assert snap_a.quality_count == {AGREE: 12, scoring.EMBEDDING_COSINE: 2}
    assert snap_a.quality_sum == {AGREE: 9, scoring.EMBEDDING_COSINE: 1.5}
    both = analysis.merge([snap_a, analysis.parse_runtime_metrics(METRICS_TEXT, pod="b")])
    assert both.quality_count[AGREE] == 24 and both.quality_sum[AGREE] == 18
    assert both.pods == ["a", "b"]


async def test_prometheus_snapshot_reads_scores_by_metric() -> None:
    queries: list[str] = []

    def prometheus(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        queries.append(query)
        result: list[dict[str, object]] = []
        if query.startswith("sum by (metric) (mmop_quality_score_count"):
            result = [{"metric": {"metric": AGREE}, "value": [0, "12"]}]
        elif query.startswith("sum by (metric) (mmop_quality_score_sum"):
            result = [{"metric": {"metric": AGREE}, "value": [0, "9"]}]
        elif query.startswith("count by (pod)"):
            result = [{"metric": {"pod": "clip-v2-abc"}, "value": [0, "1"]}]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    pod = PodInfo(name="clip-v2-abc", version="v2", revision="r", ip="10.0.0.1", ready=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(prometheus)) as http:
        got = await probes.prometheus_snapshot(
            http, url="http://prom:9090", namespace="ml", pods=[pod]
        )
    assert got is not None
    assert got.quality_count == {AGREE: 12} and got.quality_sum == {AGREE: 9}
    scored = [q for q in queries if "mmop_quality_score" in q]
    assert len(scored) == 2
    assert all('namespace="ml"' in q and 'pod=~"clip-v2-abc"' in q for q in scored)


class TestLiveCheck:
    def check(
        self, baseline: models.MetricsSnapshot | None, current: models.MetricsSnapshot
    ) -> tuple[models.QualityCheck, str]:
        return quality.live_check(quality=GATE, metric=AGREE, baseline=baseline, current=current)

    def test_window_is_the_difference_to_the_baseline(self) -> None:
        check, message = self.check(snap(100, 50), snap(120, 69.5))
        assert (check.result, check.samples, check.score) == (models.CheckResult.PASSED, 20, 0.975)
        assert check.source == models.QualitySource.LIVE and check.threshold == 0.95
        assert "label_agreement 0.9750 at or above the minimum 0.95" in message

    def test_fewer_than_min_samples_is_inconclusive_even_when_perfect(self) -> None:
        check, message = self.check(snap(100, 50), snap(109, 59))
        assert check.result == models.CheckResult.INCONCLUSIVE
        assert check.samples == 9 and check.score == 1.0
        assert "fewer than minSamples 10" in message

    def test_below_threshold_fails(self) -> None:
        check, message = self.check(snap(0, 0), snap(10, 9))
        assert check.result == models.CheckResult.FAILED and check.score == 0.9
        assert "below the minimum 0.95" in message

    def test_no_comparisons_at_all_is_inconclusive(self) -> None:
        empty = models.MetricsSnapshot(requests=500, pods=["p1"])
        check, _ = self.check(models.MetricsSnapshot(pods=["p1"]), empty)
        assert check.result == models.CheckResult.INCONCLUSIVE and check.samples == 0

    @pytest.mark.parametrize(
        ("baseline", "current"),
        [
            (None, snap(50, 50)),
            (snap(0, 0, pods=("old",)), snap(50, 50)),
            (snap(80, 80), snap(50, 50)),  # counters went backwards
        ],
    )
    def test_changed_pods_or_reset_counters_are_inconclusive(
        self, baseline: models.MetricsSnapshot | None, current: models.MetricsSnapshot
    ) -> None:
        check, _ = self.check(baseline, current)
        assert check.result == models.CheckResult.INCONCLUSIVE

    def test_word_error_rate_is_judged_as_a_maximum(self) -> None:
        def wer(count: float, total: float) -> models.MetricsSnapshot:
            return models.MetricsSnapshot(
                pods=["p"], quality_count={WER: count}, quality_sum={WER: total}
            )

        good, _ = quality.live_check(
            quality=GATE, metric=WER, baseline=wer(0, 0), current=wer(20, 1)
        )
        bad, message = quality.live_check(
            quality=GATE, metric=WER, baseline=wer(0, 0), current=wer(20, 4)
        )
        assert good.result == models.CheckResult.PASSED and good.threshold == 0.1
        assert bad.result == models.CheckResult.FAILED
        assert "word_error_rate 0.2000 above the maximum 0.1" in message


def test_thresholds_follow_the_task() -> None:
    gate = models.Quality(
        embedding_cosine_min=0.9,
        label_agreement_min=0.8,
        text_similarity_min=0.7,
        word_error_rate_max=0.3,
    )
    got = {task: quality.threshold(gate, quality.metric_for(task)) for task in models.Task}
    assert got == {
        models.Task.IMAGE_TEXT_EMBEDDING: 0.9,
        models.Task.ZERO_SHOT_IMAGE_CLASSIFICATION: 0.8,
        models.Task.IMAGE_CLASSIFICATION: 0.8,
        models.Task.IMAGE_TO_TEXT: 0.7,
        models.Task.AUTOMATIC_SPEECH_RECOGNITION: 0.3,
    }


def test_golden_check_without_a_score_is_inconclusive() -> None:
    result = quality.GoldenResult(AGREE, 0, None, problem="no stable pod")
    check = quality.golden_check(GATE, result)
    assert check.result == models.CheckResult.INCONCLUSIVE and check.score is None
    assert "no stable pod" in quality.golden_message(check, result)


def test_worst_result_wins() -> None:
    P, F, I = models.CheckResult.PASSED, models.CheckResult.FAILED, models.CheckResult.INCONCLUSIVE  # noqa: E741
    assert quality.worst(P, P) == P
    assert quality.worst(P, I) == I
    assert quality.worst(I, F) == F
    assert quality.worst(F, P) == F
