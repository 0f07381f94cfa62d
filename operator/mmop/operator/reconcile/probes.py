"""Talk to runtime pods: the canary's test inference and its /metrics.

Every call is bounded in bytes and time and gated per model (``bounded.Limits``): the pods run
a tenant's image, and one tenant must not be able to exhaust the operator or starve another
model's checks.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from mmop.operator import models
from mmop.operator.reconcile import bounded
from mmop.operator.reconcile.observe import PodInfo
from mmop.operator.rollout import analysis
from mmop.operator.rollout.observations import SmokeResult
from mmop.runtime import contract


def _base(pod: PodInfo) -> str:
    return f"http://{pod.ip}:{contract.HTTP_PORT}"


def operator_headers(*, token: str | None, smoke_token: str | None) -> dict[str, str]:
    """Headers of any request the operator itself sends to a runtime pod: the bearer token
    (spec.runtime.authSecretRef) and the smoke-test mark (without a token: no mark)."""
    headers: dict[str, str] = {}
    if smoke_token:
        headers[contract.SMOKE_TEST_HEADER] = smoke_token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def smoke_test(
    http: httpx.AsyncClient,
    *,
    pod: PodInfo,
    model: str,
    task: models.Task,
    token: str | None = None,
    smoke_token: str | None = None,
    limits: bounded.Limits | None = None,
) -> SmokeResult:
    """A per-modality test inference through the whole pipeline of one canary pod, marked
    with the model's smoke-test token so the runtime counts it apart from user traffic."""
    headers = operator_headers(token=token, smoke_token=smoke_token)
    started = time.monotonic()
    try:
        response = await bounded.post(
            http,
            _base(pod) + contract.infer_path(model),
            json=contract.smoke_test_request(task.value),
            headers=headers,
            limits=limits,
        )
    except httpx.HTTPError as error:
        return SmokeResult(False, f"pod {pod.name}: {type(error).__name__}: {error}")
    ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return SmokeResult(
            False, f"pod {pod.name}: HTTP {response.status_code}: {response.text[:200]}"
        )
    try:
        payload = response.json()
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
    except ValueError:
        outputs = None
    if not outputs or not isinstance(outputs, list):
        return SmokeResult(False, f"pod {pod.name}: answer has no outputs")
    names = ",".join(str(o.get("name", "?")) if isinstance(o, dict) else "?" for o in outputs)
    names = names[:200]
    return SmokeResult(True, f"pod {pod.name} answered {names} in {ms:.0f} ms")


async def scrape(
    http: httpx.AsyncClient, pods: list[PodInfo], *, limits: bounded.Limits | None = None
) -> models.MetricsSnapshot | None:
    """Summed inference counters of the pods; None when any pod cannot be read (a partial
    sum would look like a counter reset)."""
    if not pods:
        return None

    async def one(pod: PodInfo) -> models.MetricsSnapshot:
        response = await bounded.get(http, _base(pod) + contract.METRICS_PATH, limits=limits)
        response.raise_for_status()
        return analysis.parse_runtime_metrics(response.text, pod=pod.name)

    try:
        snapshots = await asyncio.gather(*(one(p) for p in pods))
    except (httpx.HTTPError, ValueError):
        return None
    return analysis.merge(list(snapshots))


async def prometheus_snapshot(
    http: httpx.AsyncClient,
    *,
    url: str,
    namespace: str,
    pods: list[PodInfo],
    limits: bounded.Limits | None = None,
) -> models.MetricsSnapshot | None:
    """The same cumulative counters, from Prometheus instead of the pods.

    Relies on the usual pod scrape config, which labels series with ``namespace`` and ``pod``.
    None when Prometheus cannot answer (the check is then inconclusive, never a pass).
    """
    if not pods:
        return None
    names = "|".join(sorted(p.name for p in pods))
    match = (
        f'namespace="{namespace}",pod=~"{names}",'
        f'{contract.LABEL_ENDPOINT}=~"{"|".join(contract.INFER_ENDPOINTS)}"'
    )
    requests_total = f"{contract.METRIC_REQUESTS}_total"
    queries = {
        "requests": f"sum({requests_total}{{{match}}})",
        # 5xx and 4xx except 429 and 499, like analysis.is_error_code
        "errors": (
            f"sum({requests_total}{{{match},"
            f'{contract.LABEL_CODE}=~"5..|4..",'
            f'{contract.LABEL_CODE}!~"{analysis.NOT_ERRORS_REGEX}"}})'
        ),
        "buckets": f"sum by (le) ({contract.METRIC_REQUEST_DURATION}_bucket{{{match}}})",
        "pods": f"count by (pod) ({requests_total}{{{match}}})",
        **quality_queries(namespace=namespace, names=names),
    }
    results: dict[str, list[dict[str, object]]] = {}
    try:
        for key, query in queries.items():
            response = await bounded.get(
                http, f"{url.rstrip('/')}/api/v1/query", params={"query": query}, limits=limits
            )
            response.raise_for_status()
            payload = response.json()
            if not isinstance(payload, dict) or payload.get("status") != "success":
                return None
            results[key] = payload["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None

    def scalar(key: str) -> float:
        rows = results[key]
        return float(rows[0]["value"][1]) if rows else 0.0  # type: ignore[index]

    buckets = {
        str(r["metric"]["le"]): float(r["value"][1])  # type: ignore[index]
        for r in results["buckets"]
    }
    seen = sorted(str(r["metric"]["pod"]) for r in results["pods"])  # type: ignore[index]
    return models.MetricsSnapshot(
        requests=scalar("requests"),
        errors=scalar("errors"),
        buckets=buckets,
        pods=seen,
        quality_sum=by_metric(results["quality_sum"]),
        quality_count=by_metric(results["quality_count"]),
    )


def quality_queries(*, namespace: str, names: str) -> dict[str, str]:
    """PromQL for the live comparison scores of the canary pods, by scoring metric."""
    match = f'namespace="{namespace}",pod=~"{names}"'
    score = contract.METRIC_QUALITY_SCORE
    return {
        "quality_sum": f"sum by (metric) ({score}_sum{{{match}}})",
        "quality_count": f"sum by (metric) ({score}_count{{{match}}})",
    }


def by_metric(rows: list[dict[str, object]]) -> dict[str, float]:
    return {
        str(r["metric"]["metric"]): float(r["value"][1])  # type: ignore[index]
        for r in rows
        if "metric" in r["metric"]  # type: ignore[operator]
    }
