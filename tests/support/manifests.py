"""MultimodalModel manifests for tests and benchmarks: the project's examples (``example``)
and one factory for a small CPU-only model with a fast rollout (``model_manifest``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final

import yaml

from mmop.runtime import contract

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLES_DIR: Final = ROOT / "examples"
EXAMPLES: Final = sorted(EXAMPLES_DIR.glob("*.yaml"))
TASK: Final = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION

CPU_POD: Final[dict[str, Any]] = {"gpu": 0, "cpu": "500m", "memory": "2Gi"}
FAST_BATCHING: Final[dict[str, Any]] = {"maxBatchSize": 8, "maxDelayMs": 2}
FAST_ROLLOUT: Final[dict[str, Any]] = {
    "steps": [50, 100],
    "stepInterval": "4s",
    "maxFailedChecks": 2,
    "progressDeadlineSeconds": 90,
    "scaleDownDelaySeconds": 3,
    "analysis": {"minRequests": 5, "maxErrorRate": 0.05, "maxLatencyP99Ms": 10000},
}


def load_example(name: str) -> dict[str, Any]:
    """``examples/NAME`` as written."""
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / name).read_text())
    return doc


def example(name: str, *, namespace: str, **spec_updates: Any) -> dict[str, Any]:
    """``examples/NAME`` in ``namespace``, with ``spec_updates`` over its spec."""
    doc = copy.deepcopy(load_example(name))
    doc["metadata"]["namespace"] = namespace
    doc["spec"].update(spec_updates)
    return doc


def model_manifest(
    name: str,
    *,
    source: str | Path,
    version: str = "v1",
    namespace: str = "default",
    task: str = TASK,
    router: str = "Istio",
    replicas: int | None = 1,
    resources: dict[str, Any] = CPU_POD,
    batching: dict[str, Any] | None = FAST_BATCHING,
    autoscaling: dict[str, Any] | None = None,
    rollout: dict[str, Any] = FAST_ROLLOUT,
    **rollout_updates: Any,
) -> dict[str, Any]:
    """A CPU-only MultimodalModel of ``task`` served from ``source`` (a local folder, or a URL),
    rolled out by ``rollout`` with ``rollout_updates`` over it (fast by default, for tests).
    ``replicas`` or ``batching`` None leave the field out."""
    spec: dict[str, Any] = {
        "version": version,
        "model": {
            "source": source if isinstance(source, str) else f"file://{source}",
            "task": task,
        },
    }
    if batching is not None:
        spec["runtime"] = {"batching": dict(batching)}
    spec["resources"] = dict(resources)
    if replicas is not None:
        spec["replicas"] = replicas
    if autoscaling is not None:
        spec["autoscaling"] = copy.deepcopy(autoscaling)
    spec["traffic"] = {"router": router}
    spec["rollout"] = copy.deepcopy(rollout) | rollout_updates
    return {
        "apiVersion": "mmop.io/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
