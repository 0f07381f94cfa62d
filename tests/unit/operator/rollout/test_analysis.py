"""rollout/analysis.py: runtime metrics -> snapshot -> verdict."""

from __future__ import annotations

import pytest

from mmop.operator import models
from mmop.operator.rollout import analysis

METRICS = """\
# HELP mmop_requests_total Requests
# TYPE mmop_requests_total counter
mmop_requests_total{model="clip",endpoint="infer",code="200"} 90.0
mmop_requests_total{model="clip",endpoint="infer",code="500"} 6.0
mmop_requests_total{model="clip",endpoint="infer",code="400"} 4.0
mmop_requests_total{model="clip",endpoint="embeddings",code="200"} 10.0
mmop_requests_total{model="clip",endpoint="smoke",code="500"} 3.0
mmop_requests_total{model="clip",endpoint="health",code="200"} 1000.0
# HELP mmop_request_duration_seconds Latency
# TYPE mmop_request_duration_seconds histogram
mmop_request_duration_seconds_bucket{model="clip",endpoint="infer",le="0.05"} 80.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="infer",le="0.1"} 99.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="infer",le="+Inf"} 100.0
mmop_request_duration_seconds_count{model="clip",endpoint="infer"} 100.0
mmop_request_duration_seconds_sum{model="clip",endpoint="infer"} 3.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="health",le="+Inf"} 1000.0
"""

THRESHOLDS = models.Analysis(max_error_rate=0.05, max_latency_p99_ms=500, min_requests=10)


def test_parse_counts_only_user_inference() -> None:
    snap = analysis.parse_runtime_metrics(METRICS, pod="clip-v2-a")
    assert snap.requests == 110  # infer 100 + embeddings 10; smoke and health left out
    assert snap.errors == 10  # 6 x 5xx + 4 x 400
    assert snap.buckets == {"0.05": 80, "0.1": 99, "+Inf": 100}
    assert snap.pods == ["clip-v2-a"]


def test_merge_sums_pods() -> None:
    a = analysis.parse_runtime_metrics(METRICS, pod="a")
    b = analysis.parse_runtime_metrics(METRICS, pod="b")
    merged = analysis.merge([b, a])
    assert (merged.requests, merged.errors, merged.pods) == (220, 20, ["a", "b"])
    assert merged.buckets["+Inf"] == 200


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ({"0.1": 50, "0.2": 100, "+Inf": 100}, 0.5, 0.1),
        ({"0.1": 50, "0.2": 100, "+Inf": 100}, 0.99, 0.198),
        ({"0.1": 0, "0.2": 0, "+Inf": 0}, 0.99, None),
        ({"0.1": 10, "+Inf": 100}, 0.99, 0.1),  # beyond the last finite bucket
    ],
)
def test_quantile(buckets: dict[str, float], q: float, expected: float | None) -> None:
    result = analysis.quantile(buckets, q)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def _snap(
    requests: float, errors: float = 0, fast: float | None = None, pods: tuple[str, ...] = ("p",)
) -> models.MetricsSnapshot:
    fast = requests if fast is None else fast
    return models.MetricsSnapshot(
        requests=requests,
        errors=errors,
        pods=list(pods),
        buckets={"0.1": fast, "2.0": requests, "+Inf": requests},
    )


def test_pass() -> None:
    v = analysis.analyse(baseline=_snap(100), current=_snap(200, 1), thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.PASSED
    assert (v.requests, v.error_rate) == (100, 0.01)
    assert v.latency_p99_ms is not None and v.latency_p99_ms <= 100


def test_fail_on_errors_counts_only_the_interval() -> None:
    # 50 errors happened before the baseline; only 1 in this interval.
    v = analysis.analyse(baseline=_snap(100, 50), current=_snap(200, 51), thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.PASSED
    v = analysis.analyse(baseline=_snap(100, 0), current=_snap(200, 10), thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.FAILED
    assert "error rate 10.00%" in v.message


def test_fail_on_latency() -> None:
    v = analysis.analyse(
        baseline=_snap(0, fast=0), current=_snap(100, fast=50), thresholds=THRESHOLDS
    )
    assert v.result == models.CheckResult.FAILED
    assert "p99 latency" in v.message


def test_inconclusive_below_min_requests() -> None:
    v = analysis.analyse(baseline=_snap(100), current=_snap(105), thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.INCONCLUSIVE
    assert not v.reset


def test_min_requests_has_a_minimum_of_one() -> None:
    with pytest.raises(ValueError, match="greater than or equal"):
        models.Analysis.model_validate({"minRequests": 0})
    # Even a threshold object built around validation never passes on zero requests.
    lax = THRESHOLDS.model_construct(**{**THRESHOLDS.__dict__, "min_requests": 0})
    v = analysis.analyse(baseline=_snap(5), current=_snap(5), thresholds=lax)
    assert v.result == models.CheckResult.INCONCLUSIVE


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("200", False),
        ("400", True),
        ("401", True),
        ("403", True),
        ("404", True),
        ("413", True),
        ("429", False),
        ("499", False),
        ("500", True),
        ("503", True),
        ("504", True),
    ],
)
def test_error_codes(code: str, error: bool) -> None:
    assert analysis.is_error_code(code) is error
    text = f'mmop_requests_total{{model="m",endpoint="infer",code="{code}"}} 7.0\n'
    assert analysis.parse_runtime_metrics(text, pod="p").errors == (7 if error else 0)


def test_canary_answering_4xx_fails() -> None:
    unauthorized = 'mmop_requests_total{model="m",endpoint="infer",code="401"} 50.0\n'
    current = analysis.parse_runtime_metrics(unauthorized, pod="p")
    v = analysis.analyse(
        baseline=models.MetricsSnapshot(pods=["p"]), current=current, thresholds=THRESHOLDS
    )
    assert v.result == models.CheckResult.FAILED
    assert v.error_rate == 1.0


def test_canary_is_judged_against_stable_in_the_same_window() -> None:
    # 8 % errors (bad client input, say): fine when stable answers 6 % of the same traffic
    # with errors, a failure when stable answers everything.
    base, cur = _snap(100), _snap(200, 8)
    v = analysis.analyse(baseline=base, current=cur, thresholds=THRESHOLDS, stable_error_rate=0.06)
    assert v.result == models.CheckResult.PASSED
    assert v.stable_error_rate == 0.06 and "stable 6.00%" in v.message
    v = analysis.analyse(baseline=base, current=cur, thresholds=THRESHOLDS, stable_error_rate=0.0)
    assert v.result == models.CheckResult.FAILED
    # worse than stable by more than maxErrorRate (5 %): fails
    v = analysis.analyse(
        baseline=base, current=_snap(200, 12), thresholds=THRESHOLDS, stable_error_rate=0.06
    )
    assert v.result == models.CheckResult.FAILED
    assert "stable 6.00% + maxErrorRate 5.00%" in v.message
    # no reference: the absolute threshold, never looser
    v = analysis.analyse(baseline=base, current=cur, thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.FAILED


def test_stable_window() -> None:
    w = analysis.stable_window(baseline=_snap(100, 1), current=_snap(300, 11), min_requests=10)
    assert w == analysis.StableWindow(200, 0.05)
    # too little stable traffic, a restarted stable pod, changed pods: no reference
    for current in (_snap(105, 1), _snap(50), _snap(300, pods=("q",))):
        w = analysis.stable_window(baseline=_snap(100, 1), current=current, min_requests=10)
        assert w is not None and w.error_rate is None
    assert analysis.stable_window(baseline=None, current=None, min_requests=10) is None


@pytest.mark.parametrize(
    "current",
    [
        _snap(50),
        _snap(200, pods=("q",)),
    ],
)
def test_counter_reset_or_new_pods_restart_the_baseline(current: models.MetricsSnapshot) -> None:
    v = analysis.analyse(baseline=_snap(100), current=current, thresholds=THRESHOLDS)
    assert v.result == models.CheckResult.INCONCLUSIVE
    assert v.reset


def test_no_baseline_is_inconclusive() -> None:
    v = analysis.analyse(baseline=None, current=_snap(100), thresholds=THRESHOLDS)
    assert (v.result, v.reset) == (models.CheckResult.INCONCLUSIVE, True)


def test_grpc_inference_is_user_traffic() -> None:
    """gRPC ModelInfer calls (endpoint grpc_infer, code = the HTTP twin) count like HTTP ones."""
    text = """\
# TYPE mmop_requests_total counter
mmop_requests_total{model="clip",endpoint="grpc_infer",code="200"} 40.0
mmop_requests_total{model="clip",endpoint="grpc_infer",code="503"} 2.0
mmop_requests_total{model="clip",endpoint="infer",code="200"} 8.0
# TYPE mmop_request_duration_seconds histogram
mmop_request_duration_seconds_bucket{model="clip",endpoint="grpc_infer",le="0.1"} 42.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="grpc_infer",le="+Inf"} 42.0
mmop_request_duration_seconds_count{model="clip",endpoint="grpc_infer"} 42.0
mmop_request_duration_seconds_sum{model="clip",endpoint="grpc_infer"} 1.0
"""
    snap = analysis.parse_runtime_metrics(text, pod="clip-v2-a")
    assert snap.requests == 50
    assert snap.errors == 2
    assert snap.buckets == {"0.1": 42, "+Inf": 42}
