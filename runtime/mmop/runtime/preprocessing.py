"""A request's preprocessing step (parse, check, decode, preprocess), in threads or processes.

``prepare_infer`` and ``prepare_embeddings`` turn a raw request body into the request and its
samples. The data plane runs them in its decoding pool: threads (``preprocess_processes`` 0,
the default on small pods) or, with ``preprocess_processes`` > 0, a ``ProcessPool`` of worker
processes. One Python process decodes on about one core whatever its thread count: base64,
JSON and the image processors' numpy steps hold the GIL. Each worker process loads the task's
processors (tokenizer, image or feature processor) and a weightless copy of the model (built
from its config on the ``meta`` device: no memory, no download), runs the very same functions,
and sends back the request without its input bytes and the samples; torch tensors over 64 KiB
travel through shared memory (``torch.multiprocessing``'s reductions), so a preprocessed image
is not copied through a pipe; smaller ones are copied, which costs less than sharing them. The
forward pass stays in the serving process, in the batcher's worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from typing import Any, Final, TypeVar

from mmop.runtime import loading, memory, protocol, tasks
from mmop.runtime.errors import (
    InvalidInput,
    LoadError,
    ModelNotFound,
    NotReady,
    detail,
    echo,
    one_line,
)
from mmop.runtime.metrics import Metrics
from mmop.runtime.protocol import EmbeddingsRequest, InferRequest
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks.base import EmbedsItems, Prepared, Task

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a worker may take to start (import torch and transformers, load the processors).
WORKER_START_TIMEOUT: Final = 300.0
COPY_TENSOR_BYTES: Final = 64 * 1024  # a worker's tensors up to this size travel by copy
PARENT_CHECK_SECONDS: Final = 1.0  # how often a worker looks whether the serving process lives


# --- the step itself (any process) ------------------------------------------------------------


def check_model(settings: RuntimeSettings, name: str, version: str | None = None) -> None:
    """404 unless ``name`` (and ``version``, when given) is what this server serves."""
    served = settings.model_name
    if name != served:
        raise ModelNotFound(f"model {echo(name)} is not served here; this server serves {served!r}")
    if version is not None and version != settings.model_version:
        known = repr(settings.model_version) if settings.model_version else "none"
        raise ModelNotFound(f"model {echo(name)} has no version {echo(version)} (served: {known})")


def prepare_infer(
    task: Task, settings: RuntimeSettings, body: bytes, header_length: int | None
) -> tuple[InferRequest, Prepared]:
    """An OIP v2 infer body: parsed, its input and output names checked, preprocessed."""
    request = protocol.parse_infer_request(
        body, header_length=header_length, max_items=settings.max_items_per_request
    )
    signature = task.signature
    names = signature.input_names
    unknown = [name for name in request.inputs if name not in names]
    if unknown:
        raise InvalidInput(
            f"unknown input {echo(unknown[0])}; model {settings.model_name} takes "
            f"{', '.join(names)}"
        )
    outputs = signature.output_names
    for name in request.outputs or ():
        if name not in outputs:
            raise InvalidInput(
                f"unknown output {echo(name)}; model {settings.model_name} produces "
                f"{', '.join(outputs)}"
            )
    return request, _preprocess(task.preprocess, request)


def prepare_embeddings(
    task: Task, settings: RuntimeSettings, body: bytes
) -> tuple[EmbeddingsRequest, Prepared]:
    """An OpenAI ``/v1/embeddings`` body: parsed, checked, preprocessed."""
    request = protocol.parse_embeddings_request(
        body,
        max_items=settings.max_items_per_request,
        max_text_chars=settings.max_text_chars,
    )
    check_model(settings, request.model)
    if not isinstance(task, EmbedsItems):  # serves_embeddings guards the route
        raise InvalidInput(f"model {settings.model_name} does not answer /v1/embeddings")
    if request.dimensions is not None and request.dimensions != task.dims:
        raise InvalidInput(
            f"'dimensions' must be {task.dims} for this model (or left out), "
            f"got {request.dimensions}"
        )
    return request, _preprocess(task.preprocess_items, request.items)


def _preprocess(step: Callable[[Any], Prepared], argument: Any) -> Prepared:
    try:
        return step(argument)
    except (InvalidInput, LoadError):
        raise
    except Exception as exc:
        # Processors raise plain exceptions for inputs they cannot handle (odd image modes,
        # sizes); the input caused it, and the message says what the processor disliked.
        log.warning("preprocessing failed: %s", one_line(exc))
        raise InvalidInput(f"the input could not be preprocessed: {detail(exc)}") from exc


# --- worker processes -------------------------------------------------------------------------

_worker: tuple[Task, RuntimeSettings] | None = None  # set in a worker process by _start_worker
_started: Any = None  # the start barrier of the first pool, in a worker process


def _start_worker(settings: RuntimeSettings, source: loading.ModelSource, started: Any) -> None:
    """Initializer of a worker process: one torch thread, the task without weights."""
    global _worker, _started
    import torch
    import torch.multiprocessing  # registers the shared-memory tensor reductions

    if multiprocessing.parent_process() is not None:  # a spawned worker, not a test calling this
        _exit_with(os.getppid())
        ForkingPickler.register(torch.Tensor, _send_tensor)
    torch.set_num_threads(1)
    # Preprocessing never runs the model: no export, compilation or quantization here (the
    # serving process applies the backend to the real weights).
    settings = settings.model_copy(update={"backend": "eager", "quantization": "none"})
    loaded = loading.load_model(settings, source, weights=False)
    _worker = (tasks.create_task(settings.task, loaded, settings), settings)
    _started = started
    memory.settle_heap()


def _send_tensor(tensor: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """How a worker sends a tensor back: a small one copied through the pipe (as numpy bytes),
    a large one through shared memory. Sharing costs a file and a descriptor passed over a
    socket per tensor: measured 1.3 ms for a 12 KB tensor against 0.2 ms copied, but 1.2 ms
    against 2.6 ms copied at 224x224x3 floats (600 KB)."""
    import torch
    from torch.multiprocessing.reductions import reduce_tensor

    if tensor.device.type == "cpu" and tensor.nbytes <= COPY_TENSOR_BYTES:
        with contextlib.suppress(TypeError):  # a dtype numpy lacks (bfloat16) is shared
            return torch.from_numpy, (tensor.detach().contiguous().numpy(),)
    shared: tuple[Callable[..., Any], tuple[Any, ...]] = reduce_tensor(tensor)  # type: ignore[no-untyped-call]
    return shared


def _exit_with(parent: int, *, every: float = PARENT_CHECK_SECONDS) -> threading.Thread:
    """In a worker process: exit as soon as ``parent`` (the serving process) is gone. A serving
    process killed outright (SIGKILL, a crash) cannot shut its pool down, and a worker waiting
    for its next job would wait for ever, holding its memory. (Not ``PR_SET_PDEATHSIG``: that
    fires when the *thread* that started the worker ends, and the pool starts from a thread.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(0)

    thread = threading.Thread(target=watch, name="mmop-parent-watch", daemon=True)
    thread.start()
    return thread


def _started_job() -> int:
    """Wait at the start barrier: each of the pool's first jobs holds its worker until all are
    started, so every worker has loaded the processors when they return."""
    _started.wait(timeout=WORKER_START_TIMEOUT)
    return os.getpid()


def _infer_job(body: bytes, header_length: int | None) -> tuple[InferRequest, Prepared]:
    assert _worker is not None
    task, settings = _worker
    request, prepared = prepare_infer(task, settings, body, header_length)
    # The input bytes are decoded into the samples; do not send them back.
    return dataclasses.replace(request, inputs={}), prepared


def _embeddings_job(body: bytes) -> tuple[EmbeddingsRequest, Prepared]:
    assert _worker is not None
    task, settings = _worker
    request, prepared = prepare_embeddings(task, settings, body)
    return dataclasses.replace(request, items=[]), prepared


class ProcessPool:
    """``processes`` worker processes (spawned: a forked torch is not safe) that run the
    preprocessing step. A pool whose worker died (killed for memory, a crash in a native
    decoder) is replaced (counted in ``metrics``); the requests it held fail with 503 and their
    clients may retry."""

    def __init__(
        self,
        settings: RuntimeSettings,
        source: loading.ModelSource,
        processes: int,
        *,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.source = source
        self.processes = processes
        self.metrics = metrics
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        self._context = context
        self._started = context.Barrier(processes)
        self._pool = self._new_pool()
        self.pids: list[int] = []

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self.settings, self.source, self._started),
        )

    def start(self) -> list[int]:
        """Start every worker and wait until each has loaded the processors (raises
        ``LoadError``); the process ids of the workers."""
        try:
            futures = [self._pool.submit(_started_job) for _ in range(self.processes)]
            self.pids = sorted({f.result(timeout=WORKER_START_TIMEOUT) for f in futures})
        except BrokenProcessPool as exc:
            raise LoadError(
                "a preprocessing worker process failed to start (see the log above)"
            ) from exc
        except (concurrent.futures.TimeoutError, threading.BrokenBarrierError) as exc:
            raise LoadError(
                f"the preprocessing worker processes did not start within "
                f"{WORKER_START_TIMEOUT:.0f} s"
            ) from exc
        return self.pids

    async def infer(self, body: bytes, header_length: int | None) -> tuple[InferRequest, Prepared]:
        return await self._run(_infer_job, body, header_length)

    async def embeddings(self, body: bytes) -> tuple[EmbeddingsRequest, Prepared]:
        return await self._run(_embeddings_job, body)

    async def _run(self, job: Callable[..., T], *args: Any) -> T:
        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(job, *args))
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise NotReady("a preprocessing worker process died; retry the request") from exc

    def _replace(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # another request replaced it already
            log.error("a preprocessing worker process died; starting a new pool")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self.metrics.count_preprocess_workers_replaced()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
