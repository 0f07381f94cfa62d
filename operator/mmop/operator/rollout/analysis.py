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
# 4xx codes that do not count against a version (is_error_code; the Prometheus query too).
_NOT_ERRORS = ("429", "499")
NOT_ERRORS_REGEX = "|".join(_NOT_ERRORS)


def is_error_code(code: str) -> bool:
    """An answer that counts against a version: 5xx, and 4xx except 429 and 499.

    A 4xx is the server refusing a request (a changed auth Secret, a too-small input limit)
    as much as a 5xx is; 429 is the queue shedding load, which the capacity settings own; 499
    is a gRPC call the client cancelled (a slow version shows in the p99 and, at the client's
    deadline, as 504).
    """
    return code.startswith("5") or (code.startswith("4") and code not in _NOT_ERRORS)


def parse_runtime_metrics(text: str, *, pod: str) -> models.MetricsSnapshot:
    """Inference requests, error answers and the latency histogram of one runtime pod.

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
                if is_error_code(sample.labels.get(contract.LABEL_CODE, "")):
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
    stable_error_rate: float | None = None
    """The reference the canary was judged against (None: compared with 0)."""


@dataclass(frozen=True)
class StableWindow:
    """The stable version's traffic in the same interval as the canary's."""

    requests: int
    error_rate: float | None
    """None when the interval cannot serve as a reference (too few requests, pods changed)."""


def stable_window(
    *,
    baseline: models.MetricsSnapshot | None,
    current: models.MetricsSnapshot | None,
    min_requests: int,
) -> StableWindow | None:
    """The stable's error rate between two snapshots taken with the canary's; None without data.

    Counters going backwards or a changed pod set make the interval unusable as a reference
    (error_rate None), like for the canary; so do fewer than ``min_requests`` requests.
    """
    if current is None:
        return None
    if baseline is None or baseline.pods != current.pods or current.requests < baseline.requests:
        return StableWindow(0, None)
    requests = current.requests - baseline.requests
    errors = max(current.errors - baseline.errors, 0.0)
    if requests < max(min_requests, 1):
        return StableWindow(int(requests), None)
    return StableWindow(int(requests), round(errors / requests, 4))


def analyse(
    *,
    baseline: models.MetricsSnapshot | None,
    current: models.MetricsSnapshot,
    thresholds: models.Analysis,
    stable_error_rate: float | None = None,
) -> Verdict:
    """Judge the interval between two cumulative snapshots of the canary.

    The error rate is compared with the stable's in the same interval: the canary fails when
    it is higher by more than ``maxErrorRate``. Without a stable reference (``None``) the
    reference is 0, which is the strictest: missing data never makes a check easier to pass.
    """
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
    if requests < max(thresholds.min_requests, 1):
        return Verdict(
            models.CheckResult.INCONCLUSIVE,
            count,
            None,
            p99_ms,
            f"{count} canary requests, fewer than minRequests {thresholds.min_requests}",
            reset=False,
        )
    error_rate = errors / requests
    reference = stable_error_rate or 0.0
    against = "" if stable_error_rate is None else f" (stable {reference:.2%})"
    problems = []
    if error_rate > reference + thresholds.max_error_rate:
        problems.append(
            f"error rate {error_rate:.2%} above {reference + thresholds.max_error_rate:.2%}"
            + (
                f" (stable {reference:.2%} + maxErrorRate {thresholds.max_error_rate:.2%})"
                if stable_error_rate is not None
                else ""
            )
        )
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
            stable_error_rate=stable_error_rate,
        )
    latency = "n/a" if p99_ms is None else f"{p99_ms:.0f} ms"
    return Verdict(
        models.CheckResult.PASSED,
        count,
        round(error_rate, 4),
        p99_ms,
        f"{count} requests, error rate {error_rate:.2%}{against}, p99 {latency}",
        reset=False,
        stable_error_rate=stable_error_rate,
    )
