"""Acceleration backends on tiny models: each loading path really runs (ONNX Runtime sessions, a
compiled module, int8 Linear layers, bfloat16 weights) and answers like eager float32; the ONNX
export is reused from the cache; combinations that cannot work fail the load, naming the option.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmop.runtime import backends, contract, loading, tasks
from mmop.runtime.errors import LoadError
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import Sample, Task
from tests.support.runtime import ModelStore, RuntimeServer

EMBEDDING = contract.TASK_IMAGE_TEXT_EMBEDDING
CLASSIFICATION = contract.TASK_IMAGE_CLASSIFICATION
TEXTS = ["a photo of a cat", "two dogs", "a diagram of a very long sentence with many words"]


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [png(seed) for seed in range(6)]


def load(models: ModelStore, task: str, **options: Any) -> Task:
    settings = RuntimeSettings(model=str(models.get(task)), task=task, **options)
    loaded = loading.load_model(settings, loading.preflight(settings))
    return tasks.create_task(task, loaded, settings)


def embed(task: Task) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(image embeddings, text embeddings), L2-normalised, through the task's forward."""
    samples = [Sample("image", (task.images(image, what="image"), True)) for image in IMAGES]  # type: ignore[attr-defined]
    samples += [Sample("text", (text, True)) for text in TEXTS]
    with task.loaded.inference_context():
        results = task.forward(samples)
    vectors = np.stack([r[0] for r in results])
    return vectors[: len(IMAGES)], vectors[len(IMAGES) :]


def classify(task: Task) -> np.ndarray[Any, Any]:
    samples = [Sample("image", task.images(image, what="image")) for image in IMAGES]  # type: ignore[attr-defined]
    with task.loaded.inference_context():
        return np.stack(task.forward(samples))


def min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.fixture(scope="module")
def eager_embeddings(models: ModelStore) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    task = load(models, EMBEDDING)
    assert task.loaded.backend_report is not None
    assert task.loaded.backend_report.backend == "eager"
    return embed(task)


@pytest.fixture(scope="module")
def eager_scores(models: ModelStore) -> np.ndarray[Any, Any]:
    return classify(load(models, CLASSIFICATION))


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedding(models: ModelStore, onnx_cache: Path) -> Task:
    return load(models, EMBEDDING, backend="onnxruntime", cache_dir=onnx_cache)


class TestOnnxRuntime:
    def test_embeddings_run_in_onnxruntime_and_agree_with_eager(
        self, onnx_embedding: Task, eager_embeddings: tuple[Any, Any]
    ) -> None:
        report = onnx_embedding.loaded.backend_report
        assert report is not None
        assert sorted(report.exported) == ["image_features", "text_features"]
        assert report.providers == ["CPUExecutionProvider"]
        for name, path in report.files.items():
            assert path.is_file() and path.suffix == ".onnx", name
            assert isinstance(onnx_embedding.runners[name], backends.OnnxRunner)
        images, texts = embed(onnx_embedding)
        assert min_cosine(images, eager_embeddings[0]) > 0.999
        assert min_cosine(texts, eager_embeddings[1]) > 0.999
        assert "backend onnxruntime (CPUExecutionProvider)" in onnx_embedding.loaded.describe()

    def test_a_second_load_reuses_the_cached_export(
        self,
        onnx_embedding: Task,
        models: ModelStore,
        onnx_cache: Path,
        monkeypatch: pytest.MonkeyPatch,
        eager_embeddings: tuple[Any, Any],
    ) -> None:
        first = onnx_embedding.loaded.backend_report
        assert first is not None
        stamps = {name: path.stat().st_mtime_ns for name, path in first.files.items()}

        def no_export(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("exported again")

        monkeypatch.setattr(backends, "export_onnx", no_export)
        again = load(models, EMBEDDING, backend="onnxruntime", cache_dir=onnx_cache)
        report = again.loaded.backend_report
        assert report is not None
        assert (report.exported, sorted(report.reused)) == ([], ["image_features", "text_features"])
        assert report.files == first.files
        assert {name: path.stat().st_mtime_ns for name, path in report.files.items()} == stamps
        assert min_cosine(embed(again)[0], eager_embeddings[0]) > 0.999

    def test_the_cache_key_follows_the_weights(self, models: ModelStore, tmp_path: Path) -> None:
        import os

        from mmop.runtime.tinymodels import create_tiny_model

        def key(directory: Path) -> Path:
            settings = RuntimeSettings(model=str(directory), task=EMBEDDING, cache_dir=tmp_path)
            loaded = loading.load_model(settings, loading.preflight(settings))
            return backends.onnx_cache_dir(loaded, settings=settings, graph="image_features")

        one = create_tiny_model(EMBEDDING, tmp_path / "one")
        first = key(one)
        assert key(one) == first
        other = create_tiny_model(EMBEDDING, tmp_path / "other", seed=99)
        assert key(other) != first
        # new weights in the same directory (same config): another export
        weights = one / "model.safetensors"
        stat = weights.stat()
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert key(one) != first

    def test_zero_shot_runs_in_onnxruntime_and_agrees(
        self, onnx_embedding: Task, models: ModelStore, onnx_cache: Path
    ) -> None:
        from mmop.runtime.tasks.clip import ZeroShotTask

        task_name = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
        eager = load(models, task_name)
        onnx = load(models, task_name, backend="onnxruntime", cache_dir=onnx_cache)
        assert isinstance(onnx, ZeroShotTask) and isinstance(eager, ZeroShotTask)
        report, first = onnx.loaded.backend_report, onnx_embedding.loaded.backend_report
        assert report is not None and first is not None
        # its own tiny model directory (another source), so its own export
        assert sorted(report.files) == ["image_features", "text_features"]
        assert isinstance(onnx.runners["image_features"], backends.OnnxRunner)
        prompts = tuple(f"a photo of a {label}" for label in ("cat", "dog", "car", "tree"))
        results = []
        for task in (eager, onnx):
            samples = [Sample("image", (task.images(i, what="image"), prompts)) for i in IMAGES]
            with task.loaded.inference_context():
                results.append(np.stack(task.forward(samples)))
        assert (results[0].argmax(axis=1) == results[1].argmax(axis=1)).all()
        assert np.abs(results[0] - results[1]).max() < 1e-4

    def test_classification_top1_agrees_with_eager(
        self, models: ModelStore, onnx_cache: Path, eager_scores: np.ndarray[Any, Any]
    ) -> None:
        task = load(models, CLASSIFICATION, backend="onnxruntime", cache_dir=onnx_cache)
        assert isinstance(task.runners["logits"], backends.OnnxRunner)
        scores = classify(task)
        assert (scores.argmax(axis=1) == eager_scores.argmax(axis=1)).all()
        assert np.abs(scores - eager_scores).max() < 1e-4

    def test_an_export_failure_fails_the_load_naming_the_backend(
        self, models: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("unsupported operator aten::magic")

        monkeypatch.setattr(backends, "export_onnx", broken)
        with pytest.raises(LoadError, match="backend onnxruntime cannot export the logits graph"):
            load(models, CLASSIFICATION, backend="onnxruntime", cache_dir=tmp_path)

    def test_served_over_http_from_the_cache(
        self,
        start_server: Any,
        models: ModelStore,
        onnx_embedding: Task,
        onnx_cache: Path,
        eager_embeddings: tuple[Any, Any],
    ) -> None:
        # A restarted pod: a new process finds the export in the cache volume.
        server: RuntimeServer = start_server(
            model=models.get(EMBEDDING),
            task=EMBEDDING,
            args=("--backend", "onnxruntime", "--name", "clip-onnx"),
            env={contract.ENV_CACHE_DIR: str(onnx_cache)},
        )
        server.wait_ready()
        log = server.log()
        assert "backend onnxruntime (CPUExecutionProvider)" in log
        assert log.count("reusing the cached export") == 2
        assert "exported" not in log
        body = {
            "inputs": [
                {
                    "name": "image",
                    "shape": [len(IMAGES)],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(image).decode() for image in IMAGES],
                }
            ]
        }
        with server.client() as client:
            response = client.post(contract.infer_path("clip-onnx"), json=body)
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        served = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        assert min_cosine(served, eager_embeddings[0]) > 0.999


class TestCompile:
    def test_classification_is_compiled_at_load_and_agrees(
        self,
        models: ModelStore,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        eager_scores: np.ndarray[Any, Any],
    ) -> None:
        import torch

        # Dynamo captures the graph as in production; aot_eager skips inductor's C++ build
        # (about a minute on two cores), which is torch's part, exercised by the benchmark.
        compiled: list[int] = []

        def count(gm: Any, example_inputs: Any) -> Any:
            compiled.append(len(example_inputs))
            return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

        monkeypatch.setattr(backends, "COMPILER", count)
        task = load(models, CLASSIFICATION, backend="compile", cache_dir=tmp_path)
        runner = task.runners["logits"]
        assert isinstance(runner, torch._dynamo.eval_frame.OptimizedModule)
        assert len(compiled) >= 2  # at load: the example's batch and the batch of one
        report = task.loaded.backend_report
        assert report is not None and report.agreement["logits"] > 0.99
        scores = classify(task)
        assert (scores.argmax(axis=1) == eager_scores.argmax(axis=1)).all()

    def test_requests_of_any_batch_size_run_without_compiling_again(
        self, models: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import torch

        # The batch of one compiled at load must match a request's own tensor (not a view):
        # otherwise a user's first single request compiles again (12 s for the base CLIP).
        compiled: list[int] = []

        def count(gm: Any, example_inputs: Any) -> Any:
            compiled.append(len(example_inputs))
            return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

        monkeypatch.setattr(backends, "COMPILER", count)
        task = load(models, EMBEDDING, backend="compile", cache_dir=tmp_path)
        at_load = len(compiled)
        assert at_load >= 4  # two graphs, each at the example's batch and at a batch of one
        pixels = [task.images(image, what="image") for image in IMAGES]  # type: ignore[attr-defined]
        with task.loaded.inference_context():
            for count_ in (1, 3, 1, len(IMAGES)):
                task.forward([Sample("image", (p, True)) for p in pixels[:count_]])
                task.forward([Sample("text", (t, True)) for t in TEXTS[:count_]])
        assert len(compiled) == at_load

    def test_inductor_freezes_the_graph(
        self, models: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import torch

        # With inductor (production), the weights are frozen into the compiled graph; the call
        # is recorded and the module returned as is, so no C++ build runs here.
        calls: list[dict[str, Any]] = []

        def record(module: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return module

        monkeypatch.setattr(backends, "COMPILER", "inductor")
        monkeypatch.setattr(torch, "compile", record)
        load(models, CLASSIFICATION, backend="compile", cache_dir=tmp_path)
        assert calls, "torch.compile was not called"
        for kwargs in calls:
            assert kwargs["backend"] == "inductor"
            assert kwargs["options"] == {"freezing": True}
            assert kwargs["dynamic"] is True


class TestInt8AndBfloat16:
    def test_int8_quantizes_the_linear_layers_and_agrees(
        self, models: ModelStore, eager_embeddings: tuple[Any, Any]
    ) -> None:
        import torch

        task = load(models, EMBEDDING, quantization="int8")
        kinds = {type(m) for m in task.loaded.model.modules()}
        assert torch.ao.nn.quantized.dynamic.Linear in kinds
        assert torch.nn.Linear not in kinds
        assert "int8 Linear layers" in task.loaded.describe()
        images, texts = embed(task)
        assert min_cosine(images, eager_embeddings[0]) > 0.99
        assert min_cosine(texts, eager_embeddings[1]) > 0.99

    def test_int8_classification_top1(
        self, models: ModelStore, eager_scores: np.ndarray[Any, Any]
    ) -> None:
        scores = classify(load(models, CLASSIFICATION, quantization="int8"))
        assert (scores.argmax(axis=1) == eager_scores.argmax(axis=1)).all()

    def test_bfloat16_on_cpu_casts_the_weights_and_agrees(
        self,
        models: ModelStore,
        monkeypatch: pytest.MonkeyPatch,
        eager_embeddings: tuple[Any, Any],
    ) -> None:
        import torch

        # On a CPU without native bf16 torch emulates it: the path is the same, only slower.
        monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: True)
        task = load(models, EMBEDDING, dtype="bfloat16", device="cpu")
        assert task.loaded.weight_dtype == torch.bfloat16
        assert next(task.loaded.model.parameters()).dtype == torch.bfloat16
        images, texts = embed(task)
        assert min_cosine(images, eager_embeddings[0]) > 0.99
        assert min_cosine(texts, eager_embeddings[1]) > 0.99

    def test_bfloat16_without_cpu_support_fails_the_load(
        self, models: ModelStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: False)
        with pytest.raises(LoadError, match="dtype bfloat16 on CPU needs native bfloat16"):
            load(models, EMBEDDING, dtype="bfloat16", device="cpu")


class TestRefusals:
    """What cannot work fails the load before any weight is read, naming the option."""

    @pytest.mark.parametrize(
        ("options", "device", "message"),
        [
            ({"quantization": "int8"}, "cuda", "quantization int8 runs on CPU only"),
            ({"quantization": "int8", "dtype": "bfloat16"}, "cpu", "keeps activations"),
            ({"quantization": "int8", "backend": "onnxruntime"}, "cpu", "backend eager"),
            ({"quantization": "int8", "backend": "compile"}, "cpu", "backend eager"),
            ({"backend": "onnxruntime", "dtype": "float16"}, "cpu", "float32 export"),
            ({"backend": "onnxruntime"}, "mps", "runs on cpu or cuda"),
            (
                {"backend": "compile", "task": contract.TASK_IMAGE_TO_TEXT},
                "cpu",
                "backend compile does not support task image-to-text",
            ),
        ],
    )
    def test_check_options(self, options: dict[str, Any], device: str, message: str) -> None:
        import torch

        settings = RuntimeSettings(model="x", **({"task": EMBEDDING} | options))
        with pytest.raises(LoadError, match=message):
            backends.check_options(settings, torch.device(device))

    def test_onnxruntime_on_cuda_needs_onnxruntime_gpu(self) -> None:
        import onnxruntime
        import torch

        if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(
            onnxruntime.get_available_providers()
        ):
            providers = backends.onnx_providers(torch.device("cuda"), dtype="auto", cache_root=None)
            assert providers[-1] == "CPUExecutionProvider"
        else:
            with pytest.raises(LoadError, match="needs onnxruntime-gpu"):
                backends.onnx_providers(torch.device("cuda"), dtype="auto", cache_root=None)

    def test_a_generative_task_is_refused_by_the_process(self, models: ModelStore) -> None:
        import os
        import subprocess

        from tests.support.runtime import RUNTIME_BIN

        environment = {k: v for k, v in os.environ.items() if not k.startswith("MMOP_")}
        result = subprocess.run(
            [
                str(RUNTIME_BIN),
                "--model",
                str(models.get(contract.TASK_ASR)),
                "--task",
                contract.TASK_ASR,
                "--backend",
                "onnxruntime",
                "--grpc-port",
                "0",
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=environment | {"HF_HUB_OFFLINE": "1"},
            check=False,
        )
        assert result.returncode == 1
        (line,) = [line for line in result.stderr.splitlines() if "model load failed" in line]
        assert "backend onnxruntime does not support task automatic-speech-recognition" in line


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu avx2\n")
    assert "avx512_bf16" in backends.cpu_flags(x86)
    assert "bf16" in backends.cpu_flags(arm)
    assert not backends.cpu_flags(old) & {"avx512_bf16", "amx_bf16", "bf16"}
    assert backends.cpu_flags(tmp_path / "missing") == set()
