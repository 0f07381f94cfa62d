"""Watch-fed caches of API objects (list, then watch; re-list after 410 Gone), shared by the
kubelet and the router so that neither lists per decision or per request.

Writers may put what they just wrote into the cache (``remember`` / ``forget``) so that the
next decision sees it before the watch event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx

from mmop.operator import kube

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace or "", name)
RETRY_MIN = 0.2
RETRY_MAX = 5.0


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _rv(obj: dict[str, Any]) -> int | None:
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else None


class Informer:
    """The objects of one kind, all namespaces, kept current by a watch."""

    def __init__(self, client: kube.KubeClient, kind: kube.Kind, *, notify: asyncio.Event) -> None:
        self.kind = kind
        self._client = client
        self._notify = notify
        self._items: dict[Key, dict[str, Any]] = {}
        self._gone_uids: set[str] = set()
        self.synced = asyncio.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._items.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [obj for (ns, _), obj in self._items.items() if ns == namespace]

    def remember(self, obj: dict[str, Any]) -> None:
        """Put an object this process just wrote (unless the cache has a newer version)."""
        key = key_of(obj)
        current = self._items.get(key)
        new_rv, old_rv = _rv(obj), _rv(current) if current else None
        if current is not None and new_rv is not None and old_rv is not None and old_rv > new_rv:
            return
        self._items[key] = obj
        self._notify.set()

    def forget(self, obj: dict[str, Any]) -> None:
        """Drop an object this process just deleted; late events for it are ignored."""
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            self._gone_uids.add(str(uid))
        self._items.pop(key_of(obj), None)
        self._notify.set()

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if kind == "DELETED":
            current = self._items.get(key)
            if current is not None and (current.get("metadata") or {}).get("uid") == uid:
                del self._items[key]
            self._gone_uids.discard(uid)
        elif uid not in self._gone_uids:
            current = self._items.get(key)
            rv, old_rv = _rv(obj), _rv(current) if current else None
            if current is None or rv is None or old_rv is None or rv >= old_rv:
                self._items[key] = obj
        self._notify.set()

    async def run(self) -> None:
        """List and watch until cancelled; connection problems are retried with back-off."""
        delay = RETRY_MIN
        while True:
            try:
                listing = await self._client.list(self.kind)
                self._items = {key_of(o): o for o in listing.get("items") or []}
                self._gone_uids.clear()
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                self.synced.set()
                self._notify.set()
                delay = RETRY_MIN
                while True:
                    async for event in self._client.watch(
                        self.kind, resource_version=version, timeout_seconds=300
                    ):
                        obj = event.get("object") or {}
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.get("type") != "BOOKMARK":
                            self._apply(str(event.get("type")), obj)
            except kube.GoneError:
                log.debug("%s: watch history compacted; listing again", self.kind.plural)
            except kube.NotFoundError:  # the CRD is not registered (yet)
                await asyncio.sleep(1.0)
            except (httpx.HTTPError, kube.ApiError, ValueError) as error:
                log.debug("%s: %s; retrying in %.1fs", self.kind.plural, error, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)


class Cache:
    """Informers for several kinds that share one change signal per subscriber."""

    def __init__(self, client: kube.KubeClient, kinds: tuple[kube.Kind, ...]) -> None:
        self._subscribers: list[asyncio.Event] = []
        self._changed = asyncio.Event()
        self.informers = {kind: Informer(client, kind, notify=self._changed) for kind in kinds}
        self._tasks: list[asyncio.Task[None]] = []
        self._fanout: asyncio.Task[None] | None = None

    def __getitem__(self, kind: kube.Kind) -> Informer:
        return self.informers[kind]

    def subscribe(self) -> asyncio.Event:
        """An event set after every change (the subscriber clears it)."""
        event = asyncio.Event()
        event.set()
        self._subscribers.append(event)
        return event

    async def _broadcast(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            for event in self._subscribers:
                event.set()

    def start(self) -> None:
        if self._tasks:
            return
        self._fanout = asyncio.create_task(self._broadcast(), name="cache-fanout")
        for kind, informer in self.informers.items():
            self._tasks.append(asyncio.create_task(informer.run(), name=f"watch-{kind.plural}"))

    async def wait_synced(self, kinds: tuple[kube.Kind, ...] | None = None) -> None:
        for kind in kinds or tuple(self.informers):
            await self.informers[kind].synced.wait()

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._fanout] if self._fanout else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._fanout = None
