"""The write audit trail: every mutating request, in order, with a monotonically increasing index.

Tests count an operator's writes with it (``records(since=index)``); it is thread-safe because
tests read it from outside the server's event loop thread. ``GET /debug/audit?since=N`` serves
the same records; ``DELETE /debug/audit`` clears them (indexes keep increasing).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class AuditRecord:
    index: int
    time: float  # seconds since the epoch
    verb: str  # create | update | patch | apply | delete | deletecollection
    method: str
    path: str
    group: str
    version: str
    resource: str  # plural
    kind: str
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str
    field_manager: str | None
    content_type: str | None
    dry_run: bool
    code: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """A bounded, thread-safe list of :class:`AuditRecord`."""

    def __init__(self, *, max_records: int = 200_000) -> None:
        self._records: collections.deque[AuditRecord] = collections.deque(maxlen=max_records)
        self._lock = threading.Lock()
        self._last = 0

    @property
    def last_index(self) -> int:
        """The index of the latest record (0 before any): pass it as ``since`` later."""
        with self._lock:
            return self._last

    def add(self, **fields: Any) -> AuditRecord:
        with self._lock:
            self._last += 1
            record = AuditRecord(index=self._last, time=time.time(), **fields)
            self._records.append(record)
            return record

    def records(self, *, since: int = 0) -> list[AuditRecord]:
        """Records with ``index > since``, oldest first."""
        with self._lock:
            return [r for r in self._records if r.index > since]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


@dataclass(frozen=True)
class ReadRecord:
    """One kind of read: who (user agent) did which verb on which resource, where."""

    verb: str  # get | list | watch (| update: an owner's finalizers, see ReadLog)
    group: str
    resource: str
    subresource: str | None
    namespaced: bool  # in one namespace (True) or across all / cluster-scoped (False)
    user_agent: str


class ReadLog:
    """The distinct reads clients made (a set, so it stays small), for RBAC checks: with the
    write audit it shows every (verb, resource) an operator really needs. It also holds the
    permissions admission would check beyond the request's own verb (``update`` on an owner's
    ``finalizers`` for ``blockOwnerDeletion``)."""

    def __init__(self) -> None:
        self._seen: set[ReadRecord] = set()
        self._lock = threading.Lock()

    def add(self, record: ReadRecord) -> None:
        with self._lock:
            self._seen.add(record)

    def records(self) -> set[ReadRecord]:
        with self._lock:
            return set(self._seen)
