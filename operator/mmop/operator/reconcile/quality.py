"""The quality gate's I/O: read the golden set and compare a canary pod's answers with a
stable pod's, sample by sample. The verdict itself is pure (``rollout/quality.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from mmop.operator import kube, models
from mmop.operator.reconcile import bounded
from mmop.operator.reconcile.observe import PodInfo
from mmop.operator.reconcile.probes import operator_headers
from mmop.operator.rollout.quality import GoldenResult, metric_for
from mmop.runtime import contract, golden, scoring

CONCURRENCY = 2  # golden samples in flight at once: each goes to both pods, so 4 calls, the
# per-model probe gate (bounded.DEFAULT_CONNECTIONS), whose wait counts in the call timeout


async def load_golden_set(
    client: kube.KubeClient, *, namespace: str, gate: models.Quality, task: models.Task
) -> tuple[dict[str, dict[str, Any]], str]:
    """(sample name -> OIP infer request body, where they came from); raises
    golden.GoldenSetError with a message for status when the user's ConfigMap is unusable."""
    if gate.golden_set is None:
        return golden.golden_set(task.value), "built-in golden set"
    source = f"golden set ConfigMap {gate.golden_set}"
    try:
        body = await client.get_or_none(kube.CONFIGMAP, name=gate.golden_set, namespace=namespace)
    except kube.ApiError as error:
        raise golden.GoldenSetError(f"cannot read {source}: {error}") from None
    if body is None:
        raise golden.GoldenSetError(f"{source} not found in namespace {namespace}")
    data = body.get("data") or {}
    try:
        return golden.parse_golden_set(data), source
    except golden.GoldenSetError as error:
        raise golden.GoldenSetError(f"{source}: {error}") from None


class _Unanswered(Exception):
    """A sample that one side did not answer usefully: the comparison is incomplete."""


async def _ask(
    http: httpx.AsyncClient,
    *,
    pod: PodInfo,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    limits: bounded.Limits | None,
) -> dict[str, Any]:
    try:
        response = await bounded.post(
            http,
            f"http://{pod.ip}:{contract.HTTP_PORT}{path}",
            json=body,
            headers=headers,
            limits=limits,
        )
    except httpx.HTTPError as error:
        raise _Unanswered(f"pod {pod.name}: {type(error).__name__}: {error}") from None
    if response.status_code != 200:
        raise _Unanswered(f"pod {pod.name}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        answer = response.json()
    except ValueError:
        raise _Unanswered(f"pod {pod.name}: answer is not JSON") from None
    if not isinstance(answer, dict):
        raise _Unanswered(f"pod {pod.name}: answer is not a JSON object")
    return answer


async def compare_golden_set(
    http: httpx.AsyncClient,
    *,
    samples: dict[str, dict[str, Any]],
    source: str,
    stable: PodInfo,
    canary: PodInfo,
    model: str,
    task: models.Task,
    stable_token: str | None = None,
    canary_token: str | None = None,
    smoke_token: str | None = None,
    limits: bounded.Limits | None = None,
) -> GoldenResult:
    """Send every sample to both pods and score the pairs: the mean of all item scores.
    Any unanswered or incomparable sample makes the result incomplete (a problem, no score)."""
    metric = metric_for(task)
    path = contract.infer_path(model)
    limit = asyncio.Semaphore(CONCURRENCY)
    # Marked like the smoke test (the genuine per-model token), so no analysis counts them.
    stable_headers = operator_headers(token=stable_token, smoke_token=smoke_token)
    canary_headers = operator_headers(token=canary_token, smoke_token=smoke_token)

    async def one(key: str, body: dict[str, Any]) -> list[float]:
        async with limit:
            try:
                stable_answer, canary_answer = await asyncio.gather(
                    _ask(
                        http,
                        pod=stable,
                        path=path,
                        body=body,
                        headers=stable_headers,
                        limits=limits,
                    ),
                    _ask(
                        http,
                        pod=canary,
                        path=path,
                        body=body,
                        headers=canary_headers,
                        limits=limits,
                    ),
                )
            except _Unanswered as error:
                raise _Unanswered(f"sample {key!r}: {error}") from None
        try:
            return scoring.score_pair(task.value, stable_answer, canary_answer)
        except ValueError as error:
            raise _Unanswered(f"sample {key!r}: answers cannot be compared: {error}") from None

    try:
        per_sample = await asyncio.gather(*(one(k, b) for k, b in samples.items()))
    except _Unanswered as error:
        return GoldenResult(metric, 0, None, problem=str(error), source=source)
    scores = [score for item_scores in per_sample for score in item_scores]
    if not scores:
        return GoldenResult(metric, 0, None, problem="no item was compared", source=source)
    return GoldenResult(metric, len(scores), sum(scores) / len(scores), source=source)


async def golden_check(
    client: kube.KubeClient,
    http: httpx.AsyncClient,
    *,
    mm: models.MultimodalModel,
    stable: PodInfo | None,
    canary: PodInfo,
    stable_token: str | None,
    canary_token: str | None,
    smoke_token: str | None = None,
    limits: bounded.Limits | None = None,
) -> GoldenResult:
    """The whole golden-set comparison for the state machine; never raises for bad input."""
    gate = mm.spec.rollout.quality
    assert gate is not None
    task = mm.spec.model.task
    metric = metric_for(task)
    try:
        samples, source = await load_golden_set(
            client, namespace=mm.metadata.namespace, gate=gate, task=task
        )
    except golden.GoldenSetError as error:
        return GoldenResult(metric, 0, None, problem=str(error))
    if stable is None:
        return GoldenResult(
            metric, 0, None, problem="the stable version has no ready pod to compare with"
        )
    return await compare_golden_set(
        http,
        samples=samples,
        source=source,
        stable=stable,
        canary=canary,
        model=mm.metadata.name,
        task=task,
        stable_token=stable_token,
        canary_token=canary_token,
        smoke_token=smoke_token,
        limits=limits,
    )
