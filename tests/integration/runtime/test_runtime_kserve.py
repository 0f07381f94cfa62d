"""Conformance with the kserve SDK's clients: ``InferenceRESTClient`` (OIP v2 over HTTP, JSON and
binary tensors) and ``InferenceGRPCClient``, run in a child process (see ``kserve_clients``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support.runtime import RuntimeServer

SCRIPT = Path(__file__).with_name("kserve_clients.py")


def test_kserve_rest_and_grpc_clients(embedding_server: RuntimeServer) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), embedding_server.url, embedding_server.grpc_url, "clip"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout)
    for key in ("rest_live", "rest_ready", "rest_model_ready", "grpc_live", "grpc_ready"):
        assert answers[key] is True, key
    assert answers["grpc_model_ready"] is True
    assert answers["rest_unknown_model"] == 404
    reference = answers["rest_json"]
    assert reference["model_name"] == "clip"
    assert reference["id"] == "kserve-1"
    assert reference["outputs"]["image_embeds"]["shape"] == [1, 16]
    assert reference["outputs"]["text_embeds"]["shape"] == [2, 16]
    assert reference["outputs"]["text_embeds"]["datatype"] == "FP32"
    for other in ("rest_binary", "grpc"):
        assert answers[other]["id"] == "kserve-1"
        for name in ("image_embeds", "text_embeds"):
            expected = reference["outputs"][name]
            got = answers[other]["outputs"][name]
            assert got["shape"] == expected["shape"], (other, name)
            np.testing.assert_allclose(got["data"], expected["data"], atol=1e-5)
