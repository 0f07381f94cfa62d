"""The transport-neutral data plane: model lifecycle, admission, validation, batching, answers.

HTTP adapters call it with raw bodies and get documents back or a ``RuntimeFailure``; it knows
nothing about status codes. Everything here runs on the event loop except what it hands to
the decoding pool (parsing, decoding, preprocessing) and to the batcher's worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Final, ParamSpec, TypeVar

import orjson

from mmop.runtime import contract, loading, memory, protocol, tasks
from mmop.runtime.batching import BatchConfig, Batcher
from mmop.runtime.errors import (
    Draining,
    FaultInjected,
    InvalidInput,
    LoadError,
    ModelNotFound,
    NotReady,
    QueueFull,
    detail,
    echo,
)
from mmop.runtime.metrics import Metrics, cuda_probes
from mmop.runtime.protocol import EmbeddingsRequest, InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import Prepared, Task

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SERVER_NAME: Final = "mmop-runtime"
PLATFORM: Final = "transformers"
EXTENSIONS: Final = ("binary_tensor_data",)
RETRY_AFTER_SECONDS: Final = 1


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


def _package_version() -> str:
    try:
        return metadata.version("mmop")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


class Admission:
    """A slot in the bounded queue, held from admission until the answer is ready, with the
    request's worst-case memory cost counted against the plan's admitted-bytes budget."""

    __slots__ = ("_plane", "_released", "admitted_at", "cost")

    def __init__(self, plane: DataPlane, admitted_at: float, cost: int = 0) -> None:
        self._plane = plane
        self.admitted_at = admitted_at
        self.cost = cost
        self._released = False

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._released:
            self._released = True
            self._plane._release(self.cost)


class Receipt:
    """Bytes of one request body received so far, counted against the plane's receive budget
    until the request is admitted or refused (then its body is the queue's to bound)."""

    __slots__ = ("_plane", "received")

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self.received = 0

    def add(self, size: int) -> None:
        """Count ``size`` more bytes; ``QueueFull`` when bodies in flight would exceed it."""
        self._plane._reserve(size)
        self.received += size

    def __enter__(self) -> Receipt:
        self._plane.metrics.add_receiving(1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._plane.metrics.add_receiving(-1)
        self._plane._unreserve(self.received)
        self.received = 0


class DataPlane:
    """One model: load it, admit requests, run them through the task and the batcher."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        metrics: Metrics,
        source: loading.ModelSource,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.version = settings.model_version
        self.signature = tasks.signature(settings.task)
        self.metrics = metrics
        self._source = source
        self._clock = clock
        self._rng = rng or random.Random()
        self._state = ModelState.LOADING
        self._failure: str | None = None
        self._task: Task | None = None
        self._batcher: Batcher | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads, thread_name_prefix="mmop-decode"
        )
        self._inflight = 0
        self._admitted_bytes = 0
        self._receiving = 0
        self._plan = memory.plan_memory(
            settings,
            limit_bytes=None,
            baseline_bytes=memory.resident_bytes(),
            sample_bytes=0,
        )
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def failure(self) -> str | None:
        return self._failure

    async def load(self) -> None:
        """Load the model, start the batcher and run the warm-up batch (raises ``LoadError``)."""
        try:
            await _in_daemon_thread(self._load, name="mmop-load")
        except LoadError as exc:
            self._fail(exc.message)
            raise
        except Exception as exc:
            self._fail(loading.one_line(exc))
            raise LoadError(self._failure) from exc

    def _fail(self, reason: str) -> None:
        self._state = ModelState.FAILED
        self._failure = reason

    def _load(self) -> None:
        settings = self.settings
        log.info(
            "loading model %s from %s for task %s", self.name, self._source.original, settings.task
        )
        loaded = loading.load_model(settings, self._source)
        task = tasks.create_task(settings.task, loaded, settings)
        warmup = task.preprocess(_warmup_request(settings.task))

        def forward(samples: list[Any]) -> Sequence[Any]:
            with loaded.inference_context():
                return task.forward(samples)

        batcher = Batcher(
            forward,
            config=BatchConfig(
                max_batch_size=settings.max_batch_size,
                max_delay=settings.max_delay_seconds,
                queue_timeout=settings.queue_timeout_seconds,
                stuck_after=settings.stuck_batch_seconds,
            ),
            observer=self.metrics,
            clock=self._clock,
        )
        warm_started = time.perf_counter()
        batcher.start(warmup=warmup.samples)
        try:
            task.postprocess(warmup, batcher.wait_warm())
        except Exception as exc:
            batcher.stop()
            raise LoadError(f"the warm-up batch failed: {loading.one_line(exc)}") from exc
        self.metrics.set_model_load_seconds(loaded.load_seconds)
        if loaded.device.type == "cuda":
            utilization, memory_used = cuda_probes(loaded.device.index or 0)
            self.metrics.watch_gpu(utilization=utilization, memory_used=memory_used)
        self._plan = memory.plan_memory(
            settings,
            limit_bytes=memory.memory_limit(settings.memory_limit_bytes),
            baseline_bytes=memory.resident_bytes(),
            sample_bytes=max((memory.data_bytes(s.data) for s in warmup.samples), default=0),
        )
        (log.info if self._plan.fits else log.warning)("%s", self._plan.describe())
        self._task, self._batcher = task, batcher
        self._state = ModelState.READY
        log.info(
            "model %s ready: %s, loaded in %.2f s, warm-up %.2f s",
            self.name,
            loaded.describe(),
            loaded.load_seconds,
            time.perf_counter() - warm_started,
        )

    async def close(self) -> None:
        """Stop the batcher (after what it runs) and the decoding pool."""
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- probes -------------------------------------------------------------------------------

    def live(self) -> bool:
        """The event loop answers (we are here) and a started batcher is neither dead nor stuck."""
        if self._state is ModelState.FAILED:
            return False
        return self._batcher is None or self._batcher.healthy()

    def not_ready_reason(self) -> str | None:
        """None when ready: model loaded, warm-up done, batcher alive, not draining."""
        if self._draining:
            return "the server is shutting down"
        if self._state is ModelState.LOADING:
            return "the model is loading"
        if self._state is ModelState.FAILED:
            return f"the model failed to load: {self._failure}"
        if self._batcher is None or not self._batcher.healthy():
            return "the batcher is not running"
        return None

    # --- admission and draining -----------------------------------------------------------------

    @property
    def memory_plan(self) -> memory.MemoryPlan:
        """The limits in force: the configured ones until the model is loaded, then fitted to
        the memory limit."""
        return self._plan

    def check_capacity(self) -> None:
        """Refuse at once what ``admit`` would refuse now (draining 503, not ready 503, full
        429), without taking a slot: adapters call it before receiving a body."""
        if self._draining:
            raise Draining("the server is shutting down")
        reason = self.not_ready_reason()
        if reason is not None:
            raise NotReady(reason)
        limit = self._plan.queue_size
        if self._inflight >= limit:
            raise QueueFull(
                f"the queue is full ({limit} requests); retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    def receiving(self) -> Receipt:
        """Count a body's bytes while it arrives (before admission): many clients sending at
        once hold at most the plan's ``receive_bytes``, and a slow one holds no queue slot."""
        return Receipt(self)

    def _reserve(self, size: int) -> None:
        limit = self._plan.receive_bytes
        if self._receiving + size > limit:
            raise QueueFull(
                f"the queue is full: request bodies arriving at once are over {limit} bytes; "
                "retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self._receiving += size

    def _unreserve(self, size: int) -> None:
        self._receiving -= size

    @property
    def receiving_bytes(self) -> int:
        return self._receiving

    def admit(self, *, body_bytes: int = 0) -> Admission:
        """Take a queue slot or refuse at once (draining 503, not ready 503, full 429).

        Adapters receive the whole body first (a slot is never held while a body trickles in)
        and pass its size: the request's worst-case cost must fit the admitted-bytes budget of
        the memory plan, except in an empty queue.
        """
        self.check_capacity()
        cost = self._plan.request_cost(body_bytes) if body_bytes else 0
        budget = self._plan.admit_bytes
        if budget is not None and self._inflight and self._admitted_bytes + cost > budget:
            raise QueueFull(
                f"the queue is full: admitted requests may hold {budget} bytes, and this one "
                f"up to {cost}; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self._inflight += 1
        self._admitted_bytes += cost
        self._idle.clear()
        self.metrics.set_queue_depth(self._inflight)
        return Admission(self, self._clock(), cost)

    def _release(self, cost: int = 0) -> None:
        self._admitted_bytes -= cost
        self._inflight -= 1
        self.metrics.set_queue_depth(self._inflight)
        if self._inflight == 0:
            self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        self._draining = True

    async def wait_idle(self, within: float) -> bool:
        """Wait until no admitted request is left; False if ``within`` seconds passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    # --- metadata -----------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": _package_version(), "extensions": list(EXTENSIONS)}

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ModelNotFound(
                f"model {echo(name)} is not served here; this server serves {self.name!r}"
            )
        if version is not None and version != self.version:
            known = repr(self.version) if self.version else "none"
            raise ModelNotFound(
                f"model {echo(name)} has no version {echo(version)} (served: {known})"
            )

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self.check_model(name, version)
        shapes = self._task.output_shapes() if self._task is not None else {}
        parameters: dict[str, Any] = {
            "task": self.settings.task,
            "max_batch_size": self.settings.max_batch_size,
            "request_parameters": list(self.signature.parameters),
        }
        if self._task is not None:
            parameters |= self._task.metadata_parameters()
        parameters |= self._plan.metadata()
        document: dict[str, Any] = {"name": self.name}
        if self.version:
            document["versions"] = [self.version]
        document |= {
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in self.signature.inputs],
            "outputs": [spec.metadata(shapes.get(spec.name)) for spec in self.signature.outputs],
            "parameters": parameters,
        }
        return document

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.check_model(name, version)
        return self.not_ready_reason() is None

    @property
    def serves_embeddings(self) -> bool:
        return self.settings.task == contract.TASK_IMAGE_TEXT_EMBEDDING

    # --- inference ----------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        body: bytes,
        *,
        admission: Admission,
        header_length: int | None = None,
        version: str | None = None,
        smoke_test: bool = False,
    ) -> dict[str, Any]:
        """Answer an OIP v2 infer request (raw body) with the response document."""
        self.check_model(name, version)
        await self._inject_faults(smoke_test=smoke_test)
        task, batcher = self._running()
        with batcher.incoming() as ticket:
            request, prepared = await self._in_pool(
                ticket.timed(self._prepare_infer), task, body, header_length
            )
            results = await batcher.submit(
                prepared.samples, admitted_at=admission.admitted_at, ticket=ticket
            )
        outputs = _select_outputs(task.postprocess(prepared, results), request.outputs)
        if self.settings.fault_wrong_answers and not (
            smoke_test and self.settings.fault_spare_smoke_test
        ):
            outputs = [_wrong(output) for output in outputs]
        return protocol.infer_response(
            model_name=self.name,
            model_version=self.version,
            request_id=request.id,
            outputs=outputs,
        )

    def _prepare_infer(
        self, task: Task, body: bytes, header_length: int | None
    ) -> tuple[InferRequest, Prepared]:
        request = protocol.parse_infer_request(
            body, header_length=header_length, max_items=self.settings.max_items_per_request
        )
        names = self.signature.input_names
        unknown = [name for name in request.inputs if name not in names]
        if unknown:
            raise InvalidInput(
                f"unknown input {echo(unknown[0])}; model {self.name} takes {', '.join(names)}"
            )
        outputs = self.signature.output_names
        for name in request.outputs or ():
            if name not in outputs:
                raise InvalidInput(
                    f"unknown output {echo(name)}; model {self.name} produces {', '.join(outputs)}"
                )
        return request, self._preprocess(task.preprocess, request)

    async def embeddings(self, body: bytes, *, admission: Admission) -> dict[str, Any]:
        """Answer an OpenAI ``/v1/embeddings`` request (raw body)."""
        await self._inject_faults()
        task, batcher = self._running()
        with batcher.incoming() as ticket:
            request, prepared = await self._in_pool(
                ticket.timed(self._prepare_embeddings), task, body
            )
            results = await batcher.submit(
                prepared.samples, admitted_at=admission.admitted_at, ticket=ticket
            )
        vectors = [result[0] for result in results]
        tokens = sum(int(result[1]) for result in results)
        return protocol.embeddings_response(
            model_name=self.name,
            vectors=vectors,
            encoding_format=request.encoding_format,
            prompt_tokens=tokens,
        )

    def _prepare_embeddings(self, task: Task, body: bytes) -> tuple[EmbeddingsRequest, Prepared]:
        from mmop.runtime.tasks.clip import EmbeddingTask

        request = protocol.parse_embeddings_request(
            body,
            max_items=self.settings.max_items_per_request,
            max_text_chars=self.settings.max_text_chars,
        )
        self.check_model(request.model)
        assert isinstance(task, EmbeddingTask)
        if request.dimensions is not None and request.dimensions != task.dims:
            raise InvalidInput(
                f"'dimensions' must be {task.dims} for this model (or left out), "
                f"got {request.dimensions}"
            )
        return request, self._preprocess(task.preprocess_items, request.items)

    @staticmethod
    def _preprocess(step: Callable[[Any], Prepared], argument: Any) -> Prepared:
        try:
            return step(argument)
        except (InvalidInput, LoadError):
            raise
        except Exception as exc:
            # Processors raise plain exceptions for inputs they cannot handle (odd image modes,
            # sizes); the input caused it, and the message says what the processor disliked.
            log.warning("preprocessing failed: %s", loading.one_line(exc))
            raise InvalidInput(f"the input could not be preprocessed: {detail(exc)}") from exc

    def _running(self) -> tuple[Task, Batcher]:
        if self._task is None or self._batcher is None:
            raise NotReady(self.not_ready_reason() or "the model is loading")
        return self._task, self._batcher

    async def _inject_faults(self, *, smoke_test: bool = False) -> None:
        settings = self.settings
        if settings.fault_latency_ms > 0:
            await asyncio.sleep(settings.fault_latency_ms / 1000.0)
        if smoke_test and settings.fault_spare_smoke_test:
            return
        if settings.fault_error_rate > 0 and self._rng.random() < settings.fault_error_rate:
            raise FaultInjected(
                f"injected fault ({contract.ENV_FAULT_ERROR_RATE}={settings.fault_error_rate:g})"
            )

    async def _in_pool(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))


async def _in_daemon_thread(function: Callable[[], None], *, name: str) -> None:
    """Run ``function`` in a daemon thread: a process told to stop while a model is still
    loading (SIGTERM, a port already taken) exits without waiting for the load to finish."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            function()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    await done


def _warmup_request(task: str) -> InferRequest:
    body = orjson.dumps(contract.smoke_test_request(task))
    return protocol.parse_infer_request(body, max_items=16)


def _wrong(output: OutputTensor) -> OutputTensor:
    """The fault MMOP_FAULT_WRONG_ANSWERS: the same shape and type, another answer."""
    if isinstance(output.data, list):
        data: Any = [contract.FAULT_WRONG_TEXT] * len(output.data)
    else:
        data = -output.data
    return dataclasses.replace(output, data=data)


def _select_outputs(
    outputs: list[OutputTensor], requested: Sequence[str] | None
) -> list[OutputTensor]:
    if requested is None:
        return outputs
    produced = {output.name: output for output in outputs}
    missing = [name for name in requested if name not in produced]
    if missing:
        raise InvalidInput(
            f"output {echo(missing[0])} is not produced for this request (its inputs are missing)"
        )
    return [produced[name] for name in dict.fromkeys(requested)]
