"""Watch fan-out: a bounded per-type event history (for resuming from a resourceVersion) and
subscribers that get only their type's events, filtered by namespace and selectors.

Events are published synchronously by the store on the event loop; each subscriber has its
own pending deque, so one event costs O(subscribers of that type), never a scan of objects.
A subscriber that falls too far behind is closed; its client re-watches from its last
resourceVersion (or re-lists on 410), as with a real API server.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mmop.devcluster.apiserver import errors
from mmop.devcluster.apiserver.selectors import FieldSelector, LabelSelector

Key = tuple[str, str]
JsonDict = dict[str, Any]


@dataclass
class WatchEvent:
    """One change: ``obj`` is the new state (the last state for DELETED), ``old`` the previous."""

    type: str
    rv: int
    obj: JsonDict
    old: JsonDict | None = None
    _encoded: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False)

    def encode(self, event_type: str, api_version: str) -> bytes:
        """The event as one JSON line, cached per (type, apiVersion) across subscribers."""
        cache_key = (event_type, api_version)
        data = self._encoded.get(cache_key)
        if data is None:
            obj = self.obj
            if obj.get("apiVersion") != api_version:
                obj = {**obj, "apiVersion": api_version}
            data = (
                json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode()
                + b"\n"
            )
            self._encoded[cache_key] = data
        return data


class Subscription:
    """One watch stream's queue of (type, event) pairs, filtered at publish time."""

    def __init__(
        self,
        key: Key,
        *,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int,
    ) -> None:
        self.key = key
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.limit = limit
        self.pending: deque[tuple[str, WatchEvent]] = deque()
        self.closed = False
        self.close_reason = ""
        self._wake = asyncio.Event()

    def _matches(self, obj: JsonDict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches(meta.get("labels")):
            return False
        return self.fields.empty or self.fields.matches(obj)

    def offer(self, event: WatchEvent) -> None:
        """Queue ``event`` as this subscriber sees it (a selector change turns MODIFIED into
        ADDED or DELETED, as the real watch cache does)."""
        if self.closed:
            return
        now_matches = self._matches(event.obj)
        if event.type == "MODIFIED":
            was = self._matches(event.old)
            if now_matches and not was:
                kind = "ADDED"
            elif was and not now_matches:
                kind = "DELETED"
            elif now_matches:
                kind = "MODIFIED"
            else:
                return
        elif now_matches:
            kind = event.type
        else:
            return
        if len(self.pending) >= self.limit:
            self.close("the watcher is too slow")
            return
        self.pending.append((kind, event))
        self._wake.set()

    def close(self, reason: str = "") -> None:
        self.closed = True
        self.close_reason = reason
        self._wake.set()

    async def next_batch(self, wait: float) -> list[tuple[str, WatchEvent]]:
        """Pending events, waiting up to ``wait`` seconds for one (none: timeout or closed)."""
        if not self.pending and not self.closed:
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass  # an event may have arrived as the timeout fired: deliver it now
        batch = list(self.pending)
        self.pending.clear()
        return batch

    def delivered_up_to(self, current: int) -> int:
        """The resourceVersion a BOOKMARK may carry: ``current``, or just below the oldest
        event still queued (a bookmark must never claim an event the client has not seen)."""
        if self.pending:
            return min(current, self.pending[0][1].rv - 1)
        return current


class WatchHub:
    """Per-type histories and subscribers."""

    def __init__(self, *, history_size: int = 10_000, subscriber_limit: int = 100_000) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history_size = history_size
        self.subscriber_limit = subscriber_limit
        self._history: dict[Key, deque[WatchEvent]] = {}
        self._compacted: dict[Key, int] = {}
        self._subscribers: dict[Key, set[Subscription]] = {}
        self._floor = 0  # compact() forgets every type's history up to here

    def publish(self, key: Key, event: WatchEvent) -> None:
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque()
        if len(history) >= self.history_size:
            self._compacted[key] = history.popleft().rv
        history.append(event)
        for sub in self._subscribers.get(key, ()):
            sub.offer(event)

    def compact(self, upto_rv: int) -> None:
        """Forget all history up to ``upto_rv`` and end every open watch: clients resume, and
        those that had not seen everything up to ``upto_rv`` get 410 Gone and re-list."""
        for key, history in self._history.items():
            while history and history[0].rv <= upto_rv:
                history.popleft()
            self._compacted[key] = max(self._compacted.get(key, 0), upto_rv)
        self._floor = max(self._floor, upto_rv)
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close("the watch history was compacted")

    def subscribe(
        self,
        key: Key,
        *,
        since: int | None,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> Subscription:
        """A new subscriber, with the history after ``since`` already queued.

        Raises 410 Gone when events after ``since`` were compacted away.
        """
        sub = Subscription(
            key, namespace=namespace, labels=labels, fields=fields, limit=self.subscriber_limit
        )
        if since is not None:
            compacted = max(self._compacted.get(key, 0), self._floor)
            if since < compacted:
                raise errors.gone(f"too old resource version: {since} ({compacted + 1})")
            for event in self._history.get(key, ()):
                if event.rv > since:
                    sub.offer(event)
        self._subscribers.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.key)
        if subs is not None:
            subs.discard(sub)

    def close_type(self, key: Key) -> None:
        """End every watch of a type (its CRD was deleted) and drop its history."""
        for sub in self._subscribers.pop(key, set()):
            sub.close("the resource type was removed")
        self._history.pop(key, None)

    def close_all(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close("the server is shutting down")
        self._subscribers.clear()

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
