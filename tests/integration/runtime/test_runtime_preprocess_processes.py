"""Preprocessing in worker processes (``--preprocess-processes``): the same answers as the
thread pool, from other processes, and a worker that dies is replaced."""

from __future__ import annotations

import base64
import gc
import io
import os
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import psutil
import pytest
import soundfile
import torch
from PIL import Image

from mmop.runtime import contract, loading, protocol, tasks
from mmop.runtime.settings import RuntimeSettings
from tests.support.runtime import ModelStore, RuntimeServer, metric_value
from tests.support.wait import wait_until


def png(seed: int, size: tuple[int, int] = (40, 30)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def wav(seed: int) -> str:
    noise = np.random.default_rng(seed).normal(0, 0.2, 8000).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, noise, 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def bytes_input(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


REQUESTS: dict[str, dict[str, Any]] = {
    contract.TASK_IMAGE_TEXT_EMBEDDING: {
        "inputs": [bytes_input("image", [png(1), png(2)]), bytes_input("text", ["a cat"])]
    },
    contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: {
        "inputs": [bytes_input("image", [png(3)]), bytes_input("labels", ["cat", "dog"])]
    },
    contract.TASK_IMAGE_CLASSIFICATION: {"inputs": [bytes_input("image", [png(4)])]},
    contract.TASK_IMAGE_TO_TEXT: {"inputs": [bytes_input("image", [png(5)])]},
    contract.TASK_ASR: {"inputs": [bytes_input("audio", [wav(6)])]},
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


@pytest.mark.parametrize("task", sorted(REQUESTS))
def test_a_task_without_weights_preprocesses_exactly_as_the_loaded_one(
    models: ModelStore, task: str
) -> None:
    """What a worker process builds (processors + a weightless model on the meta device) turns
    a request into the very samples the serving process would."""
    settings = RuntimeSettings(model=str(models.get(task)), task=task, max_new_tokens=4)
    source = loading.preflight(settings)
    full = tasks.create_task(task, loading.load_model(settings, source), settings)
    light = loading.load_model(settings, source, weights=False)
    assert next(light.model.parameters()).device.type == "meta"  # no weights were loaded
    weightless = tasks.create_task(task, light, settings)
    body = orjson.dumps(REQUESTS[task])
    request = protocol.parse_infer_request(body, header_length=None, max_items=64)
    expected, got = full.preprocess(request), weightless.preprocess(request)
    assert [s.kind for s in got.samples] == [s.kind for s in expected.samples]
    assert [s.group for s in got.samples] == [s.group for s in expected.samples]
    assert all(_same(g.data, e.data) for g, e in zip(got.samples, expected.samples, strict=True))
    assert _same(got.context, expected.context)


@pytest.fixture(scope="module")
def pooled_server(models: ModelStore, start_server: Callable[..., RuntimeServer]) -> RuntimeServer:
    server = start_server(
        model=models.get(contract.TASK_IMAGE_TEXT_EMBEDDING),
        task=contract.TASK_IMAGE_TEXT_EMBEDDING,
        args=("--max-delay-ms", "20", "--name", "clip", "--preprocess-processes", "2"),
    )
    server.wait_ready()
    return server


def _workers(server: RuntimeServer) -> list[psutil.Process]:
    """The pool's worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(server.process.pid).children()
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def _infer(server: RuntimeServer, body: dict[str, Any]) -> Any:
    with server.client() as client:
        return client.post(contract.infer_path(server.name), json=body)


def test_requests_are_preprocessed_in_worker_processes_with_the_same_answers(
    pooled_server: RuntimeServer, embedding_server: RuntimeServer
) -> None:
    workers = _workers(pooled_server)
    assert len(workers) == 2, workers
    before = {w.pid: w.cpu_times().user + w.cpu_times().system for w in workers}
    body = REQUESTS[contract.TASK_IMAGE_TEXT_EMBEDDING]
    for _ in range(6):
        pooled = _infer(pooled_server, body)
        assert pooled.status_code == 200, pooled.text
    threaded = _infer(embedding_server, body)
    assert threaded.status_code == 200, threaded.text
    got = {o["name"]: np.array(o["data"]) for o in pooled.json()["outputs"]}
    want = {o["name"]: np.array(o["data"]) for o in threaded.json()["outputs"]}
    assert got.keys() == want.keys() == {"image_embeds", "text_embeds"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6)

    # The decoding runs in the workers: they spend CPU time on it (counted in clock ticks, so
    # a few fast requests may not show yet: send more until it does).
    def workers_busy() -> bool:
        assert _infer(pooled_server, body).status_code == 200
        after = {w.pid: w.cpu_times().user + w.cpu_times().system for w in workers}
        return sum(after.values()) > sum(before.values())

    wait_until(workers_busy, within=60, what="the workers to spend CPU time decoding")
    # The OpenAI route goes through the workers too.
    with pooled_server.client() as client:
        response = client.post(
            "/v1/embeddings", json={"model": "clip", "input": ["a dog", "a cat"]}
        )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


def test_bad_input_is_reported_from_a_worker_like_from_a_thread(
    pooled_server: RuntimeServer, embedding_server: RuntimeServer
) -> None:
    not_an_image = {"inputs": [bytes_input("image", [base64.b64encode(b"no image").decode()])]}
    unknown = {"inputs": [bytes_input("video", ["x"])]}
    for body in (not_an_image, unknown):
        pooled, threaded = _infer(pooled_server, body), _infer(embedding_server, body)
        assert pooled.status_code == threaded.status_code == 400
        assert pooled.json()["error"] == threaded.json()["error"]


def test_a_worker_that_dies_is_replaced_and_serving_goes_on(pooled_server: RuntimeServer) -> None:
    body = REQUESTS[contract.TASK_IMAGE_TEXT_EMBEDDING]
    replaced = contract.METRIC_PREPROCESS_WORKERS_REPLACED + "_total"
    before = metric_value(pooled_server.metrics(), replaced)
    old = {w.pid for w in _workers(pooled_server)}
    assert old
    os.kill(next(iter(old)), signal.SIGKILL)
    codes: list[int] = []

    def served_after_the_replacement() -> bool:
        # A surviving worker may still answer before the pool notices the death: only a 200
        # after the replacement shows that serving goes on.
        codes.append(_infer(pooled_server, body).status_code)
        return codes[-1] == 200 and metric_value(pooled_server.metrics(), replaced) > before

    wait_until(served_after_the_replacement, within=120, what="a 200 from the new pool")
    assert metric_value(pooled_server.metrics(), replaced) == before + 1
    assert set(codes) <= {200, 503}, codes  # a request the dead pool held may get 503
    new = {w.pid for w in _workers(pooled_server)}
    assert new and not (new & old), (old, new)
    assert "a preprocessing worker process died" in pooled_server.log()


def test_a_worker_of_an_accelerated_model_preprocesses_without_the_backend(
    models: ModelStore,
) -> None:
    """The serving process exports / compiles the real weights; a worker (weightless model)
    must not try, or every accelerated model would fail to start with processes."""
    from mmop.runtime import preprocessing

    task = contract.TASK_IMAGE_TEXT_EMBEDDING
    settings = RuntimeSettings(model=str(models.get(task)), task=task, backend="onnxruntime")
    preprocessing._start_worker(settings, loading.preflight(settings), None)
    assert preprocessing._worker is not None
    worker_task, worker_settings = preprocessing._worker
    assert worker_settings.backend == "eager"
    _, prepared = preprocessing.prepare_infer(
        worker_task, worker_settings, orjson.dumps(REQUESTS[task]), None
    )
    assert [s.kind for s in prepared.samples] == ["image", "image", "text"]


def test_a_worker_freezes_its_start_up_heap(models: ModelStore) -> None:
    """A worker's full collections must not walk torch's objects (``memory.settle_heap``)."""
    from mmop.runtime import preprocessing

    task = contract.TASK_IMAGE_TEXT_EMBEDDING
    settings = RuntimeSettings(model=str(models.get(task)), task=task)
    assert gc.get_freeze_count() == 0
    preprocessing._start_worker(settings, loading.preflight(settings), None)
    assert gc.get_freeze_count() > 0


def test_workers_exit_when_the_serving_process_is_killed(
    models: ModelStore, start_server: Callable[..., RuntimeServer]
) -> None:
    """A serving process killed outright cannot shut its pool down; its workers must not live
    on (each holds a model's processors in memory) waiting for jobs that never come."""
    server = start_server(
        model=models.get(contract.TASK_IMAGE_TEXT_EMBEDDING),
        task=contract.TASK_IMAGE_TEXT_EMBEDDING,
        args=("--name", "clip", "--preprocess-processes", "1"),
    )
    server.wait_ready()
    workers = _workers(server)
    assert len(workers) == 1, workers
    server.process.kill()
    server.process.wait(30)

    def gone() -> bool:
        return not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)

    wait_until(gone, within=30, what="the worker process to exit after its server was killed")


@pytest.mark.parametrize(
    ("shape", "dtype", "copied"),
    [
        ((3, 32, 32), torch.float32, True),  # 12 KB: through the pipe
        ((3, 224, 224), torch.float32, False),  # 600 KB: shared memory
        ((4, 4), torch.bfloat16, False),  # numpy has no bfloat16: shared memory
    ],
)
def test_small_tensors_come_back_by_copy_large_ones_through_shared_memory(
    shape: tuple[int, ...], dtype: torch.dtype, copied: bool
) -> None:
    from multiprocessing.reduction import ForkingPickler

    from mmop.runtime import preprocessing

    tensor = torch.rand(*shape).to(dtype)
    rebuild, args = preprocessing._send_tensor(tensor)
    assert (rebuild is torch.from_numpy) is copied
    if copied:
        back = rebuild(*args)
        assert back.dtype == tensor.dtype and torch.equal(back, tensor)
    # and the pickler a worker registers it with round-trips it either way
    pickler = type("Pickler", (ForkingPickler,), {"_extra_reducers": {}})  # not the global one
    pickler.register(torch.Tensor, preprocessing._send_tensor)
    back = ForkingPickler.loads(bytes(pickler.dumps(tensor)))
    assert torch.equal(back, tensor)
