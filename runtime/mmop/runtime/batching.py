"""Dynamic batching: pure batch forming plus the one worker thread that runs forward passes.

Requests are split into samples (one image, text or audio each) that wait in one FIFO queue.
The worker takes up to ``max_batch_size`` samples, or fewer once ``max_delay`` has passed since
the oldest one arrived (or since the previous batch ended, if later) and no admitted request is
still being decoded, runs the forward pass and hands each request its results. Batch forming
(``batch_wait``, ``collate``) is pure and tested without threads or a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from mmop.runtime.errors import (
    InferenceFailed,
    NotReady,
    QueueTimeout,
    RuntimeFailure,
    one_line,
)

log = logging.getLogger(__name__)

_IDLE_TICK: Final = 1.0  # seconds between liveness ticks of an idle worker
_DECODE_WEIGHT: Final = 0.2  # of the newest decode time in its moving average


# --- pure batch forming ---------------------------------------------------------------------


class Waiting(Protocol):
    """What batch forming needs to know about a queued sample."""

    @property
    def admitted_at(self) -> float: ...

    @property
    def cancelled(self) -> bool: ...


W = TypeVar("W", bound=Waiting)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Collated(Generic[T]):
    batch: list[T]  # to run now, in arrival order
    expired: list[T]  # older than the queue timeout: answer 504
    consumed: int  # how many entries, from the front of the queue, these account for


def batch_wait(
    *,
    waiting: int,
    oldest_enqueued_at: float,
    now: float,
    max_batch_size: int,
    max_delay: float,
    free_since: float | None = None,
    incoming: int = 0,
    newest_enqueued_at: float | None = None,
    arrival_gap: float = 0.0,
    previous_batch_requests: int = 1,
) -> float:
    """Seconds to wait for a fuller batch; 0 means: dispatch now.

    The delay counts from the oldest waiting sample's arrival, or from ``free_since`` (when
    the worker finished its previous batch) if that is later: a sample that waited through a
    forward pass still gets ``max_delay`` for company. While ``incoming`` admitted requests are
    being decoded, their samples are as good as queued: the wait goes on as long as samples
    keep arriving within ``max(max_delay, arrival_gap)`` of the newest one, so requests that
    arrive together run together, not as one early sample followed by all the others.

    No batching tax when idle: one request (all waiting samples arrived together, at
    ``newest_enqueued_at``) that found the worker free, no other request being decoded and a
    previous batch of at most one request runs at once. Under load requests arrive while
    others are decoded or while a forward pass runs, or the previous batch served several
    requests (clients of a full batch send their next requests together, and the first one
    decoded must not run alone), and the delay applies as above.
    """
    if waiting <= 0:
        raise ValueError("nothing is waiting")
    if waiting >= max_batch_size:
        return 0.0
    if (
        incoming == 0
        and previous_batch_requests <= 1
        and newest_enqueued_at == oldest_enqueued_at
        and (free_since is None or oldest_enqueued_at >= free_since)
    ):
        return 0.0
    start = oldest_enqueued_at if free_since is None else max(oldest_enqueued_at, free_since)
    deadline = start + max_delay
    if incoming > 0 and max_delay > 0 and newest_enqueued_at is not None:
        last = newest_enqueued_at if free_since is None else max(newest_enqueued_at, free_since)
        deadline = max(deadline, last + max(max_delay, arrival_gap))
    return max(0.0, deadline - now)


def forward_light(
    *, full: int, shared: int, decode_seconds: float | None, forward_seconds: float | None
) -> bool | None:
    """Whether the model's forward pass, even on ``shared`` threads, costs less per sample than
    decoding one request (``forward_seconds`` at ``full`` threads, times ``full / shared``,
    against ``decode_seconds``). None without both measurements."""
    if decode_seconds is None or forward_seconds is None:
        return None
    # on fewer threads the forward pass takes up to full / shared times longer
    return forward_seconds * full / shared < decode_seconds


def forward_threads(
    *,
    full: int,
    shared: int,
    decoding: int,
    decode_seconds: float | None,
    forward_seconds: float | None,
) -> int:
    """Intra-op threads for the next forward pass on the CPU.

    ``full`` when the forward pass has the cores to itself. While requests are being decoded
    beside it (``decoding`` > 0) and the model is forward-light (``forward_light``), only
    ``shared``: the decoding needs a core, and torch's threads on an oversubscribed core wait
    for each other at every operator (a tiny model's batch then takes 50x longer). A
    forward-heavy model keeps ``full``: its forward pass is the work (and with
    ``ThreadShare.exclusive`` the decoding waits for it). Without both measurements, ``full``.
    """
    if shared >= full or decoding <= 0:
        return full
    light = forward_light(
        full=full, shared=shared, decode_seconds=decode_seconds, forward_seconds=forward_seconds
    )
    return shared if light else full


def collate(
    queue: Sequence[W], *, max_batch_size: int, now: float, queue_timeout: float
) -> Collated[W]:
    """Take the next batch from the front of ``queue`` (like LitServe's ``collate_requests``).

    Cancelled samples (their client went away) are dropped, expired ones are set aside for a
    504, and at most ``max_batch_size`` live samples are taken in arrival order.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    batch: list[W] = []
    expired: list[W] = []
    consumed = 0
    for entry in queue:
        if len(batch) >= max_batch_size:
            break
        consumed += 1
        if entry.cancelled:
            continue
        if now - entry.admitted_at > queue_timeout:
            expired.append(entry)
        else:
            batch.append(entry)
    return Collated(batch, expired, consumed)


def split_halves(items: Sequence[T]) -> tuple[list[T], list[T]]:
    middle = len(items) // 2
    return list(items[:middle]), list(items[middle:])


# --- the worker -----------------------------------------------------------------------------


class BatchObserver(Protocol):
    """Where the worker reports what it does (``metrics.Metrics`` implements it)."""

    def observe_batch(self, *, size: int, seconds: float) -> None: ...

    def observe_queue_wait(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_batch_size: int
    max_delay: float  # seconds
    queue_timeout: float  # seconds
    stuck_after: float = 300.0  # a forward pass longer than this makes the batcher unhealthy

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_delay < 0 or self.queue_timeout <= 0 or self.stuck_after <= 0:
            raise ValueError("max_delay must be >= 0; queue_timeout and stuck_after > 0")


@dataclass(frozen=True, slots=True)
class ThreadShare:
    """The forward pass's CPU threads: ``full`` alone, ``shared`` beside decoding (see
    ``forward_threads``); ``apply`` sets them (``torch.set_num_threads``) in the worker.

    ``exclusive``: ``full`` threads take every CPU the process has, so while a forward-heavy
    model's batch runs on them (``forward_light`` is False), decoding waits for it
    (``Batcher.incoming``): a decoding thread beside them would oversubscribe the cores, and
    torch's threads wait for each other at every operator.
    """

    full: int
    shared: int
    apply: Callable[[int], None]
    exclusive: bool = False


@dataclass(eq=False, slots=True)
class Incoming:
    """One request being decoded: counted by batch forming until its samples are queued."""

    decode_seconds: float | None = None
    done: bool = False
    cores: Callable[[], object] | None = None  # blocks while a batch has every core

    def timed(self, function: Callable[..., T]) -> Callable[..., T]:
        """``function``, recording how long it runs (the decode time batch forming expects).

        It first waits, in its thread, while a forward pass runs on every core (see
        ``ThreadShare.exclusive``); that wait is not decode time.
        """

        def run(*args: Any, **kwargs: Any) -> T:
            if self.cores is not None:
                self.cores()
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.decode_seconds = time.perf_counter() - started

        return run

    async def timed_async(self, awaitable: Awaitable[T]) -> T:
        """``awaitable`` (preprocessing in a worker process), recording how long it takes."""
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.decode_seconds = time.perf_counter() - started


@dataclass(eq=False, slots=True)
class _Job:
    """One request's samples and the future its handler awaits."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Any]]
    admitted_at: float
    results: list[Any]
    remaining: int
    started: bool = False
    cancelled: bool = False
    failed: bool = False


@dataclass(eq=False, slots=True)
class _Entry:
    job: _Job
    index: int
    sample: Any
    enqueued_at: float = field(default=0.0)

    @property
    def admitted_at(self) -> float:
        return self.job.admitted_at

    @property
    def cancelled(self) -> bool:
        return self.job.cancelled or self.job.failed


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a runtime dependency
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Batcher:
    """A bounded-latency batch queue drained by one worker thread.

    ``forward`` gets a list of samples and returns one result per sample, in order. It runs
    only in the worker thread, so models need no locking.
    """

    def __init__(
        self,
        forward: Callable[[list[Any]], Sequence[Any]],
        *,
        config: BatchConfig,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "mmop-batcher",
        threads: ThreadShare | None = None,
    ) -> None:
        self._forward = forward
        self._threads = threads
        self._threads_now = threads.full if threads is not None else 0
        self._forward_seconds: float | None = None  # fastest forward pass seen, per sample
        self._config = config
        self._observer = observer
        self._clock = clock
        self._name = name
        self._queue: deque[_Entry] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._warm = threading.Event()
        self._warm_error: BaseException | None = None
        self._warm_results: list[Any] = []
        self._last_tick = clock()
        self._busy_since: float | None = None
        self._free_since: float | None = None  # when the last batch finished
        self._previous_batch_requests = 1  # requests in the last batch (1: idle so far)
        self._incoming = 0  # requests being decoded, whose samples will join the queue
        self._decode_seconds: float | None = None  # moving average of one request's decode
        # fastest decode seen: what decoding costs uncontended, against the fastest forward
        # pass (``forward_light``); the average grows with the contention it decides about
        self._decode_fastest: float | None = None
        self._cores_free = threading.Event()  # cleared while a batch runs on every core
        self._cores_free.set()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, warmup: list[Any] | None = None) -> None:
        """Start the worker; it first runs ``warmup`` (unobserved) and then serves the queue."""
        if self._thread is not None:
            raise RuntimeError("the batcher is already started")
        self._thread = threading.Thread(
            target=self._main, args=(warmup,), name=self._name, daemon=True
        )
        self._thread.start()

    def wait_warm(self, timeout: float | None = None) -> list[Any]:
        """Block until the warm-up batch is done and return its results; re-raise its error."""
        if not self._warm.wait(timeout):
            raise TimeoutError("the warm-up batch did not finish in time")
        if self._warm_error is not None:
            raise self._warm_error
        return self._warm_results

    def stop(self, *, timeout: float = 10.0) -> None:
        """Finish the running batch, fail what still waits, and end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._cores_free.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def healthy(self) -> bool:
        """The worker thread runs and is neither dead nor stuck in one forward pass."""
        thread = self._thread
        if thread is None or not thread.is_alive() or not self._warm.is_set():
            return False
        now = self._clock()
        busy_since = self._busy_since
        if busy_since is not None:
            return now - busy_since < self._config.stuck_after
        return now - self._last_tick < _IDLE_TICK * 5 + self._config.max_delay

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def stopping(self) -> bool:
        """``stop()`` was called: the running batch finishes, nothing else starts."""
        return self._stopping

    @property
    def decoding(self) -> int:
        """Requests admitted and being decoded, whose samples have not joined the queue yet."""
        return self._incoming

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Incoming]:
        """Count one request as on its way while it is decoded; pass the ticket to ``submit``.

        Batch forming waits (a little) for requests that are still being decoded, so a burst of
        requests fills one batch rather than leaving its first sample to run alone.
        """
        ticket = Incoming(cores=self._cores_free.wait)
        with self._cond:
            self._incoming += 1
        try:
            yield ticket
        finally:
            with self._cond:
                self._retire(ticket)
                self._cond.notify()

    def _retire(self, ticket: Incoming) -> None:
        """Under ``_cond``: the request is no longer on its way (queued, or failed to decode)."""
        if ticket.done:
            return
        ticket.done = True
        self._incoming -= 1
        seconds = ticket.decode_seconds
        if seconds is not None:
            previous = self._decode_seconds
            self._decode_seconds = (
                seconds if previous is None else previous + _DECODE_WEIGHT * (seconds - previous)
            )
            if self._decode_fastest is None or seconds < self._decode_fastest:
                self._decode_fastest = seconds

    # --- the event-loop side ------------------------------------------------------------------

    async def submit(
        self, samples: Sequence[Any], *, admitted_at: float, ticket: Incoming | None = None
    ) -> list[Any]:
        """Queue one request's samples and wait for their results (in order).

        Raises ``QueueTimeout`` when none of the samples started within the queue timeout of
        ``admitted_at``; once one started, the request waits for the rest. ``ticket``: from
        ``incoming()``, retired as the samples join the queue.
        """
        if not samples:
            if ticket is not None:
                with self._cond:
                    self._retire(ticket)
                    self._cond.notify()
            return []
        loop = asyncio.get_running_loop()
        job = _Job(
            loop=loop,
            future=loop.create_future(),
            admitted_at=admitted_at,
            results=[None] * len(samples),
            remaining=len(samples),
        )
        now = self._clock()
        with self._cond:
            if self._stopping or self._thread is None or not self._thread.is_alive():
                raise NotReady("the batcher is not running")
            self._queue.extend(_Entry(job, i, s, now) for i, s in enumerate(samples))
            if ticket is not None:
                self._retire(ticket)
            self._cond.notify()
        try:
            left = admitted_at + self._config.queue_timeout - now
            done, _ = await asyncio.wait({job.future}, timeout=max(left, 0.0))
            if not done:
                with self._cond:
                    if not job.started:
                        job.cancelled = True
                if job.cancelled:
                    raise QueueTimeout(
                        f"the request waited over {self._config.queue_timeout:g} s in the queue"
                    )
            return await job.future
        except asyncio.CancelledError:
            with self._cond:
                job.cancelled = True  # the worker skips what has not started
            raise

    # --- the worker side ----------------------------------------------------------------------

    def _main(self, warmup: list[Any] | None) -> None:
        try:
            if warmup:
                # Unsplit: a warm-up that fails must fail loading, not be retried in halves.
                self._warm_results = list(self._forward(warmup))
                if self._threads is not None:
                    # Timed again, now that lazy initialisation is done: the forward cost
                    # that ``forward_threads`` starts from.
                    started = time.perf_counter()
                    self._forward(warmup)
                    self._forward_seconds = (time.perf_counter() - started) / len(warmup)
        except BaseException as exc:
            self._warm_error = exc
            self._warm.set()
            return
        self._warm.set()
        try:
            while True:
                collated = self._next_batch()
                if collated is None:
                    break
                for entry in collated.expired:
                    self._fail(
                        entry.job,
                        QueueTimeout(
                            f"the request waited over {self._config.queue_timeout:g} s in the queue"
                        ),
                    )
                if collated.batch:
                    self._run_batch(collated.batch)
        except BaseException as exc:
            # Only a BaseException (SystemExit, ...) gets here: the thread ends, liveness turns
            # false and the kubelet restarts the process.
            log.critical("the batch worker died: %s", one_line(exc, typed=True))
        finally:
            self._fail_waiting(NotReady("the batcher is not running"))

    def _next_batch(self) -> Collated[_Entry] | None:
        config = self._config
        with self._cond:
            while not self._queue and not self._stopping:
                self._last_tick = self._clock()
                self._cond.wait(_IDLE_TICK)
            while not self._stopping:
                self._last_tick = now = self._clock()
                decode = self._decode_seconds
                wait = batch_wait(
                    waiting=len(self._queue),
                    oldest_enqueued_at=self._queue[0].enqueued_at,
                    now=now,
                    max_batch_size=config.max_batch_size,
                    max_delay=config.max_delay,
                    free_since=self._free_since,
                    previous_batch_requests=self._previous_batch_requests,
                    incoming=self._incoming,
                    newest_enqueued_at=self._queue[-1].enqueued_at,
                    # requests decode in parallel; one decode time between arrivals is slow
                    arrival_gap=1.5 * decode if decode is not None else 0.0,
                )
                if wait <= 0:
                    break
                self._cond.wait(wait)
            if self._stopping:
                return None
            now = self._clock()
            collated = collate(
                self._queue,
                max_batch_size=config.max_batch_size,
                now=now,
                queue_timeout=config.queue_timeout,
            )
            for _ in range(collated.consumed):
                self._queue.popleft()
            for entry in collated.batch:
                entry.job.started = True
            if collated.batch:
                self._busy_since = now
                self._previous_batch_requests = len({id(e.job) for e in collated.batch})
                self._share_threads()
            return collated

    def _share_threads(self) -> None:
        """Under ``_cond``, before a batch: set the forward pass's threads (``forward_threads``)."""
        share = self._threads
        if share is None:
            return
        measured = {
            "decode_seconds": self._decode_fastest,
            "forward_seconds": self._forward_seconds,
        }
        wanted = forward_threads(
            full=share.full, shared=share.shared, decoding=self._incoming, **measured
        )
        if wanted != self._threads_now:
            share.apply(wanted)
            self._threads_now = wanted
        # a forward-heavy model's batch on every core: decoding waits (``ThreadShare``); a
        # forward-light one's would only hold the decoding up, for a pass shorter than it
        if (
            share.exclusive
            and wanted >= share.full
            and forward_light(full=share.full, shared=share.shared, **measured) is False
        ):
            self._cores_free.clear()

    def _run_batch(self, batch: list[_Entry]) -> None:
        start = self._clock()
        if self._observer is not None:
            for entry in batch:
                self._observer.observe_queue_wait(start - entry.enqueued_at)
        try:
            outcomes = self._run_split([entry.sample for entry in batch])
        except BaseException:
            for entry in batch:
                self._fail(entry.job, NotReady("the batcher stopped during this request"))
            raise
        finally:
            self._busy_since = None
            self._free_since = self._clock()
            self._cores_free.set()
        for entry, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _Failure):
                self._fail(entry.job, outcome.error)
            else:
                self._deliver(entry, outcome)

    def _run_split(self, samples: list[Any]) -> list[Any]:
        """Run ``samples``; on an error, retry each half so one bad input or a CUDA OOM
        fails only the samples that cannot run."""
        start = self._clock()
        started = time.perf_counter()
        try:
            results = list(self._forward(samples))
            if len(results) != len(samples):
                raise RuntimeError(f"forward returned {len(results)} results for {len(samples)}")
        except Exception as exc:
            oom = _is_out_of_memory(exc)
            if oom:
                _release_cached_memory()
            if len(samples) > 1:
                log.warning(
                    "batch of %d failed (%s); retrying it in halves",
                    len(samples),
                    "CUDA out of memory" if oom else one_line(exc, typed=True),
                )
                first, second = split_halves(samples)
                return self._run_split(first) + self._run_split(second)
            message = "out of GPU memory for this input" if oom else "inference failed"
            log.error("%s: %s", message, one_line(exc, typed=True))
            error = exc if isinstance(exc, RuntimeFailure) else InferenceFailed(message)
            return [_Failure(error)]
        per_sample = (time.perf_counter() - started) / len(samples)
        if self._forward_seconds is None or per_sample < self._forward_seconds:
            self._forward_seconds = per_sample
        if self._observer is not None and self._warm.is_set():
            self._observer.observe_batch(size=len(samples), seconds=self._clock() - start)
        return results

    def _deliver(self, entry: _Entry, result: Any) -> None:
        job = entry.job
        job.results[entry.index] = result
        job.remaining -= 1
        if job.remaining == 0 and not job.failed:
            job.loop.call_soon_threadsafe(_resolve, job.future, job.results, None)

    def _fail(self, job: _Job, error: BaseException) -> None:
        if job.failed:
            return
        job.failed = True
        job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    def _fail_waiting(self, error: BaseException) -> None:
        with self._cond:
            entries = list(self._queue)
            self._queue.clear()
        for entry in entries:
            self._fail(entry.job, error)


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the handler gave up (client gone, timeout)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
