"""Rollout decision latency on ``DevCluster`` with real tiny ``mmop-runtime`` pods.

A model goes Ready at v1, traffic flows through the local router, then v2 is applied. The
benchmark polls the model's status (10 Hz) and records when the canary weight changes, and
compares the intervals between weight changes with the configured ``stepInterval``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from mmop.devcluster.cluster import DevCluster
from mmop.operator import kube
from mmop.runtime import contract
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic

TASK: Final = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
NAME: Final = "clip-rollout"


def manifest(source: Path, *, version: str, step_interval: float) -> dict[str, Any]:
    return model_manifest(
        NAME,
        source=source,
        version=version,
        task=TASK,
        steps=[10, 25, 50, 100],
        stepInterval=f"{step_interval:g}s",
        maxFailedChecks=3,
        progressDeadlineSeconds=180,
        scaleDownDelaySeconds=5,
    )


def _status(cluster: DevCluster, client: kube.KubeClient) -> dict[str, Any]:
    body = cluster.run(client.get(kube.MULTIMODAL_MODEL, name=NAME, namespace="default"))
    status: dict[str, Any] = body.get("status") or {}
    return status


def measure_rollout(
    *,
    state_dir: Path,
    model_dir: Path,
    step_interval: float,
    operator_env: dict[str, str],
    log: Callable[[str], None],
    timeout: float = 600.0,
) -> dict[str, Any]:
    with DevCluster(state_dir, gpus=0, router_seed=3) as cluster:
        cluster.start_operator(env=operator_env)
        client = kube.KubeClient(cluster.api_connection, user_agent="bench")
        try:
            started = time.monotonic()
            cluster.apply([manifest(model_dir, version="v1", step_interval=step_interval)])
            while _status(cluster, client).get("phase") != "Ready":
                if time.monotonic() - started > timeout:
                    raise TimeoutError("v1 did not turn Ready")
                time.sleep(0.2)
            first_ready = time.monotonic() - started
            log(f"  v1 Ready after {first_ready:.1f} s (pod start + model load)")
            traffic = Traffic(
                cluster.router_url, NAME, body=contract.smoke_test_request(TASK)
            ).start()
            time.sleep(3.0)
            applied = time.monotonic()
            cluster.apply([manifest(model_dir, version="v2", step_interval=step_interval)])
            timeline: list[dict[str, Any]] = []
            last: tuple[Any, ...] | None = None
            while True:
                status = _status(cluster, client)
                now = time.monotonic() - applied
                check = (status.get("rollout") or {}).get("lastCheck") or {}
                key = (
                    status.get("canaryWeight"),
                    status.get("phase"),
                    status.get("stableVersion"),
                    status.get("canaryVersion"),
                    check.get("time"),
                )
                if key != last:
                    timeline.append(
                        {
                            "t": now,
                            "weight": key[0],
                            "phase": key[1],
                            "stable": key[2],
                            "canary": key[3],
                            "verified": bool((status.get("rollout") or {}).get("verifiedAt")),
                            "check": check.get("result"),
                            "check_requests": check.get("requests"),
                            "check_message": check.get("message"),
                        }
                    )
                    last = key
                if status.get("stableVersion") == "v2" and not status.get("canaryVersion"):
                    break
                if now > timeout:
                    raise TimeoutError(f"no promotion within {timeout} s: {timeline[-3:]}")
                time.sleep(0.1)
            traffic.stop()
        finally:
            cluster.run(client.close())
    return summarise(
        timeline,
        step_interval=step_interval,
        first_ready_s=first_ready,
        traffic=(traffic.responses, traffic.failures),
        operator_env=operator_env,
    )


def summarise(
    timeline: list[dict[str, Any]],
    *,
    step_interval: float,
    first_ready_s: float,
    traffic: tuple[int, int],
    operator_env: dict[str, str],
) -> dict[str, Any]:
    changes: list[tuple[float, int]] = []
    previous = 0
    for entry in timeline:
        weight = entry["weight"] or 0
        if entry["canary"] and weight != previous:
            changes.append((entry["t"], weight))
            previous = weight
    promoted = next(e["t"] for e in timeline if e["stable"] == "v2")
    steps = [*changes, (promoted, -1)]  # -1: the promotion after the last analysed step
    intervals = [
        {"from": a[1], "to": b[1] if b[1] >= 0 else "promoted", "seconds": b[0] - a[0]}
        for a, b in itertools.pairwise(steps)
    ]
    for interval, (start, end) in zip(intervals, itertools.pairwise(steps), strict=True):
        interval["inconclusive_checks"] = sum(
            1 for e in timeline if start[0] < e["t"] <= end[0] and e.get("check") == "Inconclusive"
        )
    seconds = [i["seconds"] for i in intervals]
    return {
        "step_interval_s": step_interval,
        "rollout_tick_s": float(operator_env.get("MMOP_OPERATOR_ROLLOUT_TICK_SECONDS", 5.0)),
        "v1_ready_s": first_ready_s,
        "to_first_weight_s": changes[0][0] if changes else None,
        "intervals": intervals,
        "mean_interval_s": sum(seconds) / len(seconds) if seconds else None,
        "max_overshoot_s": max(s - step_interval for s in seconds) if seconds else None,
        "min_overshoot_s": min(s - step_interval for s in seconds) if seconds else None,
        "to_promoted_s": promoted,
        "requests": traffic[0],
        "failed_requests": traffic[1],
        "timeline": timeline,
    }
