"""Calls to endpoints the operator does not control (runtime pods, Prometheus, the hub) with a
cap on bytes read and a deadline for the whole call, and at most a few at a time per model.

A tenant's image answers the operator's test inference and ``/metrics`` scrape: it may answer
slowly, trickle bytes, or send gigabytes. httpx's timeouts are per network operation (a body
that trickles a byte every few seconds never trips them) and ``response.text`` reads everything,
so every such call goes through :func:`request`, which bounds both and raises
:class:`ProbeError` (an ``httpx.HTTPError``, so existing ``except httpx.HTTPError`` clauses
treat it like a failed call). Each model gets its own :class:`Gate`, so one model's slow pods
hold at most its own few connections and never delay another model's checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECTIONS = 4


class ProbeError(httpx.HTTPError):
    """The answer was too large, too slow, or compressed (we read only identity bodies)."""


@dataclass(frozen=True)
class Answer:
    """A fully read, bounded response."""

    status_code: int
    content: bytes
    headers: httpx.Headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if not 200 <= self.status_code < 300:
            raise ProbeError(f"HTTP {self.status_code}")


class Gate:
    """At most ``connections`` calls in flight for one model."""

    def __init__(self, connections: int = DEFAULT_CONNECTIONS) -> None:
        self._semaphore = asyncio.Semaphore(connections)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._semaphore:
            yield


@dataclass(frozen=True)
class Limits:
    """What one call may cost: bytes read, seconds in all (waiting for a slot included)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT
    gate: Gate | None = field(default=None, compare=False)


@dataclass
class Gates:
    """One :class:`Gate` per model, created on first use and dropped with :meth:`forget`."""

    connections: int = DEFAULT_CONNECTIONS
    _gates: dict[tuple[str, str], Gate] = field(default_factory=dict)

    def for_model(self, namespace: str, name: str) -> Gate:
        key = (namespace, name)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = Gate(self.connections)
        return gate

    def forget(self, namespace: str, name: str) -> None:
        self._gates.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._gates)


async def _read(
    http: httpx.AsyncClient, method: str, url: str, *, max_bytes: int, **kwargs: Any
) -> Answer:
    headers = {**(kwargs.pop("headers", None) or {}), "Accept-Encoding": "identity"}
    async with http.stream(method, url, headers=headers, **kwargs) as response:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ProbeError(f"{url}: compressed answer ({encoding}) refused")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ProbeError(f"{url}: answer of {declared} bytes exceeds {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # identity only (checked above): raw bytes
            size += len(chunk)
            if size > max_bytes:
                raise ProbeError(f"{url}: answer exceeds {max_bytes} bytes")
            chunks.append(chunk)
        return Answer(response.status_code, b"".join(chunks), response.headers)


async def request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    limits: Limits | None = None,
    **kwargs: Any,
) -> Answer:
    """``method url`` read to the end within ``limits``; ProbeError when it cannot be."""
    limits = limits or Limits()
    try:
        async with asyncio.timeout(limits.timeout):
            if limits.gate is None:
                return await _read(http, method, url, max_bytes=limits.max_bytes, **kwargs)
            async with limits.gate.slot():
                return await _read(http, method, url, max_bytes=limits.max_bytes, **kwargs)
    except TimeoutError:
        raise ProbeError(f"{url}: no complete answer within {limits.timeout:g} s") from None


async def get(
    http: httpx.AsyncClient, url: str, *, limits: Limits | None = None, **kwargs: Any
) -> Answer:
    return await request(http, "GET", url, limits=limits, **kwargs)


async def post(
    http: httpx.AsyncClient, url: str, *, limits: Limits | None = None, **kwargs: Any
) -> Answer:
    return await request(http, "POST", url, limits=limits, **kwargs)
