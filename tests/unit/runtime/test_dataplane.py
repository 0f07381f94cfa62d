"""dataplane.py, lifecycle.py, admission.py: one data plane in process around a fake task (no
weights, no torch): load and warm-up, live/ready, admission and draining, the OIP v2 dispatch
through the real batcher, and the injected faults."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from mmop.runtime import contract, lifecycle, loading, memory, tasks
from mmop.runtime.admission import AdmissionControl
from mmop.runtime.dataplane import DataPlane
from mmop.runtime.errors import Draining, LoadError, NotReady, QueueFull
from mmop.runtime.lifecycle import ModelState
from mmop.runtime.metrics import Metrics
from mmop.runtime.protocol import InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import Prepared, Sample, Task, binary_value, bytes_input


@pytest.fixture(autouse=True)
def _torch_threads_not_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake models here run no torch: the forward pass's thread sharing (and the timed
    warm-up rerun it brings, which depends on this process's torch threads) is tested in
    test_batching."""
    monkeypatch.setattr(lifecycle, "thread_share", lambda settings, loaded: None)


TASK = contract.TASK_IMAGE_CLASSIFICATION
SOURCE = loading.ModelSource(original="/m", kind="local", location="/m")


@dataclass
class _Device:
    type: str = "cpu"
    index: int | None = None


@dataclass
class FakeLoaded:
    """What a task needs from a loaded model, without weights."""

    device: _Device = field(default_factory=_Device)
    load_seconds: float = 0.0

    def inference_context(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def describe(self) -> str:
        return "fake on cpu"


class FakeClassifier(Task):
    """image-classification by byte count: the score of an image is its size in bytes."""

    name = TASK
    signature = tasks.signature(TASK)

    def __init__(self, loaded: Any, settings: RuntimeSettings, *, fail_warmup: bool = False):
        self.loaded, self.settings = loaded, settings
        self.fail_warmup = fail_warmup
        self.batches: list[int] = []

    def preprocess(self, request: InferRequest) -> Prepared:
        images = bytes_input(request, "image") or []
        return Prepared([Sample("image", len(binary_value(v, what="image"))) for v in images])

    def forward(self, samples: list[Sample]) -> list[Any]:
        if self.fail_warmup:
            raise RuntimeError("out of memory")
        self.batches.append(len(samples))
        return [float(s.data) for s in samples]

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        scores = np.asarray([[r] for r in results], dtype=np.float32)
        labels = [f"size-{int(r)}" for r in results]
        return [
            OutputTensor("scores", "FP32", scores.shape, scores),
            OutputTensor("label", "BYTES", (len(labels),), labels),
        ]

    def metadata_parameters(self) -> dict[str, Any]:
        return {"fake": True}


def _settings(**values: Any) -> RuntimeSettings:
    return RuntimeSettings(model="/m", task=TASK, preprocess_threads=2, **values)


def _plane(
    settings: RuntimeSettings, **task_options: Any
) -> tuple[DataPlane, list[FakeClassifier]]:
    made: list[FakeClassifier] = []

    def create_task(task: str, loaded: Any, config: RuntimeSettings) -> FakeClassifier:
        assert task == TASK
        made.append(FakeClassifier(loaded, config, **task_options))
        return made[-1]

    plane = DataPlane(
        settings,
        metrics=Metrics(model=settings.model_name),
        source=SOURCE,
        load_model=lambda _settings, _source: FakeLoaded(),  # type: ignore[arg-type,return-value]
        create_task=create_task,
    )
    return plane, made


@pytest.fixture
async def loaded() -> AsyncIterator[tuple[DataPlane, FakeClassifier]]:
    plane, made = _plane(_settings(max_queue_size=2))
    await plane.lifecycle.load()
    yield plane, made[0]
    await plane.close()


def _body(*images: bytes, outputs: Sequence[str] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "id": "r1",
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
    }
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    return orjson.dumps(doc)


class TestLifecycle:
    async def test_not_ready_while_loading_then_ready_after_the_warmup(self) -> None:
        plane, made = _plane(_settings())
        assert plane.lifecycle.state is ModelState.LOADING
        assert plane.not_ready_reason() == "the model is loading"
        assert plane.live()
        with pytest.raises(NotReady):
            plane.admission.admit()
        await plane.lifecycle.load()
        try:
            assert plane.lifecycle.state is ModelState.READY
            assert plane.not_ready_reason() is None
            assert made[0].batches == [1]  # the warm-up batch: the smoke-test request's image
        finally:
            await plane.close()

    async def test_the_start_up_heap_is_frozen_once_ready_and_released_on_close(self) -> None:
        """Full collections must not walk torch's and the model's objects under load
        (``memory.settle_heap``)."""
        gc.set_threshold(700, 10, 10)  # CPython's default (the GC state is restored after)
        assert gc.get_freeze_count() == 0
        plane, _ = _plane(_settings())
        await plane.lifecycle.load()
        assert plane.lifecycle.state is ModelState.READY
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == memory.GC_YOUNG_THRESHOLD
        await plane.close()
        assert gc.get_freeze_count() == 0

    async def test_a_failed_warmup_fails_the_load_and_liveness(self) -> None:
        plane, _ = _plane(_settings(), fail_warmup=True)
        with pytest.raises(LoadError, match="the warm-up batch failed: out of memory"):
            await plane.lifecycle.load()
        try:
            assert plane.lifecycle.state is ModelState.FAILED
            assert not plane.live()
            assert plane.not_ready_reason() == (
                f"the model failed to load: {plane.lifecycle.failure}"
            )
        finally:
            await plane.close()


class TestDispatch:
    async def test_infer_runs_the_task_through_the_batcher(
        self, loaded: tuple[DataPlane, FakeClassifier]
    ) -> None:
        plane, task = loaded
        with plane.admission.admit() as admission:
            document = await plane.infer(plane.name, _body(b"abc", b"abcdef"), admission=admission)
        assert document["model_name"] == plane.name
        assert document["id"] == "r1"
        by_name = {o["name"]: o for o in document["outputs"]}
        assert by_name["label"]["data"] == ["size-3", "size-6"]
        assert np.asarray(by_name["scores"]["data"]).ravel().tolist() == [3.0, 6.0]
        assert sum(task.batches[1:]) == 2

    async def test_requested_outputs_only(self, loaded: tuple[DataPlane, FakeClassifier]) -> None:
        plane, _ = loaded
        with plane.admission.admit() as admission:
            document = await plane.infer(
                plane.name, _body(b"ab", outputs=["label"]), admission=admission
            )
        assert [o["name"] for o in document["outputs"]] == ["label"]

    async def test_metadata_comes_from_signature_task_and_plan(
        self, loaded: tuple[DataPlane, FakeClassifier]
    ) -> None:
        plane, _ = loaded
        document = plane.model_metadata(plane.name)
        assert [i["name"] for i in document["inputs"]] == ["image"]
        assert document["parameters"]["fake"] is True
        assert document["parameters"]["task"] == TASK
        assert document["parameters"]["max_queue_size"] == 2


class TestAdmission:
    async def test_a_full_queue_refuses_and_a_release_makes_room(
        self, loaded: tuple[DataPlane, FakeClassifier]
    ) -> None:
        plane, _ = loaded
        first, second = plane.admission.admit(), plane.admission.admit()
        with pytest.raises(QueueFull):
            plane.admission.admit()
        first.__exit__(None, None, None)
        first.__exit__(None, None, None)  # a second release is a no-op
        assert plane.admission.inflight == 1
        with plane.admission.admit():
            assert plane.admission.inflight == 2
        second.__exit__(None, None, None)
        assert plane.admission.inflight == 0

    async def test_draining_refuses_new_requests_and_waits_for_the_last(
        self, loaded: tuple[DataPlane, FakeClassifier]
    ) -> None:
        plane, _ = loaded
        held = plane.admission.admit()
        plane.admission.start_draining()
        assert plane.not_ready_reason() == "the server is shutting down"
        with pytest.raises(Draining):
            plane.admission.admit()
        assert not await plane.admission.wait_idle(0.01)
        waiter = asyncio.ensure_future(plane.admission.wait_idle(30))
        held.__exit__(None, None, None)
        assert await waiter

    def test_bodies_arriving_at_once_are_bounded_by_the_receive_budget(self) -> None:
        settings = _settings()
        plan = DataPlane(settings, metrics=Metrics(model="m"), source=SOURCE).lifecycle.memory_plan
        control = AdmissionControl(
            metrics=Metrics(model="m"), plan=lambda: plan, not_ready=lambda: None
        )
        with control.receiving() as receipt:
            receipt.add(plan.receive_bytes)
            assert control.receiving_bytes == plan.receive_bytes
            with control.receiving() as other, pytest.raises(QueueFull):
                other.add(1)
        assert control.receiving_bytes == 0


class TestFaults:
    async def test_wrong_answers_spare_the_smoke_test_when_asked(self) -> None:
        plane, _ = _plane(_settings(fault_wrong_answers=True, fault_spare_smoke_test=True))
        await plane.lifecycle.load()
        try:
            answers: dict[bool, list[str]] = {}
            for smoke in (False, True):
                with plane.admission.admit() as admission:
                    document = await plane.infer(
                        plane.name, _body(b"abc"), admission=admission, smoke_test=smoke
                    )
                label = next(o for o in document["outputs"] if o["name"] == "label")
                answers[smoke] = label["data"]
            assert answers == {False: [contract.FAULT_WRONG_TEXT], True: ["size-3"]}
        finally:
            await plane.close()
