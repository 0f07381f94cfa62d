"""Admission and draining: the bounded queue (slots and the admitted-bytes budget of the memory
plan), the receive budget for bodies still arriving, and waiting for the last request on
shutdown. Refusals are ``Draining`` / ``NotReady`` (503) and ``QueueFull`` (429)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from mmop.runtime import memory
from mmop.runtime.errors import Draining, NotReady, QueueFull
from mmop.runtime.metrics import Metrics

RETRY_AFTER_SECONDS: Final = 1


class Admission:
    """A slot in the bounded queue, held from admission until the answer is ready, with the
    request's worst-case memory cost counted against the plan's admitted-bytes budget."""

    __slots__ = ("_control", "_released", "admitted_at", "cost")

    def __init__(self, control: AdmissionControl, admitted_at: float, cost: int = 0) -> None:
        self._control = control
        self.admitted_at = admitted_at
        self.cost = cost
        self._released = False

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._released:
            self._released = True
            self._control._release(self.cost)


class Receipt:
    """Bytes of one request body received so far, counted against the receive budget until
    the request is admitted or refused (then its body is the queue's to bound)."""

    __slots__ = ("_control", "received")

    def __init__(self, control: AdmissionControl) -> None:
        self._control = control
        self.received = 0

    def add(self, size: int) -> None:
        """Count ``size`` more bytes; ``QueueFull`` when bodies in flight would exceed it."""
        self._control._reserve(size)
        self.received += size

    def __enter__(self) -> Receipt:
        self._control.metrics.add_receiving(1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._control.metrics.add_receiving(-1)
        self._control._unreserve(self.received)
        self.received = 0


class AdmissionControl:
    """The queue in front of the model. ``plan`` gives the memory plan in force and
    ``not_ready`` why the model cannot answer now (None when it can)."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        plan: Callable[[], memory.MemoryPlan],
        not_ready: Callable[[], str | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self._plan = plan
        self._not_ready = not_ready
        self._clock = clock
        self._inflight = 0
        self._admitted_bytes = 0
        self._receiving = 0
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def check_capacity(self) -> None:
        """Refuse at once what ``admit`` would refuse now (draining 503, not ready 503, full
        429), without taking a slot: adapters call it before receiving a body."""
        if self._draining:
            raise Draining("the server is shutting down")
        reason = self._not_ready()
        if reason is not None:
            raise NotReady(reason)
        limit = self._plan().queue_size
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
        limit = self._plan().receive_bytes
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
        plan = self._plan()
        cost = plan.request_cost(body_bytes) if body_bytes else 0
        budget = plan.admit_bytes
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
