"""Tasks run in this process on tiny models: a batch mixing requests (different prompts,
label sets, languages, kinds) gives each request what it gets when run alone."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
import soundfile
from PIL import Image

from mmop.runtime import contract, loading, protocol, tasks
from mmop.runtime.errors import InvalidInput, LoadError
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import Sample, Task
from tests.support.runtime import ModelStore

Loader = Callable[..., Task]


@pytest.fixture(scope="module")
def load(models: ModelStore) -> Loader:
    cache: dict[tuple[str, str | None], Task] = {}

    def get(task: str, family: str | None = None, **overrides: Any) -> Task:
        key = (task, family)
        if key not in cache or overrides:
            directory = models.get(task, family)
            settings = RuntimeSettings(
                model=str(directory), task=task, max_new_tokens=6, **overrides
            )
            loaded = loading.load_model(settings, loading.preflight(settings))
            created = tasks.create_task(task, loaded, settings)
            if overrides:
                return created
            cache[key] = created
        return cache[key]

    return get


def png(seed: int, size: tuple[int, int] = (36, 28)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def wav(seed: int, seconds: float) -> str:
    noise = np.random.default_rng(seed).normal(0, 0.2, int(16000 * seconds)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, noise, 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def request(inputs: dict[str, list[str]], **parameters: Any) -> protocol.InferRequest:
    body = {
        "inputs": [
            {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}
            for name, values in inputs.items()
        ],
        "parameters": parameters,
    }
    return protocol.parse_infer_request(orjson.dumps(body), max_items=64)


def run(task: Task, samples: list[Sample]) -> list[Any]:
    with task.loaded.inference_context():
        return task.forward(samples)


def answers(task: Task, requests: list[protocol.InferRequest]) -> tuple[list[Any], list[Any]]:
    """Each request's outputs when batched together, and when run one by one."""
    prepared = [task.preprocess(r) for r in requests]
    together = run(task, [s for p in prepared for s in p.samples])
    batched, alone, start = [], [], 0
    for item in prepared:
        count = len(item.samples)
        batched.append(task.postprocess(item, together[start : start + count]))
        alone.append(task.postprocess(item, run(task, item.samples)))
        start += count
    return batched, alone


def assert_same(batched: list[Any], alone: list[Any]) -> None:
    for first, second in zip(batched, alone, strict=True):
        for a, b in zip(first, second, strict=True):
            assert (a.name, a.shape, a.datatype) == (b.name, b.shape, b.datatype)
            if a.datatype == "FP32":
                np.testing.assert_allclose(a.data, b.data, atol=1e-5)
            else:
                assert a.data == b.data


@pytest.mark.parametrize("family", ["blip", "vision-encoder-decoder", "git"])
def test_captioning_groups_prompts(load: Loader, family: str) -> None:
    task = load(contract.TASK_IMAGE_TO_TEXT, family)
    requests = [
        request({"image": [png(1), png(2)]}),
        request({"image": [png(3)], "prompt": ["a photo of"]}),
        request({"image": [png(4), png(5)], "prompt": ["the cat", "a"]}, max_new_tokens=2),
    ]
    batched, alone = answers(task, requests)
    assert_same(batched, alone)
    assert batched[1][0].data[0].startswith("a photo of")
    assert batched[2][0].data[0].startswith("the cat")
    assert batched[0][0].data[0] != batched[0][0].data[1]  # captions depend on the image


def test_captioning_refuses_models_of_other_families(load: Loader, models: ModelStore) -> None:
    directory = models.get(contract.TASK_IMAGE_CLASSIFICATION)
    settings = RuntimeSettings(model=str(directory), task=contract.TASK_IMAGE_TO_TEXT)
    with pytest.raises(LoadError, match="cannot serve task image-to-text"):
        loading.load_model(settings, loading.preflight(settings))


def test_zero_shot_mixes_label_sets(load: Loader) -> None:
    task = load(contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION)
    requests = [
        request({"image": [png(1)], "labels": ["cat", "dog"]}),
        request(
            {"image": [png(2), png(3)], "labels": ["a", "b", "c", "d"]}, hypothesis_template="{}"
        ),
        request({"image": [png(1)], "labels": ["dog", "cat"]}),
    ]
    batched, alone = answers(task, requests)
    assert_same(batched, alone)
    first, third = batched[0][0].data, batched[2][0].data
    np.testing.assert_allclose(first[:, ::-1], third, atol=1e-6)
    assert batched[1][0].shape == (2, 4)


def test_embeddings_mix_images_and_texts(load: Loader) -> None:
    task = load(contract.TASK_IMAGE_TEXT_EMBEDDING)
    requests = [
        request({"text": ["hello", "a much longer sentence about dogs"]}),
        request({"image": [png(7)], "text": ["x"]}, normalize=False),
        request({"image": [png(8), png(9)]}),
    ]
    batched, alone = answers(task, requests)
    assert_same(batched, alone)
    assert [o.name for o in batched[1]] == ["image_embeds", "text_embeds"]


def test_speech_groups_languages(load: Loader) -> None:
    task = load(contract.TASK_ASR)
    requests = [
        request({"audio": [wav(1, 0.5), wav(2, 1.2)]}),
        request({"audio": [wav(3, 0.8)]}, language="de", task="transcribe"),
        request({"audio": [wav(4, 0.3)]}, language="<|en|>", max_new_tokens=3),
    ]
    batched, alone = answers(task, requests)
    assert_same(batched, alone)
    with pytest.raises(InvalidInput, match="parameter 'task' must be one of"):
        task.preprocess(request({"audio": [wav(1, 0.2)]}, task="summarize"))


def test_speech_limits_audio_to_the_model_window(load: Loader) -> None:
    task = load(contract.TASK_ASR, max_audio_seconds=600)
    with pytest.raises(InvalidInput, match="over the limit of 30 s"):
        task.preprocess(request({"audio": [wav(1, 31)]}))


def test_image_classification_batches(load: Loader) -> None:
    task = load(contract.TASK_IMAGE_CLASSIFICATION)
    batched, alone = answers(
        task, [request({"image": [png(1), png(2, (90, 20))]}), request({"image": [png(3)]})]
    )
    assert_same(batched, alone)
    assert batched[0][0].shape == (2, 5)


@pytest.mark.gpu
def test_gpu_autocast_matches_cpu(load: Loader, models: ModelStore) -> None:
    import torch

    cpu = load(contract.TASK_IMAGE_CLASSIFICATION)
    directory = models.get(contract.TASK_IMAGE_CLASSIFICATION)
    settings = RuntimeSettings(
        model=str(directory), task=contract.TASK_IMAGE_CLASSIFICATION, device="auto", dtype="auto"
    )
    loaded = loading.load_model(settings, loading.preflight(settings))
    assert loaded.device.type == "cuda"
    assert loaded.weight_dtype == torch.float32
    assert loaded.autocast_dtype in (torch.bfloat16, torch.float16)
    gpu = tasks.create_task(contract.TASK_IMAGE_CLASSIFICATION, loaded, settings)
    prepared = gpu.preprocess(request({"image": [png(1), png(2)]}))
    on_gpu = gpu.postprocess(prepared, run(gpu, prepared.samples))
    on_cpu = cpu.postprocess(prepared, run(cpu, prepared.samples))
    np.testing.assert_allclose(on_gpu[0].data, on_cpu[0].data, atol=2e-2)
