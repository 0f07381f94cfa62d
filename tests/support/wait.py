"""Polling with a deadline, the one way tests wait for something: ``wait_until`` (sync) and
``wait_until_async`` return the probe's first truthy value and fail the test with the last value
seen when the deadline passes; ``never`` fails as soon as a probe turns truthy in a window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _timed_out(within: float, what: str, last: object) -> AssertionError:
    return AssertionError(f"timed out after {within:g} s waiting for {what}; last value: {last!r}")


def wait_until(
    probe: Callable[[], T], *, within: float, what: str = "condition", every: float = 0.25
) -> T:
    """Call ``probe`` every ``every`` seconds until it returns something truthy; return that."""
    deadline = time.monotonic() + within
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(within, what, last)
        time.sleep(every)


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    *,
    within: float = 30,
    what: str = "condition",
    every: float = 0.25,
) -> T:
    """``wait_until`` for a coroutine probe, sleeping on the event loop between tries."""
    deadline = time.monotonic() + within
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(within, what, last)
        await asyncio.sleep(every)


def never(probe: Callable[[], object], *, during: float, what: str, every: float = 0.25) -> None:
    """Check ``probe`` every ``every`` seconds for ``during`` seconds and fail as soon as it is
    truthy (Gomega's ``Consistently``): a negative check that watches the whole window instead
    of looking once after a sleep."""
    deadline = time.monotonic() + during
    while True:
        seen = probe()
        if seen:
            raise AssertionError(f"{what} (seen: {seen!r})")
        if time.monotonic() >= deadline:
            return
        time.sleep(every)


async def never_async(
    probe: Callable[[], object], *, during: float, what: str, every: float = 0.01
) -> None:
    """``never`` on the event loop: other tasks run between the checks."""
    deadline = time.monotonic() + during
    while True:
        seen = probe()
        if seen:
            raise AssertionError(f"{what} (seen: {seen!r})")
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(every)


Waiter = Callable[..., Any]
