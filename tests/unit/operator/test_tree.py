"""tree.py: the `mmop get` view, a pure function of the objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mmop.operator.tree import render_tree

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def _model() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "clip",
            "namespace": "ml",
            "creationTimestamp": "2026-11-21T11:00:00Z",
        },
        "spec": {"rollout": {"steps": [10, 25, 50, 100], "paused": False}},
        "status": {
            "phase": "Progressing",
            "message": "canary v2 at weight 25%",
            "stableVersion": "v1",
            "canaryVersion": "v2",
            "canaryWeight": 25,
            "replicas": 3,
            "readyReplicas": 3,
            "rollout": {
                "step": 1,
                "failedChecks": 0,
                "lastCheck": {
                    "time": "2026-11-21T11:59:30Z",
                    "result": "Passed",
                    "requests": 40,
                    "errorRate": 0.0,
                    "latencyP99Ms": 12.0,
                    "message": "ok",
                },
            },
            "versions": [
                {
                    "name": "v1",
                    "revision": "aaa",
                    "role": "Stable",
                    "weight": 75,
                    "replicas": 2,
                    "readyReplicas": 2,
                },
                {
                    "name": "v2",
                    "revision": "bbb",
                    "role": "Canary",
                    "weight": 25,
                    "replicas": 1,
                    "readyReplicas": 1,
                },
            ],
            "history": [
                {
                    "version": "v0",
                    "revision": "zzz",
                    "result": "Promoted",
                    "reason": "all steps passed",
                    "finishedAt": "2026-11-20T12:00:00Z",
                },
            ],
            "lastCommand": {
                "command": "promote",
                "id": "n1",
                "result": "Refused",
                "message": "not verified",
                "time": "2026-11-21T11:58:00Z",
            },
        },
    }


def _pod(name: str, version: str, *, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"mmop.io/version": version}},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_tree_shows_versions_weights_checks_and_history() -> None:
    deployments = [
        {
            "metadata": {"name": "clip-v1"},
            "spec": {"replicas": 2},
            "status": {"availableReplicas": 2, "readyReplicas": 2, "replicas": 2},
        },
    ]
    pods = [_pod("clip-v1-a", "v1", ready=True), _pod("clip-v2-a", "v2", ready=False)]
    text = render_tree(_model(), deployments=deployments, pods=pods, now=NOW)
    lines = text.splitlines()
    assert "Weights:" in text and "stable v1 75%, canary v2 25%" in text
    assert any(line.startswith("  Step:") and "2/4" in line for line in lines)
    assert "Passed 30s ago, requests 40, errors 0.00%, p99 12 ms: ok" in text
    assert "promote Refused 2m ago: not verified" in text
    v1 = next(i for i, line in enumerate(lines) if "# v1 (stable)" in line)
    assert "weight 75%" in lines[v1] and lines[v1].startswith("├──")
    assert "⧉ clip-v1" in lines[v1 + 1] and "✔ Healthy" in lines[v1 + 1]
    assert "□ clip-v1-a" in lines[v1 + 2] and "ready" in lines[v1 + 2]
    v2 = next(i for i, line in enumerate(lines) if "# v2 (canary)" in line)
    assert lines[v2].startswith("└──") and "weight 25%" in lines[v2]
    assert "History (newest first):" in text and "all steps passed" in text


def test_paused_rollout_says_so() -> None:
    body = _model()
    body["spec"]["rollout"]["paused"] = True
    text = render_tree(body, now=NOW)
    assert "Status:" in text and "॥ Paused" in text


def test_a_gpu_canary_shows_its_capacity_plan() -> None:
    model = _model()
    assert "GPUs:" not in render_tree(model, deployments=[], pods=[], now=NOW)
    message = "Swap: canary 1/1 pod(s) of 1 nvidia.com/gpu, 0 free, 1 replica(s) lent by the stable"
    model["status"]["rollout"]["capacity"] = {"mode": "Swap", "lentReplicas": 1, "message": message}
    text = render_tree(model, deployments=[], pods=[], now=NOW)
    assert "GPUs:" in text and message in text
