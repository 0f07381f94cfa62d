"""Canary analysis: runtime /metrics text -> cumulative snapshot -> interval verdict. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from mmop.operator import models
from mmop.operator.rollout import quality
from mmop.runtime import contract

_REQUESTS_TOTAL = f"{contract.METRIC_REQUESTS}_total"
_DURATION_BUCKET = f"{contract.METRIC_REQUEST_DURATION}_bucket"


def parse_runtime_metrics(text: str, *, pod: str) -> models.MetricsSnapshot:
    """Inference requests, 5xx answers and the latency histogram of one runtime pod.

    Only user inference traffic counts (endpoint infer/embeddings): health probes and the
    operator's own smoke tests (endpoint="smoke") are left out.
    """
    requests = errors = 0.0
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            endpoint = sample.labels.get(contract.LABEL_ENDPOINT)
            if endpoint not in contract.INFER_ENDPOINTS:
                continue
            if sample.name == _REQUESTS_TOTAL:
                requests += sample.value
                if sample.labels.get(contract.LABEL_CODE, "").startswith("5"):
                    errors += sample.value
            elif sample.name == _DURATION_BUCKET:
                le = sample.labels["le"]
                buckets[le] = buckets.get(le, 0.0) + sample.value
    quality_sum, quality_count = quality.parse_quality_scores(text)
    return models.MetricsSnapshot(
        requests=requests,
        errors=errors,
        buckets=buckets,
        pods=[pod],
        quality_sum=quality_sum,
        quality_count=quality_count,
    )


def merge(snapshots: list[models.MetricsSnapshot]) -> models.MetricsSnapshot:
    """The sum over pods."""
    buckets: dict[str, float] = {}
    for snap in snapshots:
        for le, count in snap.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + count
    return models.MetricsSnapshot(
        requests=sum(s.requests for s in snapshots),
        errors=sum(s.errors for s in snapshots),
        buckets=buckets,
        pods=sorted(p for s in snapshots for p in s.pods),
        quality_sum=_sum_by_metric([s.quality_sum for s in snapshots]),
        quality_count=_sum_by_metric([s.quality_count for s in snapshots]),
    )


def _sum_by_metric(parts: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for part in parts:
        total = quality.add(total, part)
    return total


def _le(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def quantile(buckets: dict[str, float], q: float) -> float | None:
    """The q-quantile (seconds) of a cumulative histogram, interpolated within the bucket like
    Prometheus' histogram_quantile; None without observations."""
    points = sorted((_le(le), count) for le, count in buckets.items())
    if not points or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Verdict:
    result: models.CheckResult
    requests: int
    error_rate: float | None
    latency_p99_ms: float | None
    message: str
    reset: bool
    """True when counters went backwards (a pod restarted): start a fresh baseline."""


def analyse(
    *,
    baseline: models.MetricsSnapshot | None,
    current: models.MetricsSnapshot,
    thresholds: models.Analysis,
) -> Verdict:
    """Judge the interval between two cumulative snapshots of the canary."""
    if baseline is None or baseline.pods != current.pods or current.requests < baseline.requests:
        return Verdict(
            models.CheckResult.INCONCLUSIVE,
            0,
            None,
            None,
            "canary pods changed; measuring from now",
            reset=True,
        )
    requests = current.requests - baseline.requests
    errors = current.errors - baseline.errors
    delta = {le: count - baseline.buckets.get(le, 0.0) for le, count in current.buckets.items()}
    p99 = quantile(delta, 0.99)
    p99_ms = None if p99 is None else round(p99 * 1000, 1)
    count = int(requests)
    if requests < max(thresholds.min_requests, 1) and thresholds.min_requests > 0:
        return Verdict(
            models.CheckResult.INCONCLUSIVE,
            count,
            None,
            p99_ms,
            f"{count} canary requests, fewer than minRequests {thresholds.min_requests}",
            reset=False,
        )
    error_rate = errors / requests if requests > 0 else 0.0
    problems = []
    if error_rate > thresholds.max_error_rate:
        problems.append(f"error rate {error_rate:.2%} above {thresholds.max_error_rate:.2%}")
    if p99_ms is not None and p99_ms > thresholds.max_latency_p99_ms:
        problems.append(f"p99 latency {p99_ms:.0f} ms above {thresholds.max_latency_p99_ms} ms")
    if problems:
        return Verdict(
            models.CheckResult.FAILED,
            count,
            round(error_rate, 4),
            p99_ms,
            "; ".join(problems),
            reset=False,
        )
    latency = "n/a" if p99_ms is None else f"{p99_ms:.0f} ms"
    return Verdict(
        models.CheckResult.PASSED,
        count,
        round(error_rate, 4),
        p99_ms,
        f"{count} requests, error rate {error_rate:.2%}, p99 {latency}",
        reset=False,
    )
