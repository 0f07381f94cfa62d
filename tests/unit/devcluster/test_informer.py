"""devcluster/informer.py: list then watch, BOOKMARKs move the resume point, 410 Gone lists
again, and writers' own results (remember / forget) win over late events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mmop.devcluster.informer import Cache, Informer
from mmop.operator import kube


def _cm(name: str, rv: int, uid: str | None = None, **data: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "uid": uid or f"uid-{name}",
        },
        "data": data,
    }


class FakeClient:
    """Scripted answers: each list() pops a listing, each watch() pops a list of events (or an
    exception to raise)."""

    def __init__(self, listings: list[dict[str, Any]], watches: list[Any]) -> None:
        self.listings = listings
        self.watches = watches
        self.watched_from: list[str | None] = []

    async def list(self, kind: kube.Kind) -> dict[str, Any]:
        return self.listings.pop(0)

    async def watch(
        self, kind: kube.Kind, *, resource_version: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        script = self.watches.pop(0) if self.watches else None
        if script is None:
            await asyncio.Event().wait()  # a quiet stream, until cancelled
            return
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


async def _run_until(informer: Informer, predicate: Any) -> None:
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(200):
            if predicate():
                return
            await asyncio.sleep(0.01)
        pytest.fail("the informer did not get there")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_list_then_watch_and_bookmarks() -> None:
    client = FakeClient(
        listings=[{"metadata": {"resourceVersion": "10"}, "items": [_cm("a", 9)]}],
        watches=[
            [
                {"type": "ADDED", "object": _cm("b", 11)},
                {"type": "MODIFIED", "object": _cm("a", 12, x="1")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
            ],
            [{"type": "DELETED", "object": _cm("b", 21)}],
        ],
    )
    informer = Informer(client, kube.CONFIGMAP, notify=asyncio.Event())  # type: ignore[arg-type]
    await _run_until(informer, lambda: len(client.watched_from) == 3)
    assert client.watched_from == ["10", "20", "21"]
    assert [o["metadata"]["name"] for o in informer] == ["a"]
    assert informer.get("ns", "a")["data"] == {"x": "1"}  # type: ignore[index]
    assert informer.synced.is_set()


async def test_gone_lists_again() -> None:
    gone = kube.GoneError(410, {"reason": "Expired"}, method="WATCH", path="/")
    client = FakeClient(
        listings=[
            {"metadata": {"resourceVersion": "5"}, "items": [_cm("old", 5)]},
            {"metadata": {"resourceVersion": "50"}, "items": [_cm("new", 49)]},
        ],
        watches=[gone],
    )
    informer = Informer(client, kube.CONFIGMAP, notify=asyncio.Event())  # type: ignore[arg-type]
    await _run_until(informer, lambda: informer.get("ns", "new") is not None)
    assert informer.get("ns", "old") is None
    assert client.watched_from[-1] == "50"


async def test_remember_and_forget() -> None:
    informer = Informer(
        FakeClient([], []),
        kube.CONFIGMAP,  # type: ignore[arg-type]
        notify=asyncio.Event(),
    )
    informer.remember(_cm("a", 5, x="new"))
    informer.remember(_cm("a", 4, x="stale"))
    assert informer.get("ns", "a")["data"] == {"x": "new"}  # type: ignore[index]
    informer.forget(_cm("a", 5))
    informer._apply("MODIFIED", _cm("a", 6))  # a late event for the deleted object
    assert informer.get("ns", "a") is None
    informer._apply("ADDED", _cm("a", 7, uid="another"))  # the name reused by a new object
    assert informer.get("ns", "a") is not None


async def test_cache_wakes_every_subscriber() -> None:
    client = FakeClient([{"metadata": {"resourceVersion": "1"}, "items": []}], [])
    cache = Cache(client, (kube.CONFIGMAP,))  # type: ignore[arg-type]
    one, two = cache.subscribe(), cache.subscribe()
    one.clear()
    two.clear()
    cache.start()
    try:
        await asyncio.wait_for(cache.wait_synced(), 2)
        await asyncio.wait_for(asyncio.gather(one.wait(), two.wait()), 2)
    finally:
        await cache.stop()
