"""The quality gate's verdicts: golden-set results and live comparison scores -> pass, fail or
inconclusive. Pure; the driver gathers the inputs (``reconcile/quality.py``).

A score is the mean over compared items of ``mmop.runtime.scoring.score_pair`` (one score per
item: per embedding row, per label, per text). Every threshold is a minimum except the word
error rate's, which is a maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from mmop.operator import models
from mmop.runtime import contract, scoring

_SCORE_SUM = f"{contract.METRIC_QUALITY_SCORE}_sum"
_SCORE_COUNT = f"{contract.METRIC_QUALITY_SCORE}_count"
METRIC_LABEL = contract.LABEL_METRIC


@dataclass(frozen=True)
class GoldenResult:
    """The operator's golden-set comparison of canary and stable answers."""

    metric: str
    samples: int
    """Compared items (a sample with a batch of n items counts n)."""
    score: float | None
    """The mean score; None when the comparison could not be completed."""
    problem: str | None = None
    """Why there is no score (no stable pod, a bad ConfigMap, an unanswered sample ...):
    the machine holds, it never passes."""
    source: str = "built-in golden set"
    """Where the samples came from, for messages."""


def metric_for(task: models.Task) -> str:
    return scoring.metric_for_task(task.value)


def threshold(quality: models.Quality, metric: str) -> float:
    """The spec's threshold for ``metric``."""
    return {
        scoring.EMBEDDING_COSINE: quality.embedding_cosine_min,
        scoring.LABEL_AGREEMENT: quality.label_agreement_min,
        scoring.TEXT_SIMILARITY: quality.text_similarity_min,
        scoring.WORD_ERROR_RATE: quality.word_error_rate_max,
    }[metric]


def passes(metric: str, score: float, limit: float) -> bool:
    return score >= limit if scoring.HIGHER_IS_BETTER[metric] else score <= limit


def describe(metric: str, score: float, limit: float) -> str:
    """'label_agreement 0.4000 below the minimum 0.95' (or above the maximum)."""
    if scoring.HIGHER_IS_BETTER[metric]:
        side = "at or above" if score >= limit else "below"
        return f"{metric} {score:.4f} {side} the minimum {limit:g}"
    side = "at or below" if score <= limit else "above"
    return f"{metric} {score:.4f} {side} the maximum {limit:g}"


def golden_check(quality: models.Quality, result: GoldenResult) -> models.QualityCheck:
    """Judge a golden-set result (Inconclusive when it has a problem instead of a score)."""
    limit = threshold(quality, result.metric)
    if result.problem is not None or result.score is None:
        verdict = models.CheckResult.INCONCLUSIVE
        scores = {}
    else:
        ok = passes(result.metric, result.score, limit)
        verdict = models.CheckResult.PASSED if ok else models.CheckResult.FAILED
        scores = {result.metric: round(result.score, 6)}
    return models.QualityCheck(
        source=models.QualitySource.GOLDEN,
        metric=result.metric,
        samples=result.samples,
        score=None if result.score is None else round(result.score, 6),
        threshold=limit,
        result=verdict,
        scores=scores,
    )


def golden_message(check: models.QualityCheck, result: GoldenResult) -> str:
    if result.problem is not None or check.score is None:
        return f"quality check on the {result.source} incomplete: {result.problem}"
    return (
        f"{result.source}: {describe(check.metric, check.score, check.threshold)} "
        f"over {check.samples} compared items"
    )


# --- live comparison -------------------------------------------------------------------------
def parse_quality_scores(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(sum, count) of ``mmop_quality_score`` by scoring metric from one pod's /metrics."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metric = sample.labels.get(METRIC_LABEL)
            if metric is None:
                continue
            if sample.name == _SCORE_SUM:
                sums[metric] = sums.get(metric, 0.0) + sample.value
            elif sample.name == _SCORE_COUNT:
                counts[metric] = counts.get(metric, 0.0) + sample.value
    return sums, counts


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}


def live_enabled(quality: models.Quality | None) -> bool:
    """Live comparison runs (and is required) when the gate is on and mirrors something."""
    return quality is not None and quality.mirror_percent > 0


def live_check(
    *,
    quality: models.Quality,
    metric: str,
    baseline: models.MetricsSnapshot | None,
    current: models.MetricsSnapshot,
) -> tuple[models.QualityCheck, str]:
    """Judge the live comparisons between two cumulative snapshots: (check, message).

    Fewer than minSamples comparisons (or counters that went backwards) is Inconclusive,
    never a pass."""
    limit = threshold(quality, metric)

    def check(
        result: models.CheckResult, samples: int, score: float | None, scores: dict[str, float]
    ) -> models.QualityCheck:
        return models.QualityCheck(
            source=models.QualitySource.LIVE,
            metric=metric,
            samples=samples,
            score=None if score is None else round(score, 6),
            threshold=limit,
            result=result,
            scores=scores,
        )

    if baseline is None or baseline.pods != current.pods:
        return (
            check(models.CheckResult.INCONCLUSIVE, 0, None, {}),
            "quality: canary pods changed; comparing from now",
        )
    scores: dict[str, float] = {}
    for name, count in current.quality_count.items():
        delta = count - baseline.quality_count.get(name, 0.0)
        if delta > 0:
            total = current.quality_sum.get(name, 0.0) - baseline.quality_sum.get(name, 0.0)
            scores[name] = round(total / delta, 6)
    count = current.quality_count.get(metric, 0.0) - baseline.quality_count.get(metric, 0.0)
    if count < 0:
        return (
            check(models.CheckResult.INCONCLUSIVE, 0, None, {}),
            "quality: comparison counters went backwards; comparing from now",
        )
    samples = int(count)
    score = scores.get(metric)
    if samples < quality.min_samples or score is None:
        return (
            check(models.CheckResult.INCONCLUSIVE, samples, score, scores),
            f"quality: {samples} live comparisons, fewer than minSamples {quality.min_samples}",
        )
    ok = passes(metric, score, limit)
    result = models.CheckResult.PASSED if ok else models.CheckResult.FAILED
    return (
        check(result, samples, score, scores),
        f"quality: {describe(metric, score, limit)} over {samples} live comparisons",
    )


def worst(*results: models.CheckResult) -> models.CheckResult:
    """Failed beats Inconclusive beats Passed: a step passes only when every part passes."""
    if models.CheckResult.FAILED in results:
        return models.CheckResult.FAILED
    if models.CheckResult.INCONCLUSIVE in results:
        return models.CheckResult.INCONCLUSIVE
    return models.CheckResult.PASSED
