"""Batch forming (pure) and the batch worker with a fake model: no server, no torch model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from mmop.runtime.batching import (
    BatchConfig,
    Batcher,
    ThreadShare,
    batch_wait,
    collate,
    forward_threads,
    split_halves,
)
from mmop.runtime.errors import InferenceFailed, NotReady, QueueTimeout
from tests.support.wait import never_async, wait_until_async


@dataclass
class Waiting:
    admitted_at: float
    cancelled: bool = False
    name: str = ""


class TestBatchWait:
    def test_a_lone_request_on_an_idle_worker_runs_at_once(self) -> None:
        # issue 13: no batching tax when idle (its samples arrived together, nothing decoding)
        lone = {"oldest_enqueued_at": 10.0, "newest_enqueued_at": 10.0, "now": 10.0}
        assert batch_wait(waiting=3, max_batch_size=8, max_delay=0.5, **lone) == 0.0
        assert batch_wait(waiting=1, max_batch_size=8, max_delay=0.5, free_since=9.0, **lone) == 0.0

    def test_under_load_a_partial_batch_still_waits(self) -> None:
        common = {"waiting": 1, "oldest_enqueued_at": 10.0, "now": 10.0, "max_batch_size": 8}
        # another request is being decoded: it is company worth waiting for
        wait = batch_wait(max_delay=0.5, newest_enqueued_at=10.0, incoming=1, **common)
        assert wait == pytest.approx(0.5)
        # it arrived while a forward pass ran (the worker was busy): wait from the pass's end
        wait = batch_wait(max_delay=0.5, newest_enqueued_at=10.0, free_since=10.1, **common)
        assert wait == pytest.approx(0.6)
        # the previous batch served several requests: their clients' next ones come together
        wait = batch_wait(
            max_delay=0.5, newest_enqueued_at=10.0, previous_batch_requests=8, **common
        )
        assert wait == pytest.approx(0.5)
        # two requests queued
        wait = batch_wait(
            waiting=2,
            oldest_enqueued_at=10.0,
            newest_enqueued_at=10.2,
            now=10.2,
            max_batch_size=8,
            max_delay=0.5,
        )
        assert wait == pytest.approx(0.3)

    def test_full_batch_dispatches_at_once(self) -> None:
        assert (
            batch_wait(
                waiting=4, oldest_enqueued_at=10.0, now=10.0, max_batch_size=4, max_delay=0.5
            )
            == 0.0
        )

    def test_partial_batch_waits_for_the_rest_of_the_delay(self) -> None:
        wait = batch_wait(
            waiting=1, oldest_enqueued_at=10.0, now=10.2, max_batch_size=4, max_delay=0.5
        )
        assert wait == pytest.approx(0.3)

    def test_delay_counts_from_the_oldest_sample(self) -> None:
        assert (
            batch_wait(
                waiting=2, oldest_enqueued_at=10.0, now=11.0, max_batch_size=4, max_delay=0.5
            )
            == 0.0
        )

    def test_zero_delay_never_waits(self) -> None:
        assert (
            batch_wait(
                waiting=1, oldest_enqueued_at=10.0, now=10.0, max_batch_size=8, max_delay=0.0
            )
            == 0.0
        )

    def test_delay_counts_from_when_the_worker_became_free(self) -> None:
        # the sample waited through a forward pass that ended at 11.0: it gets its delay now
        wait = batch_wait(
            waiting=1,
            oldest_enqueued_at=10.0,
            now=11.1,
            max_batch_size=4,
            max_delay=0.5,
            free_since=11.0,
        )
        assert wait == pytest.approx(0.4)

    def test_without_requests_being_decoded_the_newest_sample_does_not_extend(self) -> None:
        wait = batch_wait(
            waiting=2,
            oldest_enqueued_at=10.0,
            now=10.4,
            max_batch_size=4,
            max_delay=0.5,
            newest_enqueued_at=10.35,
            arrival_gap=1.0,
        )
        assert wait == pytest.approx(0.1)

    def test_requests_being_decoded_extend_the_wait_from_the_newest_arrival(self) -> None:
        wait = batch_wait(
            waiting=2,
            oldest_enqueued_at=10.0,
            now=10.6,
            max_batch_size=4,
            max_delay=0.5,
            incoming=2,
            newest_enqueued_at=10.4,
            arrival_gap=0.3,
        )
        assert wait == pytest.approx(0.3)  # 10.4 + max(0.5, 0.3) - 10.6

    def test_a_slow_decode_widens_the_arrival_gap(self) -> None:
        wait = batch_wait(
            waiting=1,
            oldest_enqueued_at=10.0,
            now=10.6,
            max_batch_size=4,
            max_delay=0.1,
            incoming=1,
            newest_enqueued_at=10.0,
            arrival_gap=1.0,
        )
        assert wait == pytest.approx(0.4)

    def test_extension_ends_once_arrivals_stop(self) -> None:
        assert (
            batch_wait(
                waiting=3,
                oldest_enqueued_at=10.0,
                now=12.0,
                max_batch_size=8,
                max_delay=0.5,
                incoming=5,
                newest_enqueued_at=10.5,
                arrival_gap=1.0,
            )
            == 0.0
        )

    def test_zero_delay_ignores_requests_being_decoded(self) -> None:
        assert (
            batch_wait(
                waiting=1,
                oldest_enqueued_at=10.0,
                now=10.0,
                max_batch_size=8,
                max_delay=0.0,
                incoming=3,
                newest_enqueued_at=10.0,
                arrival_gap=1.0,
            )
            == 0.0
        )

    def test_nothing_waiting_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="nothing"):
            batch_wait(waiting=0, oldest_enqueued_at=0, now=0, max_batch_size=1, max_delay=0)


class TestCollate:
    def test_takes_at_most_max_batch_size_in_arrival_order(self) -> None:
        queue = [Waiting(1.0, name=str(i)) for i in range(5)]
        result = collate(queue, max_batch_size=3, now=2.0, queue_timeout=30)
        assert [w.name for w in result.batch] == ["0", "1", "2"]
        assert result.expired == []
        assert result.consumed == 3

    def test_drops_cancelled_without_counting_them_in_the_batch(self) -> None:
        queue = [Waiting(1.0, name="a"), Waiting(1.0, True, "gone"), Waiting(1.0, name="b")]
        result = collate(queue, max_batch_size=2, now=2.0, queue_timeout=30)
        assert [w.name for w in result.batch] == ["a", "b"]
        assert result.consumed == 3

    def test_sets_expired_aside(self) -> None:
        queue = [Waiting(0.0, name="old"), Waiting(9.0, name="new")]
        result = collate(queue, max_batch_size=8, now=10.0, queue_timeout=5.0)
        assert [w.name for w in result.expired] == ["old"]
        assert [w.name for w in result.batch] == ["new"]
        assert result.consumed == 2

    def test_expired_do_not_take_batch_slots(self) -> None:
        queue = [Waiting(0.0, name="old"), Waiting(9.0, name="a"), Waiting(9.0, name="b")]
        result = collate(queue, max_batch_size=1, now=10.0, queue_timeout=5.0)
        assert [w.name for w in result.batch] == ["a"]
        assert [w.name for w in result.expired] == ["old"]
        assert result.consumed == 2

    def test_empty_queue(self) -> None:
        result = collate([], max_batch_size=4, now=0.0, queue_timeout=1.0)
        assert (result.batch, result.expired, result.consumed) == ([], [], 0)

    def test_rejects_a_zero_batch_size(self) -> None:
        with pytest.raises(ValueError, match="max_batch_size"):
            collate([], max_batch_size=0, now=0.0, queue_timeout=1.0)


def test_split_halves() -> None:
    assert split_halves([1, 2, 3, 4, 5]) == ([1, 2], [3, 4, 5])
    assert split_halves([1]) == ([], [1])


def test_batch_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchConfig(max_batch_size=0, max_delay=0.0, queue_timeout=1.0)
    with pytest.raises(ValueError, match="queue_timeout"):
        BatchConfig(max_batch_size=1, max_delay=0.0, queue_timeout=0.0)


class TestForwardThreads:
    measured = {"full": 4, "shared": 3, "decoding": 2}

    def test_a_forward_light_model_leaves_a_core_to_decoding(self) -> None:
        threads = forward_threads(forward_seconds=0.0001, decode_seconds=0.003, **self.measured)
        assert threads == 3

    def test_a_forward_heavy_model_keeps_every_thread(self) -> None:
        threads = forward_threads(forward_seconds=0.05, decode_seconds=0.005, **self.measured)
        assert threads == 4

    def test_a_model_lighter_than_decoding_only_on_every_thread_keeps_them(self) -> None:
        # 2.5 ms < 3 ms of decoding on 4 threads, but about 3.3 ms on the 3 it would get
        threads = forward_threads(forward_seconds=0.0025, decode_seconds=0.003, **self.measured)
        assert threads == 4

    def test_alone_or_unmeasured_the_forward_pass_has_every_thread(self) -> None:
        light = {"full": 4, "shared": 3, "forward_seconds": 0.0001, "decode_seconds": 0.003}
        assert forward_threads(decoding=0, **light) == 4
        assert forward_threads(full=4, shared=3, decoding=2, decode_seconds=None,
                               forward_seconds=0.0001) == 4  # fmt: skip
        assert forward_threads(full=4, shared=3, decoding=2, decode_seconds=0.003,
                               forward_seconds=None) == 4  # fmt: skip


# --- the worker ---------------------------------------------------------------------------------


class Recorder:
    """A fake model: doubles numbers, remembers batch sizes, can fail on demand."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.observed: list[int] = []
        self.waits: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0  # forward passes entered (counted before the gate)

    def forward(self, samples: list[int]) -> list[int]:
        self.calls += 1
        self.gate.wait()
        self.batches.append(list(samples))
        if -1 in samples:
            raise ValueError("poison")
        return [2 * s for s in samples]

    def observe_batch(self, *, size: int, seconds: float) -> None:
        self.observed.append(size)

    def observe_queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _until(probe: Callable[[], object], what: str) -> None:
    """Poll ``probe`` (a batcher or recorder state) until it holds; 5 s at most."""

    async def check() -> object:
        return probe()

    await wait_until_async(check, within=5, what=what, every=0.005)


def _batcher(recorder: Recorder, **overrides: float) -> Batcher:
    config = BatchConfig(
        max_batch_size=int(overrides.get("max_batch_size", 4)),
        max_delay=overrides.get("max_delay", 0.05),
        queue_timeout=overrides.get("queue_timeout", 10.0),
        stuck_after=overrides.get("stuck_after", 60.0),
    )
    return Batcher(recorder.forward, config=config, observer=recorder)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def test_results_come_back_to_their_own_requests(recorder: Recorder) -> None:
    batcher = _batcher(recorder)
    batcher.start()
    try:
        now = time.monotonic()
        results = await asyncio.gather(
            *(batcher.submit([i, i + 100], admitted_at=now) for i in range(6))
        )
    finally:
        batcher.stop()
    assert results == [[2 * i, 2 * (i + 100)] for i in range(6)]
    assert max(len(b) for b in recorder.batches) <= 4
    assert recorder.observed == [len(b) for b in recorder.batches]
    assert len(recorder.waits) == 12


async def test_concurrent_requests_share_a_batch(recorder: Recorder) -> None:
    recorder.gate.clear()  # hold the worker in its first batch while the others queue up
    batcher = _batcher(recorder, max_batch_size=8, max_delay=0.0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit([0], admitted_at=time.monotonic()))
        await _until(lambda: recorder.calls == 1, "the worker in its first batch")
        rest = [
            asyncio.ensure_future(batcher.submit([i], admitted_at=time.monotonic()))
            for i in range(1, 6)
        ]
        await _until(lambda: batcher.waiting == 5, "the other five queued")
        recorder.gate.set()
        assert await first == [0]
        assert [await r for r in rest] == [[2 * i] for i in range(1, 6)]
    finally:
        batcher.stop()
    assert recorder.batches[1] == [1, 2, 3, 4, 5]


async def test_warmup_runs_first_and_is_not_observed(recorder: Recorder) -> None:
    batcher = _batcher(recorder)
    batcher.start(warmup=[7, 8])
    try:
        assert batcher.wait_warm(5) == [14, 16]
        assert recorder.observed == []
        assert batcher.healthy()
    finally:
        batcher.stop()


async def test_failed_warmup_is_reported(recorder: Recorder) -> None:
    batcher = _batcher(recorder)
    batcher.start(warmup=[-1])
    with pytest.raises(ValueError, match="poison"):
        batcher.wait_warm(5)
    assert not batcher.healthy()


async def test_a_poison_sample_fails_only_its_own_request(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = _batcher(recorder, max_batch_size=8, max_delay=0.0)
    batcher.start()
    try:
        blocker = asyncio.ensure_future(batcher.submit([0], admitted_at=time.monotonic()))
        await _until(lambda: recorder.calls == 1, "the worker in its first batch")
        good = asyncio.ensure_future(batcher.submit([1, 2], admitted_at=time.monotonic()))
        bad = asyncio.ensure_future(batcher.submit([3, -1], admitted_at=time.monotonic()))
        other = asyncio.ensure_future(batcher.submit([4], admitted_at=time.monotonic()))
        await _until(lambda: batcher.waiting == 5, "five samples queued")
        recorder.gate.set()
        await blocker
        assert await good == [2, 4]
        assert await other == [8]
        with pytest.raises(InferenceFailed):
            await bad
    finally:
        batcher.stop()
    assert [1, 2, 3, -1, 4] in recorder.batches  # tried together first, then split


async def test_cuda_oom_splits_the_batch_in_halves(recorder: Recorder) -> None:
    sizes: list[int] = []

    def forward(samples: list[int]) -> list[int]:
        sizes.append(len(samples))
        if len(samples) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [s + 1 for s in samples]

    gate = threading.Event()
    entered: list[int] = []

    def gated(samples: list[int]) -> list[int]:
        entered.append(len(samples))
        gate.wait()
        return forward(samples)

    config = BatchConfig(max_batch_size=8, max_delay=0.0, queue_timeout=10.0)
    batcher = Batcher(gated, config=config)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit([0], admitted_at=time.monotonic()))
        await _until(lambda: entered, "the worker in its first batch")
        tasks = [
            asyncio.ensure_future(batcher.submit([i], admitted_at=time.monotonic()))
            for i in range(8)
        ]
        await _until(lambda: batcher.waiting == 8, "eight samples queued")
        gate.set()
        assert await first == [1]
        assert [await t for t in tasks] == [[i + 1] for i in range(8)]
    finally:
        batcher.stop()
    assert sizes[1:] == [8, 4, 2, 2, 4, 2, 2]


async def test_requests_older_than_the_queue_timeout_get_504(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = _batcher(recorder, max_batch_size=1, max_delay=0.0, queue_timeout=0.2)
    batcher.start()
    try:
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(batcher.submit([1], admitted_at=time.monotonic()))
        await _until(lambda: recorder.calls == 1, "the worker running the first request")
        waiting = asyncio.ensure_future(batcher.submit([2], admitted_at=time.monotonic()))
        with pytest.raises(QueueTimeout, match="queue"):
            await waiting
        recorder.gate.set()
        assert await running == [2]  # started before its deadline: it finishes
        assert loop.is_running()
    finally:
        recorder.gate.set()
        batcher.stop()
    assert [2] not in recorder.batches


async def test_stuck_forward_makes_the_batcher_unhealthy(recorder: Recorder) -> None:
    batcher = _batcher(recorder, stuck_after=0.1)
    batcher.start()
    try:
        batcher.wait_warm(5)
        assert batcher.healthy()
        recorder.gate.clear()
        pending = asyncio.ensure_future(batcher.submit([1], admitted_at=time.monotonic()))
        await _until(lambda: not batcher.healthy(), "a stuck forward to make the batcher unhealthy")
        recorder.gate.set()
        assert await pending == [2]
        assert batcher.healthy()
    finally:
        recorder.gate.set()
        batcher.stop()


class Fatal(BaseException):
    pass


async def test_a_dead_worker_is_unhealthy_and_fails_its_requests() -> None:
    def forward(samples: list[int]) -> list[int]:
        raise Fatal("worker killed")

    batcher = Batcher(forward, config=BatchConfig(max_batch_size=2, max_delay=0.0, queue_timeout=5))
    batcher.start()
    batcher.wait_warm(5)
    with pytest.raises(NotReady):
        await batcher.submit([1], admitted_at=time.monotonic())
    await _until(lambda: not batcher.healthy(), "the dead worker to be unhealthy")
    with pytest.raises(NotReady):
        await batcher.submit([2], admitted_at=time.monotonic())


async def test_cancelled_requests_are_skipped(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = _batcher(recorder, max_batch_size=8, max_delay=0.0)
    batcher.start()
    try:
        blocker = asyncio.ensure_future(batcher.submit([0], admitted_at=time.monotonic()))
        await _until(lambda: recorder.calls == 1, "the worker in its first batch")
        cancelled = asyncio.ensure_future(batcher.submit([5], admitted_at=time.monotonic()))
        kept = asyncio.ensure_future(batcher.submit([6], admitted_at=time.monotonic()))
        await _until(lambda: batcher.waiting == 2, "two requests queued")
        cancelled.cancel()
        await _until(cancelled.done, "the cancellation to land")
        recorder.gate.set()
        await blocker
        assert await kept == [12]
    finally:
        batcher.stop()
    assert all(5 not in batch for batch in recorder.batches)


async def test_stop_fails_what_still_waits(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = _batcher(recorder, max_batch_size=1, max_delay=0.0)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit([1], admitted_at=time.monotonic()))
    await _until(lambda: recorder.calls == 1, "the worker running the first request")
    waiting = asyncio.ensure_future(batcher.submit([2], admitted_at=time.monotonic()))
    await _until(lambda: batcher.waiting == 1, "the second request queued")
    stopper = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
    await _until(lambda: batcher.stopping, "stop() called while the first batch runs")
    recorder.gate.set()
    await stopper
    assert await running == [2]
    with pytest.raises(NotReady):
        await waiting


async def test_a_request_being_decoded_is_waited_for(recorder: Recorder) -> None:
    # the delay alone (50 ms) would dispatch the first sample alone; a second request is still
    # decoding and decodes take ~0.4 s here, so the worker waits for it: one batch of two
    batcher = _batcher(recorder, max_batch_size=8, max_delay=0.05)
    batcher.start()
    try:
        with batcher.incoming() as earlier:  # teaches the batcher how long a decode takes
            samples = earlier.timed(lambda: time.sleep(0.4) or [0])()
            await batcher.submit(samples, admitted_at=time.monotonic(), ticket=earlier)
        with batcher.incoming() as slow:
            first = asyncio.ensure_future(batcher.submit([1], admitted_at=time.monotonic()))
            await _until(lambda: batcher.waiting == 1, "the first sample queued")
            # well past the first sample's own delay (50 ms), it is still held for the other
            await never_async(
                lambda: recorder.batches != [[0]],
                during=0.15,
                what="the first sample dispatched alone while another request decodes",
            )
            second = await batcher.submit([2], admitted_at=time.monotonic(), ticket=slow)
        assert await first == [2]
        assert second == [4]
    finally:
        batcher.stop()
    assert recorder.batches == [[0], [1, 2]]


async def test_a_request_that_fails_to_decode_stops_being_waited_for(recorder: Recorder) -> None:
    batcher = _batcher(recorder, max_batch_size=8, max_delay=0.05)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit([1], admitted_at=time.monotonic()))

        async def decode_fails() -> None:
            with batcher.incoming():
                assert batcher.decoding == 1
                await asyncio.sleep(0.1)
                raise ValueError("bad image")

        with pytest.raises(ValueError, match="bad image"):
            await decode_fails()
        assert batcher.decoding == 0
        assert await asyncio.wait_for(first, 5) == [2]
        with batcher.incoming() as ticket:
            assert await batcher.submit([], admitted_at=time.monotonic(), ticket=ticket) == []
            assert batcher.decoding == 0  # an empty request retires its ticket at once
    finally:
        batcher.stop()
    assert recorder.batches == [[1]]


def _threads_batcher(recorder: Recorder, *, forward_seconds: float) -> tuple[Batcher, list[int]]:
    """A batcher whose fake model takes ``forward_seconds`` per batch and records the threads
    it was given (``ThreadShare(full=4, shared=3)``)."""
    current = [4]
    seen: list[int] = []

    def forward(samples: list[int]) -> list[int]:
        seen.append(current[0])
        time.sleep(forward_seconds)
        return recorder.forward(samples)

    def apply(threads: int) -> None:
        current[0] = threads

    config = BatchConfig(max_batch_size=8, max_delay=0.01, queue_timeout=10.0)
    share = ThreadShare(full=4, shared=3, apply=apply)
    return Batcher(forward, config=config, observer=recorder, threads=share), seen


async def _decode_then_run_beside_another(batcher: Batcher, *, decode_seconds: float) -> None:
    """One request decoded (teaching the decode time), one run while another decodes, and one
    run alone."""
    with batcher.incoming() as ticket:
        samples = ticket.timed(lambda: time.sleep(decode_seconds) or [1])()
        await batcher.submit(samples, admitted_at=time.monotonic(), ticket=ticket)
    with batcher.incoming():  # another request being decoded, never queued
        await batcher.submit([2], admitted_at=time.monotonic())
    await batcher.submit([3], admitted_at=time.monotonic())


async def _threads_seen(
    recorder: Recorder, *, forward_seconds: float, decode_seconds: float
) -> list[int]:
    """The threads each forward pass got: warm-up, then ``_decode_then_run_beside_another``."""
    batcher, seen = _threads_batcher(recorder, forward_seconds=forward_seconds)
    batcher.start(warmup=[0])
    try:
        batcher.wait_warm(5)
        await _decode_then_run_beside_another(batcher, decode_seconds=decode_seconds)
    finally:
        batcher.stop()
    return seen


async def test_a_forward_light_model_shares_the_cores_while_requests_decode(
    recorder: Recorder,
) -> None:
    seen = await _threads_seen(recorder, forward_seconds=0.0, decode_seconds=0.05)
    # warm-up and its timed rerun, the first request alone, the second beside a decoding
    # request (one thread left to it), the third alone again
    assert seen == [4, 4, 4, 3, 4]
    assert recorder.batches[2:] == [[1], [2], [3]]


async def test_a_forward_heavy_model_keeps_its_threads_beside_decoding(
    recorder: Recorder,
) -> None:
    seen = await _threads_seen(recorder, forward_seconds=0.05, decode_seconds=0.005)
    assert seen == [4, 4, 4, 4, 4]


@pytest.mark.parametrize(
    ("exclusive", "decodes", "waits"),
    [
        (True, [0.0], True),  # forward-heavy, torch's threads on every core: decoding waits
        (False, [0.0], False),  # the threads leave a core free (or worker processes decode)
        (True, [0.2], False),  # forward-light: decoding would be held up for nothing
        # a decode slowed by contention (the moving average is 0.1 s, above the forward pass's
        # 0.067 s on 3 of 4 threads) does not make a forward-heavy model light: the fastest
        # decode is what decoding costs
        (True, [0.0, 0.5], True),
    ],
)
async def test_decoding_waits_while_a_forward_heavy_batch_has_every_core(
    recorder: Recorder, exclusive: bool, decodes: list[float], waits: bool
) -> None:
    # issue 13, item 2: a decoding thread beside a forward pass on every core oversubscribed
    # them (the small CLIP's forward pass took twice as long at concurrency 64 as at 32)
    long_pass = threading.Event()
    events: list[str] = []

    def forward(samples: list[int]) -> list[int]:
        if samples == [2]:
            long_pass.set()
            time.sleep(0.3)
            events.append("forward done")
        else:
            time.sleep(0.05)  # the warm-up (and its timed rerun) teaches the forward cost
        return recorder.forward(samples)

    config = BatchConfig(max_batch_size=8, max_delay=0.0, queue_timeout=10.0)
    share = ThreadShare(full=4, shared=3, apply=lambda threads: None, exclusive=exclusive)
    batcher = Batcher(forward, config=config, observer=recorder, threads=share)
    batcher.start(warmup=[0])
    try:
        batcher.wait_warm(5)
        for seconds in decodes:  # teach the decode cost
            with batcher.incoming() as first:
                samples = first.timed(lambda s: time.sleep(s) or [1])(seconds)
                await batcher.submit(samples, admitted_at=time.monotonic(), ticket=first)
        running = asyncio.create_task(batcher.submit([2], admitted_at=time.monotonic()))
        assert await asyncio.to_thread(long_pass.wait, 5)
        with batcher.incoming() as ticket:
            decode = ticket.timed(lambda: events.append("decode started") or [3])
            samples = await asyncio.to_thread(decode)
            assert await batcher.submit(samples, admitted_at=time.monotonic(), ticket=ticket)
        await running
    finally:
        batcher.stop()
    if waits:
        assert events == ["forward done", "decode started"]
        assert ticket.decode_seconds is not None and ticket.decode_seconds < 0.2  # not the wait
    else:
        assert events == ["decode started", "forward done"]


@pytest.mark.parametrize(
    ("changes", "device", "expected"),
    [
        ({}, "cpu", (4, 3, True)),  # decoding threads: about one core
        ({"preprocess_processes": 2}, "cpu", (4, 2, False)),  # one core per worker process
        ({"preprocess_processes": 8}, "cpu", (4, 1, False)),  # at least one thread
        ({"backend": "onnxruntime"}, "cpu", None),  # ONNX Runtime has its own pool
        ({}, "cuda", None),  # the forward pass is the GPU's
    ],
)
def test_thread_share_leaves_the_decoding_its_cores(
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, object],
    device: str,
    expected: tuple[int, int, bool] | None,
) -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from mmop.runtime import lifecycle
    from mmop.runtime.lifecycle import thread_share
    from mmop.runtime.settings import RuntimeSettings

    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(lifecycle, "available_cpus", lambda: 4)
    settings = RuntimeSettings(model="/m", task="image-text-embedding", **changes)
    loaded = cast(Any, SimpleNamespace(device=torch.device(device)))
    share = thread_share(settings, loaded)
    assert (None if share is None else (share.full, share.shared, share.exclusive)) == expected
    monkeypatch.setattr(lifecycle, "available_cpus", lambda: 8)
    share = thread_share(settings, loaded)
    assert share is None or not share.exclusive  # torch's threads leave cores free: no wait
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert thread_share(settings, loaded) is None  # one thread: nothing to share
