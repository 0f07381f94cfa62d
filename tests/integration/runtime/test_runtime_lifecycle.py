"""Process lifecycle: readiness, SIGTERM drain, load failures (exit 1), bad settings (exit 2)."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.runtime import contract
from tests.support.runtime import (
    RUNTIME_BIN,
    SMOKE_TOKEN,
    ModelStore,
    RuntimeServer,
    image_request,
    metric_value,
)
from tests.support.wait import wait_until


def test_probes_and_metrics_after_start(classification_server: RuntimeServer) -> None:
    with classification_server.client() as client:
        assert client.get(contract.LIVE_PATH).json() == {"live": True}
        assert client.get(contract.READY_PATH).json() == {"ready": True}
        ready = client.get(contract.model_ready_path(classification_server.name))
        assert ready.json() == {"name": classification_server.name, "ready": True}
    page = classification_server.metrics()
    assert metric_value(page, contract.METRIC_MODEL_LOAD) > 0
    assert metric_value(page, contract.METRIC_GPU_UTILIZATION) == 0
    assert metric_value(page, contract.METRIC_GPU_MEMORY_USED) == 0
    assert metric_value(page, "mmop_requests_total", endpoint="health", code="200") > 0
    assert "ready" in classification_server.log()  # one line per event, readable
    assert not any(
        line.startswith((" ", "\t")) for line in classification_server.log().splitlines()
    )


def test_smoke_tests_are_not_counted_as_user_traffic(embedding_server: RuntimeServer) -> None:
    before = embedding_server.metrics()
    with embedding_server.client(headers={contract.SMOKE_TEST_HEADER: SMOKE_TOKEN}) as client:
        response = client.post(
            contract.infer_path(embedding_server.name),
            json=contract.smoke_test_request(contract.TASK_IMAGE_TEXT_EMBEDDING),
        )
    assert response.status_code == 200
    after = embedding_server.metrics()

    def delta(**labels: str) -> float:
        return metric_value(after, "mmop_requests_total", **labels) - metric_value(
            before, "mmop_requests_total", **labels
        )

    assert delta(endpoint="smoke", code="200") == 1
    assert delta(endpoint="infer") == 0


def test_a_forged_smoke_test_header_counts_as_user_traffic(
    embedding_server: RuntimeServer,
) -> None:
    # Any client can send the header; only the operator knows the pod's token.
    before = embedding_server.metrics()
    for forged in ("1", "true", SMOKE_TOKEN[:-1]):
        with embedding_server.client(headers={contract.SMOKE_TEST_HEADER: forged}) as client:
            response = client.post(
                contract.infer_path(embedding_server.name),
                json=contract.smoke_test_request(contract.TASK_IMAGE_TEXT_EMBEDDING),
            )
        assert response.status_code == 200
    after = embedding_server.metrics()

    def delta(**labels: str) -> float:
        return metric_value(after, "mmop_requests_total", **labels) - metric_value(
            before, "mmop_requests_total", **labels
        )

    assert delta(endpoint="infer", code="200") == 3
    assert delta(endpoint="smoke") == 0


def test_sigterm_drains_in_flight_requests_then_exits_0(drain_server: RuntimeServer) -> None:
    server = drain_server  # every request takes 1.5 s (injected latency)
    path = contract.infer_path(server.name)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, server.url + path, json=image_request(), timeout=30)
        wait_until(
            lambda: metric_value(server.metrics(), contract.METRIC_QUEUE_DEPTH) >= 1,
            within=10,
            what="the request to arrive",
            every=0.02,
        )
        server.process.send_signal(signal.SIGTERM)
        with server.client() as client:
            wait_until(
                lambda: client.get(contract.READY_PATH).status_code == 503,
                within=10,
                what="readiness to turn 503",
                every=0.02,
            )
            refused = client.post(path, json=image_request())
            assert client.get(contract.LIVE_PATH).status_code == 200
        assert refused.status_code == 503
        assert "shutting down" in refused.json()["error"]
        assert in_flight.result().status_code == 200
    assert server.wait_exit() == 0
    assert "SIGTERM received: draining 1 in-flight requests" in server.log()


def test_a_pickle_checkpoint_is_refused(tmp_path: Path, models: ModelStore) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    directory = tmp_path / "pickled"
    source = models.get(contract.TASK_IMAGE_CLASSIFICATION)
    model = AutoModelForImageClassification.from_pretrained(source)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")  # the classic pickle format
    result = _run(["--model", str(directory), "--task", contract.TASK_IMAGE_CLASSIFICATION])
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "model load failed" in line]
    assert "pytorch_model.bin" in line
    assert "safetensors" in line


def test_an_unreachable_hub_model_exits_1_with_one_line(tmp_path: Path) -> None:
    result = _run(
        ["--model", "hf://mmop-test/does-not-exist", "--task", contract.TASK_ASR, "--port", "0"],
        env={"HF_HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "model load failed" in line]
    assert len(failures) == 1
    assert "hf://mmop-test/does-not-exist" in failures[0]


def test_bad_settings_exit_2() -> None:
    result = _run(["--task", contract.TASK_ASR])
    assert result.returncode == 2
    assert "--model / MMOP_MODEL" in result.stderr
    result = _run(
        ["--model", "x", "--task", contract.TASK_ASR], env={contract.ENV_MAX_BATCH_SIZE: "-1"}
    )
    assert result.returncode == 2
    assert "MMOP_MAX_BATCH_SIZE" in result.stderr


def _run(args: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MMOP_")}
    environment |= {"HF_HUB_OFFLINE": "1"} | (env or {})
    return subprocess.run(
        # No gRPC: 127.0.0.1:8081 may be taken by another test run on this machine.
        [str(RUNTIME_BIN), "--host", "127.0.0.1", "--grpc-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_python_module_entry_point_exists() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mmop.runtime.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "--max-queue-size" in result.stdout
    assert "MMOP_MAX_QUEUE_SIZE" in result.stdout


@pytest.mark.gpu
def test_gpu_autocast_serves(start_server: Any, models: ModelStore) -> None:
    server: RuntimeServer = start_server(
        model=models.get(contract.TASK_IMAGE_TEXT_EMBEDDING),
        task=contract.TASK_IMAGE_TEXT_EMBEDDING,
        args=("--device", "cuda", "--dtype", "auto"),
    )
    server.wait_ready()
    assert "autocast" in server.log()
    with server.client() as client:
        response = client.post(
            contract.infer_path(server.name),
            json=contract.smoke_test_request(contract.TASK_IMAGE_TEXT_EMBEDDING),
        )
    assert response.status_code == 200
    assert metric_value(server.metrics(), contract.METRIC_GPU_MEMORY_USED) > 0
