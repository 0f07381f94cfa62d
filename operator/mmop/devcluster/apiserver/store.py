"""The in-memory object store: objects by type / namespace / name, the global resourceVersion,
and the indexes the garbage collector needs (by uid, by owner uid, per-namespace counts).

Stored objects are never mutated: a write stores a new dict, so readers and watch events may
share them. Every write is published to the :class:`~.watch.WatchHub`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mmop.devcluster.apiserver.watch import WatchEvent, WatchHub

Key = tuple[str, str]
Ref = tuple[Key, str, str]  # (type key, namespace or "", name)
JsonDict = dict[str, Any]


def _owner_uids(obj: JsonDict | None) -> set[str]:
    if not obj:
        return set()
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return {str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid")}


class Store:
    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self._rv = 0
        self._objects: dict[Key, dict[str, dict[str, JsonDict]]] = {}
        self._uids: dict[str, Ref] = {}
        self._dependents: dict[str, set[Ref]] = {}
        self._namespace_counts: dict[str, int] = {}

    @property
    def resource_version(self) -> int:
        return self._rv

    # --- reads ------------------------------------------------------------------------------
    def get(self, key: Key, namespace: str, name: str) -> JsonDict | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def items(self, key: Key, namespace: str | None = None) -> Iterator[JsonDict]:
        """Objects of a type (one namespace, or all), in (namespace, name) order like etcd."""
        by_namespace = self._objects.get(key, {})
        namespaces = [namespace] if namespace is not None else sorted(by_namespace)
        for ns in namespaces:
            objs = by_namespace.get(ns, {})
            for name in sorted(objs):
                yield objs[name]

    def count(self, key: Key) -> int:
        return sum(len(v) for v in self._objects.get(key, {}).values())

    def namespace_count(self, namespace: str) -> int:
        """How many namespaced objects (of any type) live in ``namespace``."""
        return self._namespace_counts.get(namespace, 0)

    def namespaced_keys(self, namespace: str) -> list[Key]:
        return [k for k, by_ns in self._objects.items() if by_ns.get(namespace)]

    def by_uid(self, uid: str) -> Ref | None:
        return self._uids.get(uid)

    def dependents(self, uid: str) -> list[Ref]:
        return sorted(self._dependents.get(uid, ()))

    # --- writes -----------------------------------------------------------------------------
    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, key: Key, obj: JsonDict, *, old: JsonDict | None, namespaced: bool) -> JsonDict:
        """Store ``obj`` (which gets the next resourceVersion) and publish ADDED / MODIFIED."""
        rv = self.next_rv()
        meta = obj["metadata"]
        meta["resourceVersion"] = str(rv)
        namespace = meta.get("namespace", "") if namespaced else ""
        name = meta["name"]
        by_ns = self._objects.setdefault(key, {}).setdefault(namespace, {})
        if name not in by_ns and namespace:
            self._namespace_counts[namespace] = self._namespace_counts.get(namespace, 0) + 1
        by_ns[name] = obj
        ref: Ref = (key, namespace, name)
        self._uids[str(meta.get("uid"))] = ref
        self._reindex_owners(ref, old, obj)
        self.hub.publish(key, WatchEvent("ADDED" if old is None else "MODIFIED", rv, obj, old))
        return obj

    def remove(self, key: Key, obj: JsonDict, *, namespaced: bool) -> JsonDict:
        """Delete ``obj``; the DELETED event carries its last state with a new resourceVersion."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if namespaced else ""
        name = meta["name"]
        by_ns = self._objects.get(key, {}).get(namespace, {})
        if by_ns.pop(name, None) is not None and namespace:
            self._namespace_counts[namespace] -= 1
        rv = self.next_rv()
        final = {**obj, "metadata": {**meta, "resourceVersion": str(rv)}}
        self._uids.pop(str(meta.get("uid")), None)
        self._reindex_owners((key, namespace, name), obj, None)
        self.hub.publish(key, WatchEvent("DELETED", rv, final, obj))
        return final

    def drop_type(self, key: Key) -> None:
        self._objects.pop(key, None)

    def _reindex_owners(self, ref: Ref, old: JsonDict | None, new: JsonDict | None) -> None:
        before, after = _owner_uids(old), _owner_uids(new)
        for uid in before - after:
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(ref)
                if not deps:
                    del self._dependents[uid]
        for uid in after - before:
            self._dependents.setdefault(uid, set()).add(ref)
