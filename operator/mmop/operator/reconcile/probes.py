"""Talk to runtime pods: the canary's test inference and its /metrics."""

from __future__ import annotations

import asyncio
import time

import httpx

from mmop.operator import models
from mmop.operator.reconcile.observe import PodInfo
from mmop.operator.rollout import analysis
from mmop.operator.rollout.machine import SmokeResult
from mmop.runtime import contract


def _base(pod: PodInfo) -> str:
    return f"http://{pod.ip}:{contract.HTTP_PORT}"


async def smoke_test(
    http: httpx.AsyncClient,
    *,
    pod: PodInfo,
    model: str,
    task: models.Task,
    token: str | None = None,
) -> SmokeResult:
    """A per-modality test inference through the whole pipeline of one canary pod."""
    headers = {contract.SMOKE_TEST_HEADER: "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    try:
        response = await http.post(
            _base(pod) + contract.infer_path(model),
            json=contract.smoke_test_request(task.value),
            headers=headers,
        )
    except httpx.HTTPError as error:
        return SmokeResult(False, f"pod {pod.name}: {type(error).__name__}: {error}")
    ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return SmokeResult(
            False, f"pod {pod.name}: HTTP {response.status_code}: {response.text[:200]}"
        )
    try:
        outputs = response.json().get("outputs")
    except ValueError:
        outputs = None
    if not outputs:
        return SmokeResult(False, f"pod {pod.name}: answer has no outputs")
    names = ",".join(o.get("name", "?") for o in outputs)
    return SmokeResult(True, f"pod {pod.name} answered {names} in {ms:.0f} ms")


async def scrape(http: httpx.AsyncClient, pods: list[PodInfo]) -> models.MetricsSnapshot | None:
    """Summed inference counters of the pods; None when any pod cannot be read (a partial
    sum would look like a counter reset)."""
    if not pods:
        return None

    async def one(pod: PodInfo) -> models.MetricsSnapshot:
        response = await http.get(_base(pod) + contract.METRICS_PATH)
        response.raise_for_status()
        return analysis.parse_runtime_metrics(response.text, pod=pod.name)

    try:
        snapshots = await asyncio.gather(*(one(p) for p in pods))
    except (httpx.HTTPError, ValueError):
        return None
    return analysis.merge(list(snapshots))
