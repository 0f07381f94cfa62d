"""The controllers a real control plane runs beside the API server, reduced to what clients see:

* garbage collection by ownerReferences: dependents of a deleted owner are deleted
  (background), deleted first (foreground, via the ``foregroundDeletion`` finalizer) or
  orphaned (``orphan`` finalizer); dangling references to a gone owner are removed from
  dependents that still have a live owner; objects created with only absent owners are
  deleted;
* namespace termination: a deleted namespace empties itself, then disappears;
* CRD cleanup: a deleted CRD deletes its custom resources, then stops being served.

Work runs in event-loop callbacks right after the write that caused it (asynchronously to
the request, as in a real cluster, but without a resync delay). Finalizers held by other
controllers (kopf's) are respected everywhere: such objects wait with a deletionTimestamp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmop.devcluster.apiserver import builtins, crds
from mmop.devcluster.apiserver.objects import deep_copy

if TYPE_CHECKING:
    from mmop.devcluster.apiserver.operations import Api
    from mmop.devcluster.apiserver.resources import ResourceType

JsonDict = dict[str, Any]
logger = logging.getLogger(__name__)


def _owner_refs(obj: JsonDict) -> list[JsonDict]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [r for r in refs if isinstance(r, dict)]


class Controllers:
    def __init__(self, api: Api) -> None:
        self.api = api

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # a controller bug must not kill the loop
                logger.exception("devcluster controller %s failed", fn.__name__)

        try:
            asyncio.get_running_loop().call_soon(run)
        except RuntimeError:  # no loop (pure tests): run inline
            run()

    # --- hooks called by the Api after each write -------------------------------------------
    def written(self, rtype: ResourceType, old: JsonDict | None, new: JsonDict) -> None:
        meta = new["metadata"]
        if rtype.key == builtins.CRD_KEY:
            self.api.registry.register(crds.resource_type(new))
        started = meta.get("deletionTimestamp") and not (old or {}).get("metadata", {}).get(
            "deletionTimestamp"
        )
        if started:
            finalizers = meta.get("finalizers") or []
            if rtype.key == builtins.NAMESPACE_KEY:
                self._soon(self._drain_namespace, meta["name"])
            if rtype.key == builtins.CRD_KEY:
                self._soon(self._drain_crd, meta["name"])
            if "foregroundDeletion" in finalizers:
                self._soon(self._foreground, meta["uid"])
            if "orphan" in finalizers:
                self._soon(self._orphan, meta["uid"])
        old_refs = _owner_refs(old) if old else []
        if _owner_refs(new) and _owner_refs(new) != old_refs:
            self._soon(self._check_owners, rtype.key, meta.get("namespace", ""), meta["name"])

    def removed(self, rtype: ResourceType, obj: JsonDict) -> None:
        meta = obj["metadata"]
        uid = str(meta.get("uid"))
        if self.api.store.dependents(uid):
            self._soon(self._owner_gone, uid)
        for ref in _owner_refs(obj):
            self._soon(self._finish_foreground, str(ref.get("uid")))
        namespace = meta.get("namespace")
        if rtype.namespaced and namespace:
            self._soon(self._finish_namespace, namespace)
        if not rtype.builtin:
            self._soon(self._finish_crd, f"{rtype.plural}.{rtype.group}")
        if rtype.key == builtins.CRD_KEY:
            self._unregister(obj)

    # --- helpers ----------------------------------------------------------------------------
    def _get(
        self, key: tuple[str, str], namespace: str, name: str
    ) -> tuple[ResourceType, JsonDict] | None:
        rtype = self.api.registry.get(key)
        if rtype is None:
            return None
        obj = self.api.store.get(key, namespace if rtype.namespaced else "", name)
        return (rtype, obj) if obj is not None else None

    def _owner_alive(self, ref: JsonDict, dependent: JsonDict) -> bool:
        found = self.api.store.by_uid(str(ref.get("uid")))
        if found is None:
            return False
        key, namespace, _ = found
        rtype = self.api.registry.get(key)
        if rtype is None or rtype.kind != ref.get("kind"):
            return False
        return namespace in ("", dependent["metadata"].get("namespace", ""))

    def _without_finalizer(self, rtype: ResourceType, obj: JsonDict, finalizer: str) -> None:
        new = deep_copy(obj)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or [] if f != finalizer
        ]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
        self.api.persist(rtype, obj, new)

    # --- garbage collection -----------------------------------------------------------------
    def _owner_gone(self, uid: str) -> None:
        for key, namespace, name in self.api.store.dependents(uid):
            found = self._get(key, namespace, name)
            if found is None:
                continue
            rtype, dependent = found
            alive = [r for r in _owner_refs(dependent) if self._owner_alive(r, dependent)]
            if alive:
                new = deep_copy(dependent)
                new["metadata"]["ownerReferences"] = [
                    r for r in _owner_refs(new) if str(r.get("uid")) != uid
                ]
                self.api.persist(rtype, dependent, new)
            else:
                self.api.delete_object(rtype, dependent, "Background")

    def _check_owners(self, key: tuple[str, str], namespace: str, name: str) -> None:
        found = self._get(key, namespace, name)
        if found is None:
            return
        rtype, obj = found
        refs = _owner_refs(obj)
        dangling = refs and not any(self._owner_alive(r, obj) for r in refs)
        if dangling and not obj["metadata"].get("deletionTimestamp"):
            self.api.delete_object(rtype, obj, "Background")

    def _foreground(self, uid: str) -> None:
        for key, namespace, name in self.api.store.dependents(uid):
            found = self._get(key, namespace, name)
            if found is not None:
                self.api.delete_object(found[0], found[1], "Foreground")
        self._finish_foreground(uid)

    def _finish_foreground(self, uid: str) -> None:
        found = self.api.store.by_uid(uid)
        if found is None or self.api.store.dependents(uid):
            return
        owner = self._get(*found)
        if owner is None:
            return
        rtype, obj = owner
        if "foregroundDeletion" in (obj["metadata"].get("finalizers") or []):
            self._without_finalizer(rtype, obj, "foregroundDeletion")

    def _orphan(self, uid: str) -> None:
        for key, namespace, name in self.api.store.dependents(uid):
            found = self._get(key, namespace, name)
            if found is None:
                continue
            rtype, dependent = found
            new = deep_copy(dependent)
            new["metadata"]["ownerReferences"] = [
                r for r in _owner_refs(new) if str(r.get("uid")) != uid
            ]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            self.api.persist(rtype, dependent, new)
        found_owner = self.api.store.by_uid(uid)
        owner = self._get(*found_owner) if found_owner else None
        if owner is not None:
            self._without_finalizer(owner[0], owner[1], "orphan")

    # --- namespaces -------------------------------------------------------------------------
    def _drain_namespace(self, name: str) -> None:
        for key in self.api.store.namespaced_keys(name):
            rtype = self.api.registry.get(key)
            if rtype is None:
                continue
            for obj in list(self.api.store.items(key, name)):
                if not obj["metadata"].get("deletionTimestamp"):
                    self.api.delete_object(rtype, obj, "Background")
        self._finish_namespace(name)

    def _finish_namespace(self, name: str) -> None:
        ns_type = self.api.registry.get(builtins.NAMESPACE_KEY)
        ns = self.api.store.get(builtins.NAMESPACE_KEY, "", name)
        if ns_type is None or ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if self.api.store.namespace_count(name) > 0:
            return
        new = deep_copy(ns)
        new.setdefault("spec", {})["finalizers"] = []
        self.api.persist(ns_type, ns, new)  # gone unless metadata.finalizers remain

    # --- CRDs -------------------------------------------------------------------------------
    def _drain_crd(self, name: str) -> None:
        found = self._get(builtins.CRD_KEY, "", name)
        if found is None:
            return
        crd = found[1]
        rtype = self.api.registry.get((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
        if rtype is not None:
            for obj in list(self.api.store.items(rtype.key)):
                self.api.delete_object(rtype, obj, "Background")
        self._finish_crd(name)

    def _finish_crd(self, name: str) -> None:
        found = self._get(builtins.CRD_KEY, "", name)
        if found is None:
            return
        crd_type, crd = found
        if not crd["metadata"].get("deletionTimestamp"):
            return
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        if self.api.store.count(key) > 0:
            return
        if crds.CLEANUP_FINALIZER in (crd["metadata"].get("finalizers") or []):
            self._without_finalizer(crd_type, crd, crds.CLEANUP_FINALIZER)

    def _unregister(self, crd: JsonDict) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        current = self.api.registry.get(key)
        if current is not None and current.crd_uid == crd["metadata"].get("uid"):
            self.api.registry.unregister(key)
            self.api.store.hub.close_type(key)
            self.api.store.drop_type(key)
