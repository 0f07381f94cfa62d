"""Polling with a deadline, the one way tests wait for something: ``wait_until`` (sync) and
``wait_until_async`` return the probe's first truthy value and fail the test with the last value
seen when the deadline passes; ``never`` fails as soon as a probe turns truthy in a window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _poll(probe: Callable[[], T], *, seconds: float, every: float) -> T:
    """Call ``probe`` every ``every`` seconds until it returns something truthy or ``seconds``
    have passed; the last value (truthy: the probe turned true). ``_poll_async``'s twin."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


async def _poll_async(probe: Callable[[], Awaitable[T]], *, seconds: float, every: float) -> T:
    """``_poll`` on the event loop: other tasks run between the tries."""
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if value or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(every)


def _timed_out(within: float, what: str, last: object) -> AssertionError:
    return AssertionError(f"timed out after {within:g} s waiting for {what}; last value: {last!r}")


def _seen(what: str, seen: object) -> AssertionError:
    return AssertionError(f"{what} (seen: {seen!r})")


def wait_until(
    probe: Callable[[], T], *, within: float, what: str = "condition", every: float = 0.25
) -> T:
    """Call ``probe`` every ``every`` seconds until it returns something truthy; return that."""
    last = _poll(probe, seconds=within, every=every)
    if not last:
        raise _timed_out(within, what, last)
    return last


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    *,
    within: float = 30,
    what: str = "condition",
    every: float = 0.25,
) -> T:
    """``wait_until`` for a coroutine probe, sleeping on the event loop between tries."""
    last = await _poll_async(probe, seconds=within, every=every)
    if not last:
        raise _timed_out(within, what, last)
    return last


def never(probe: Callable[[], object], *, during: float, what: str, every: float = 0.25) -> None:
    """Check ``probe`` every ``every`` seconds for ``during`` seconds and fail as soon as it is
    truthy (Gomega's ``Consistently``): a negative check that watches the whole window instead
    of looking once after a sleep."""
    seen = _poll(probe, seconds=during, every=every)
    if seen:
        raise _seen(what, seen)


async def never_async(
    probe: Callable[[], object], *, during: float, what: str, every: float = 0.01
) -> None:
    """``never`` on the event loop: other tasks run between the checks."""

    async def check() -> object:
        return probe()

    seen = await _poll_async(check, seconds=during, every=every)
    if seen:
        raise _seen(what, seen)


Waiter = Callable[..., Any]
