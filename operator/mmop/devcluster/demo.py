"""``mmop dev --demo``: a tiny random-weight CLIP model built locally (once), a
MultimodalModel that serves it, and an inference request to send through the router."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path
from typing import Any, Final

from mmop.runtime import contract

NAME: Final = "clip-demo"
TASK: Final = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
LABELS: Final = ("a cat", "a dog")


def ensure_model(state_dir: Path) -> Path:
    """The demo model's directory, built on first use (seeded: always the same weights)."""
    directory = state_dir / "models" / "clip-tiny"
    if not (directory / "config.json").exists():
        from mmop.runtime.tinymodels import create_tiny_model  # imports torch

        create_tiny_model(TASK, directory)
    return directory


def manifest(model_dir: Path, *, namespace: str = "default") -> dict[str, Any]:
    """The demo MultimodalModel: CPU only, small, Istio routing, quick canary steps."""
    return {
        "apiVersion": "mmop.io/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "version": "v1",
            "model": {"source": f"file://{model_dir.resolve()}", "task": TASK, "dtype": "float32"},
            "resources": {"gpu": 0, "cpu": "1", "memory": "2Gi"},
            "replicas": 1,
            "traffic": {"router": "Istio"},
            "rollout": {"stepInterval": "10s", "scaleDownDelaySeconds": 5},
        },
    }


def request_body() -> dict[str, Any]:
    """An OIP v2 infer request: one small PNG and two labels."""
    image = base64.b64encode(contract.tiny_png()).decode()
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]},
            {"name": "labels", "shape": [len(LABELS)], "datatype": "BYTES", "data": list(LABELS)},
        ]
    }


def write_request(state_dir: Path) -> Path:
    path = state_dir / "demo-request.json"
    path.write_text(json.dumps(request_body()))
    return path


def curl_command(router_url: str, request_file: Path, *, namespace: str = "default") -> str:
    host = NAME if namespace == "default" else f"{NAME}.{namespace}"
    return (
        f"curl -s {router_url}{contract.infer_path(NAME)} -H 'Host: {host}' "
        f"-H 'Content-Type: application/json' -d @{shlex.quote(str(request_file))}"
    )
