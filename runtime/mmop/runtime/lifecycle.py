"""The model's lifecycle (KServe's ``load()`` / ``ready`` / ``healthy()``): load the weights,
build the task, start the batcher and run the warm-up batch, then say whether the model is
live and ready. Knows tasks only through :class:`mmop.runtime.tasks.base.Task`."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from mmop.runtime import contract, loading, memory, preprocessing, protocol, tasks
from mmop.runtime.batching import BatchConfig, Batcher, ThreadShare
from mmop.runtime.errors import LoadError, NotReady, one_line
from mmop.runtime.metrics import Metrics, cuda_probes
from mmop.runtime.protocol import InferRequest
from mmop.runtime.settings import RuntimeSettings, available_cpus
from mmop.runtime.tasks.base import Task

log = logging.getLogger(__name__)

LoadModel = Callable[[RuntimeSettings, loading.ModelSource], loading.LoadedModel]
CreateTask = Callable[[str, loading.LoadedModel, RuntimeSettings], Task]


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class ModelLifecycle:
    """One model from loading to ready (or failed); ``running()`` hands out its task and batcher.

    ``load_model`` and ``create_task`` default to the real loader and the task registry; tests
    pass fakes to run a data plane in process without weights.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        metrics: Metrics,
        source: loading.ModelSource,
        clock: Callable[[], float] = time.monotonic,
        load_model: LoadModel = loading.load_model,
        create_task: CreateTask = tasks.create_task,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._source = source
        self._clock = clock
        self._load_model = load_model
        self._create_task = create_task
        self._state = ModelState.LOADING
        self._failure: str | None = None
        self._task: Task | None = None
        self._batcher: Batcher | None = None
        self._processes: preprocessing.ProcessPool | None = None
        self._plan = memory.plan_memory(
            settings,
            limit_bytes=None,
            baseline_bytes=memory.resident_bytes(),
            sample_bytes=0,
        )

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def memory_plan(self) -> memory.MemoryPlan:
        """The limits in force: the configured ones until the model is loaded, then fitted to
        the memory limit."""
        return self._plan

    @property
    def processes(self) -> preprocessing.ProcessPool | None:
        """The preprocessing worker processes, when requests are preprocessed in processes."""
        return self._processes

    @property
    def task(self) -> Task | None:
        """The loaded task (None while loading or after a failed load)."""
        return self._task

    async def load(self) -> None:
        """Load the model, start the batcher and run the warm-up batch (raises ``LoadError``)."""
        try:
            await _in_daemon_thread(self._load, name="mmop-load")
        except LoadError as exc:
            self._fail(exc.message)
            raise
        except Exception as exc:
            self._fail(one_line(exc))
            raise LoadError(self._failure) from exc

    def _fail(self, reason: str) -> None:
        self._state = ModelState.FAILED
        self._failure = reason

    def _load(self) -> None:
        settings = self.settings
        log.info(
            "loading model %s from %s for task %s",
            settings.model_name,
            self._source.original,
            settings.task,
        )
        loaded = self._load_model(settings, self._source)
        task = self._create_task(settings.task, loaded, settings)
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
            threads=thread_share(settings, loaded),
        )
        warm_started = time.perf_counter()
        batcher.start(warmup=warmup.samples)
        try:
            task.postprocess(warmup, batcher.wait_warm())
        except Exception as exc:
            batcher.stop()
            raise LoadError(f"the warm-up batch failed: {one_line(exc)}") from exc
        self.metrics.set_model_load_seconds(loaded.load_seconds)
        if loaded.device.type == "cuda":
            utilization, memory_used = cuda_probes(loaded.device.index or 0)
            self.metrics.watch_gpu(utilization=utilization, memory_used=memory_used)
        count = settings.preprocess_process_count(loaded.device.type)
        if count:
            pool = preprocessing.ProcessPool(settings, self._source, count, metrics=self.metrics)
            try:
                pids = pool.start()
            except BaseException:
                pool.close()
                batcher.stop()
                raise
            self._processes = pool
            log.info("preprocessing in %d worker processes %s", count, pids)
        workers = self._processes.pids if self._processes is not None else []
        self._plan = memory.plan_memory(
            settings,
            limit_bytes=memory.memory_limit(settings.memory_limit_bytes),
            # the worker processes' own memory (torch, processors) is the model's neighbour
            baseline_bytes=memory.resident_bytes() + sum(map(memory.resident_bytes, workers)),
            sample_bytes=max((memory.data_bytes(s.data) for s in warmup.samples), default=0),
            decoders=len(workers) or None,
        )
        (log.info if self._plan.fits else log.warning)("%s", self._plan.describe())
        memory.settle_heap()
        self._task, self._batcher = task, batcher
        self._state = ModelState.READY
        log.info(
            "model %s ready: %s, loaded in %.2f s, warm-up %.2f s",
            settings.model_name,
            loaded.describe(),
            loaded.load_seconds,
            time.perf_counter() - warm_started,
        )

    async def close(self) -> None:
        """Stop the batcher (after what it runs) and the preprocessing worker processes."""
        if self._batcher is not None:
            await asyncio.to_thread(self._batcher.stop)
        if self._processes is not None:
            self._processes.close()
        if self._state is ModelState.READY:
            memory.release_heap()

    def live(self) -> bool:
        """The event loop answers (we are here) and a started batcher is neither dead nor stuck."""
        if self._state is ModelState.FAILED:
            return False
        return self._batcher is None or self._batcher.healthy()

    def not_ready_reason(self) -> str | None:
        """None when the model is loaded, warmed up and its batcher alive."""
        if self._state is ModelState.LOADING:
            return "the model is loading"
        if self._state is ModelState.FAILED:
            return f"the model failed to load: {self._failure}"
        if self._batcher is None or not self._batcher.healthy():
            return "the batcher is not running"
        return None

    def running(self) -> tuple[Task, Batcher]:
        """The task and batcher of a loaded model; ``NotReady`` before."""
        if self._task is None or self._batcher is None:
            raise NotReady(self.not_ready_reason() or "the model is loading")
        return self._task, self._batcher


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


def thread_share(settings: RuntimeSettings, loaded: loading.LoadedModel) -> ThreadShare | None:
    """The forward pass's torch threads on a CPU device: all of them alone, fewer beside
    decoding (``batching.forward_threads``). Decoding threads share one GIL, so they take
    about one core; worker processes one each. None where torch's threads are not the
    forward pass's (a GPU, ONNX Runtime's own pool) or there is nothing to share."""
    if loaded.device.type != "cpu" or settings.backend == contract.Backend.ONNXRUNTIME:
        return None
    import torch

    full = torch.get_num_threads()
    processes = settings.preprocess_process_count(loaded.device.type)
    decoding_cores = min(processes, full - 1) if processes else 1
    shared = max(1, full - decoding_cores)
    if shared >= full:
        return None
    return ThreadShare(
        full=full,
        shared=shared,
        apply=torch.set_num_threads,
        # with worker processes, decoding is not in this process's threads
        exclusive=not processes and full >= available_cpus(),
    )


def _warmup_request(task: str) -> InferRequest:
    body = orjson.dumps(contract.smoke_test_request(task))
    return protocol.parse_infer_request(body, max_items=16)
