"""The API verbs, transport-neutral: get, list, create, update, patch, apply, delete.

Every write goes through one pipeline (:meth:`Api._commit`): system metadata kept, status
subresource separation, defaults, CRD schema pruning / defaulting / validation,
generation, managed fields, no-op detection, finalizers. HTTP is a thin adapter over this
(:mod:`.http`); the garbage collector (:mod:`.gc`) writes through :meth:`Api.persist` and
:meth:`Api.delete_object`. Errors are :class:`~.errors.StatusError`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field, replace
from typing import Any

from mmop.devcluster.apiserver import (
    builtins,
    cel,
    crds,
    errors,
    gc,
    managedfields,
    patching,
    validation,
)
from mmop.devcluster.apiserver.objects import (
    deep_copy,
    dotted,
    generated_name,
    get_path,
    metadata,
    name_problem,
    new_uid,
    now,
    set_path,
)
from mmop.devcluster.apiserver.resources import Registry, ResourceType, VersionInfo
from mmop.devcluster.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    selector_to_string,
)
from mmop.devcluster.apiserver.store import Store

JsonDict = dict[str, Any]
_SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


@dataclass(frozen=True)
class Target:
    """What a request addresses: a type at a version, maybe a namespace, name, subresource."""

    rtype: ResourceType
    version: VersionInfo
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return self.rtype.api_version(self.version.name)

    @property
    def status_split(self) -> bool:
        """Whether main-resource writes ignore status (and ``/status`` writes all but status)."""
        return self.version.status


@dataclass(frozen=True)
class WriteOptions:
    field_manager: str = "unknown"
    dry_run: bool = False
    field_validation: str = "Warn"
    force: bool = False


@dataclass(frozen=True)
class DeleteOptions:
    propagation: str | None = None
    grace_period_seconds: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None

    @classmethod
    def from_body(cls, body: Any) -> DeleteOptions:
        if not isinstance(body, dict):
            return cls()
        propagation = body.get("propagationPolicy")
        if propagation is None and body.get("orphanDependents") is not None:
            propagation = "Orphan" if body["orphanDependents"] else "Background"
        pre = body.get("preconditions") or {}
        return cls(
            propagation=propagation,
            grace_period_seconds=body.get("gracePeriodSeconds"),
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
        )


@dataclass
class Outcome:
    obj: JsonDict
    code: int = 200
    warnings: list[str] = field(default_factory=list)


def _strip_volatile(obj: JsonDict) -> JsonDict:
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": meta}


class Api:
    """The semantics of the API server over a :class:`~.store.Store`."""

    def __init__(self, *, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.controllers = gc.Controllers(self)
        self._next_ip = int(ipaddress.IPv4Address("10.96.0.10"))

    # --- helpers ----------------------------------------------------------------------------
    @staticmethod
    def view(obj: JsonDict, target: Target) -> JsonDict:
        """``obj`` as served at the target's version."""
        api_version = target.api_version
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _ns_key(self, target: Target) -> str:
        return (target.namespace or "") if target.rtype.namespaced else ""

    def existing(self, target: Target) -> JsonDict:
        if target.rtype.namespaced and not target.namespace:
            raise errors.path_not_found()
        obj = self.store.get(target.rtype.key, self._ns_key(target), target.name or "")
        if obj is None:
            raise errors.not_found(target.rtype, target.name or "")
        return obj

    def _check_type(self, body: Any, target: Target) -> None:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if (kind and kind != target.rtype.kind) or (
            api_version and api_version != target.api_version
        ):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({target.api_version}), or the kind ({kind}) is not {target.rtype.kind}"
            )

    def _check_namespace(self, target: Target, meta: JsonDict) -> None:
        if not target.rtype.namespaced:
            meta.pop("namespace", None)
            return
        if not target.namespace:
            raise errors.method_not_allowed()
        body_ns = meta.get("namespace")
        if body_ns and body_ns != target.namespace:
            raise errors.namespace_mismatch()
        meta["namespace"] = target.namespace

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self.store.get(builtins.NAMESPACE_KEY, "", namespace)
        if ns is None:
            raise errors.namespace_not_found(namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.namespace_terminating(namespace)

    def _allocate_ip(self) -> str:
        ip = str(ipaddress.IPv4Address(self._next_ip))
        self._next_ip += 1
        return ip

    # --- reads ------------------------------------------------------------------------------
    def get(self, target: Target) -> JsonDict:
        obj = self.existing(target)
        if target.subresource == "scale":
            return self._scale_view(target, obj)
        return self.view(obj, target)

    def list_objects(
        self,
        target: Target,
        *,
        labels: LabelSelector,
        fields: FieldSelector,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> JsonDict:
        rtype = target.rtype
        for label in fields.fields:
            if not rtype.supports_field(label, target.version):
                raise errors.bad_request(f'field label not supported: "{label}"')
        namespace = target.namespace if rtype.namespaced else None
        rv = self.store.resource_version
        after: tuple[str, str] | None = None
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                rv, after = int(token["rv"]), (str(token["ns"]), str(token["name"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.bad_request(f"invalid continue token: {exc}") from exc
        items = []
        for obj in self.store.items(rtype.key, namespace):
            meta = obj["metadata"]
            if after is not None and (meta.get("namespace", ""), meta["name"]) <= after:
                continue
            if not labels.empty and not labels.matches(meta.get("labels")):
                continue
            if not fields.empty and not fields.matches(obj):
                continue
            items.append(obj)
        list_meta: JsonDict = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            last = items[-1]["metadata"]
            token_data = {"rv": rv, "ns": last.get("namespace", ""), "name": last["name"]}
            list_meta["continue"] = base64.urlsafe_b64encode(
                json.dumps(token_data).encode()
            ).decode()
            list_meta["remainingItemCount"] = remaining
        return {
            "kind": rtype.list_kind,
            "apiVersion": target.api_version,
            "metadata": list_meta,
            "items": [self.view(obj, target) for obj in items],
        }

    # --- create -----------------------------------------------------------------------------
    def create(
        self,
        target: Target,
        body: Any,
        options: WriteOptions,
        *,
        managed: list[JsonDict] | None = None,
    ) -> Outcome:
        if target.subresource:
            raise errors.method_not_allowed()
        self._check_type(body, target)
        rtype = target.rtype
        obj = deep_copy(body)
        obj["apiVersion"], obj["kind"] = target.api_version, rtype.kind
        meta = metadata(obj)
        self._check_namespace(target, meta)
        if rtype.namespaced:
            self._check_namespace_open(str(meta["namespace"]))
        if not meta.get("name") and not meta.get("generateName"):
            raise errors.invalid(
                rtype,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "field": "metadata.name",
                        "message": "Required value: name or generateName is required",
                    }
                ],
            )
        for key in (*_SYSTEM_METADATA, "resourceVersion", "managedFields"):
            meta.pop(key, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now()
        if rtype.generation:
            meta["generation"] = 1
        if target.status_split:
            obj.pop("status", None)
        warnings = self._prepare(target, obj, None, options=options)
        if rtype.key == builtins.CRD_KEY:
            finalizers = meta.setdefault("finalizers", [])
            if crds.CLEANUP_FINALIZER not in finalizers:
                finalizers.append(crds.CLEANUP_FINALIZER)
        namespace = meta.get("namespace", "") if rtype.namespaced else ""
        if not meta.get("name"):
            for _ in range(8):
                meta["name"] = generated_name(str(meta["generateName"]))
                if self.store.get(rtype.key, namespace, meta["name"]) is None:
                    break
        problem = name_problem(str(meta["name"]), label=rtype.key == builtins.NAMESPACE_KEY)
        if problem:
            raise errors.invalid(
                rtype,
                str(meta["name"]),
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{meta["name"]}": {problem}',
                    }
                ],
            )
        if self.store.get(rtype.key, namespace, meta["name"]) is not None:
            raise errors.already_exists(rtype, str(meta["name"]))
        if rtype.key == builtins.CRD_KEY:
            self._check_crd_names(obj)
        meta["managedFields"] = (
            managed
            if managed is not None
            else managedfields.record_update(
                old=None,
                new=obj,
                manager=options.field_manager,
                subresource=None,
                node=rtype.type_node(target.version),
                status_split=target.status_split,
                api_version=target.api_version,
            )
        )
        if not meta["managedFields"]:
            del meta["managedFields"]
        if options.dry_run:
            return Outcome(obj, 201, warnings)
        stored = self.persist(rtype, None, obj)
        return Outcome(self.view(stored, target), 201, warnings)

    def _check_crd_names(self, crd: JsonDict) -> None:
        """A CRD may not take a built-in's (or another CRD's) group and plural."""
        rtype = crds.resource_type(crd)
        existing = self.registry.get(rtype.key)
        if existing is not None and (
            existing.builtin or existing.crd_uid != crd["metadata"]["uid"]
        ):
            raise errors.StatusError(
                409, f'the resource "{rtype.group_resource}" is already served', reason="Conflict"
            )

    # --- the write pipeline -----------------------------------------------------------------
    def _prepare(
        self, target: Target, obj: JsonDict, old: JsonDict | None, *, options: WriteOptions
    ) -> list[str]:
        """Defaults, type-specific rules and schema validation; returns warnings."""
        rtype = target.rtype
        warnings: list[str] = []
        if target.subresource != "status" and rtype.defaulter is not None:
            rtype.defaulter(obj, old)
        if rtype.key == builtins.SERVICE_KEY:
            spec = obj.setdefault("spec", {})
            if spec.get("type") != "ExternalName" and not spec.get("clusterIP"):
                spec["clusterIP"] = self._allocate_ip()
            if spec.get("clusterIP") and spec.get("clusterIP") != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if rtype.key == builtins.CRD_KEY:
            causes = crds.problems(obj)
            if causes:
                raise errors.invalid(rtype, str(obj["metadata"].get("name", "")), causes)
            if old is not None:
                for path in (("spec", "group"), ("spec", "names", "plural")):
                    if get_path(obj, path) != get_path(old, path):
                        raise errors.invalid(
                            rtype,
                            str(obj["metadata"]["name"]),
                            [
                                {
                                    "reason": "FieldValueInvalid",
                                    "field": ".".join(path),
                                    "message": "Invalid value: field is immutable",
                                }
                            ],
                        )
            if target.subresource != "status":
                obj["status"] = crds.accepted_status(obj, (old or {}).get("status"))
        version_schema = target.version.schema
        if version_schema is not None:
            unknown, causes = validation.check_custom_object(
                obj, version_schema, old=old if old is not None else cel.NO_OLD
            )
            if unknown and options.field_validation == "Strict":
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise errors.bad_request(
                    f'{rtype.kind} in version "{target.version.name}" cannot be handled as a '
                    f"{rtype.kind}: strict decoding error: {fields}"
                )
            if options.field_validation == "Warn":
                warnings += [f'unknown field "{u}"' for u in unknown]
            if causes:
                raise errors.invalid(rtype, str(obj["metadata"].get("name", "")), causes)
        return warnings

    def _content_changed(self, old: JsonDict, new: JsonDict, target: Target) -> bool:
        """Whether a change bumps metadata.generation: anything but metadata (and status
        where status is its own subresource or the kind is built-in)."""
        skip = {"metadata"}
        if target.status_split or target.rtype.builtin:
            skip.add("status")
        keys = (set(old) | set(new)) - skip
        return any(old.get(k) != new.get(k) for k in keys)

    def _commit(
        self,
        target: Target,
        old: JsonDict,
        candidate: JsonDict,
        *,
        options: WriteOptions,
        managed: list[JsonDict] | None = None,
        managed_subresource: str | None = None,
    ) -> Outcome:
        rtype = target.rtype
        old_meta = old["metadata"]
        if target.subresource == "status":
            new = deep_copy(old)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
            new["apiVersion"] = target.api_version
        else:
            new = candidate
            new["apiVersion"], new["kind"] = target.api_version, rtype.kind
            meta = metadata(new)
            for key in (*_SYSTEM_METADATA, "name", "namespace"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if target.status_split:
                if "status" in old:
                    new["status"] = deep_copy(old["status"])
                else:
                    new.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise errors.invalid(
                        rtype,
                        str(old_meta["name"]),
                        [
                            {
                                "reason": "FieldValueForbidden",
                                "field": "metadata.finalizers",
                                "message": "Forbidden: no new finalizers can be added "
                                "if the object is being deleted",
                            }
                        ],
                    )
        warnings = self._prepare(target, new, old, options=options)
        meta = new["metadata"]
        if target.rtype.generation and self._content_changed(old, new, target):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        subresource = managed_subresource or target.subresource
        meta["managedFields"] = (
            managed
            if managed is not None
            else managedfields.record_update(
                old=old,
                new=new,
                manager=options.field_manager,
                subresource=subresource,
                node=rtype.type_node(target.version),
                status_split=target.status_split,
                api_version=target.api_version,
            )
        )
        if not meta["managedFields"]:
            del meta["managedFields"]
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        if _strip_volatile(self.view(old, target)) == _strip_volatile(new):
            return Outcome(self.view(old, target), 200, warnings)
        if options.dry_run:
            return Outcome(new, 200, warnings)
        stored = self.persist(rtype, old, new)
        return Outcome(self.view(stored, target), 200, warnings)

    def persist(self, rtype: ResourceType, old: JsonDict | None, new: JsonDict) -> JsonDict:
        """Store a write (no checks); a deleted object without finalizers goes away for good."""
        new["apiVersion"] = rtype.api_version(rtype.preferred.name)
        meta = new["metadata"]
        finalized = not meta.get("finalizers") and not (
            rtype.key == builtins.NAMESPACE_KEY and (new.get("spec") or {}).get("finalizers")
        )
        if meta.get("deletionTimestamp") and finalized and old is not None:
            return self._remove(rtype, new)
        stored = self.store.put(rtype.key, new, old=old, namespaced=rtype.namespaced)
        self.controllers.written(rtype, old, stored)
        return stored

    def _remove(self, rtype: ResourceType, obj: JsonDict) -> JsonDict:
        final = self.store.remove(rtype.key, obj, namespaced=rtype.namespaced)
        self.controllers.removed(rtype, final)
        return final

    # --- update / patch / apply -------------------------------------------------------------
    def update(self, target: Target, body: Any, options: WriteOptions) -> Outcome:
        old = self.existing(target)
        if target.subresource == "scale":
            return self._write_scale(target, old, body, options=options)
        if target.subresource not in (None, "status"):
            raise errors.path_not_found()
        self._check_type(body, target)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != target.name:
            raise errors.name_mismatch(meta["name"], target.name)
        if (
            meta.get("namespace")
            and target.rtype.namespaced
            and meta["namespace"] != target.namespace
        ):
            raise errors.namespace_mismatch()
        self._check_precondition(target, old, meta.get("resourceVersion"))
        return self._commit(target, old, deep_copy(body), options=options)

    def _check_precondition(self, target: Target, old: JsonDict, rv: Any) -> None:
        if rv and str(rv) != old["metadata"].get("resourceVersion"):
            raise errors.conflict(target.rtype, str(target.name))

    def patch(
        self, target: Target, body: Any, *, content_type: str, options: WriteOptions
    ) -> Outcome:
        if content_type == patching.APPLY:
            return self.apply(target, body, options)
        old = self.existing(target)
        rtype = target.rtype
        if target.subresource == "scale":
            scale = deep_copy(self._scale_view(target, old))
            patched = patching.apply_patch(
                scale, body, content_type=content_type, node=rtype.type_root, builtin=True
            )
            return self._write_scale(target, old, patched, options=options)
        if target.subresource not in (None, "status"):
            raise errors.path_not_found()
        patched = patching.apply_patch(
            deep_copy(self.view(old, target)),
            body,
            content_type=content_type,
            node=rtype.type_node(target.version),
            builtin=rtype.builtin,
        )
        if not isinstance(patched, dict):
            raise errors.unprocessable("the patched object is not a JSON object")
        self._check_precondition(
            target, old, (patched.get("metadata") or {}).get("resourceVersion")
        )
        return self._commit(target, old, patched, options=options)

    def apply(self, target: Target, body: Any, options: WriteOptions) -> Outcome:
        rtype = target.rtype
        if not isinstance(body, dict):
            raise errors.bad_request("the apply configuration must be an object")
        if target.subresource not in (None, "status"):
            raise errors.StatusError(
                415, f"apply is not supported on the {target.subresource} subresource"
            )
        if not options.field_manager or options.field_manager == "unknown":
            raise errors.apply_needs_field_manager()
        self._check_type(body, target)
        if not body.get("apiVersion") or not body.get("kind"):
            raise errors.bad_request("apiVersion and kind must be set in an apply configuration")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != target.name:
            raise errors.name_mismatch(meta["name"], target.name)
        old = self.store.get(rtype.key, self._ns_key(target), target.name or "")
        node = rtype.type_node(target.version)
        if old is None:
            if target.subresource:
                raise errors.not_found(rtype, target.name or "")
            skeleton: JsonDict = {
                "apiVersion": target.api_version,
                "kind": rtype.kind,
                "metadata": {"name": target.name},
            }
            if rtype.namespaced:
                skeleton["metadata"]["namespace"] = target.namespace
            merged = self._apply_merge(
                target, skeleton, body, options=options, node=node, subresource=None
            )
            managed = merged["metadata"].pop("managedFields")
            return self.create(target, merged, options, managed=managed)
        self._check_precondition(target, old, meta.get("resourceVersion"))
        live = deep_copy(self.view(old, target))
        merged = self._apply_merge(
            target, live, body, options=options, node=node, subresource=target.subresource
        )
        managed = merged["metadata"].get("managedFields")
        return self._commit(target, old, merged, options=options, managed=managed)

    def _apply_merge(
        self,
        target: Target,
        live: JsonDict,
        applied: JsonDict,
        *,
        options: WriteOptions,
        node: Any,
        subresource: str | None,
    ) -> JsonDict:
        try:
            return managedfields.apply(
                live=live,
                applied=deep_copy(applied),
                manager=options.field_manager,
                force=options.force,
                subresource=subresource,
                node=node,
                status_split=target.status_split,
                api_version=target.api_version,
            )
        except managedfields.ApplyConflict as exc:
            causes = [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{manager}" using {target.api_version}',
                    "field": path,
                }
                for manager, path in exc.conflicts
            ]
            raise errors.StatusError(
                409,
                str(exc),
                reason="Conflict",
                details={
                    "name": target.name,
                    "group": target.rtype.group,
                    "kind": target.rtype.plural,
                    "causes": causes,
                },
            ) from exc

    # --- scale ------------------------------------------------------------------------------
    def _scale_view(self, target: Target, obj: JsonDict) -> JsonDict:
        scale = target.version.scale
        if scale is None:
            raise errors.path_not_found()
        meta = obj["metadata"]
        if target.rtype.builtin:
            selector = selector_to_string(get_path(obj, ("spec", "selector")))
        else:
            path = scale.label_selector_path
            found = get_path(obj, dotted(path)) if path else None
            selector = str(found) if found else ""
        status: JsonDict = {"replicas": int(get_path(obj, dotted(scale.status_replicas_path)) or 0)}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": int(get_path(obj, dotted(scale.spec_replicas_path)) or 0)},
            "status": status,
        }

    def _write_scale(
        self, target: Target, old: JsonDict, body: Any, *, options: WriteOptions
    ) -> Outcome:
        scale = target.version.scale
        if scale is None:
            raise errors.path_not_found()
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a Scale object")
        replicas = get_path(body, ("spec", "replicas"))
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid(
                target.rtype,
                str(target.name),
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {json.dumps(replicas)}: "
                        "must be a non-negative integer",
                    }
                ],
                kind="Scale",
            )
        self._check_precondition(target, old, get_path(body, ("metadata", "resourceVersion")))
        new = deep_copy(self.view(old, target))
        set_path(new, dotted(scale.spec_replicas_path), replicas)
        main = replace(target, subresource=None)
        outcome = self._commit(main, old, new, options=options, managed_subresource="scale")
        outcome.obj = self._scale_view(target, outcome.obj)
        return outcome

    # --- delete -----------------------------------------------------------------------------
    def delete(self, target: Target, options: DeleteOptions, write: WriteOptions) -> Outcome:
        if target.subresource:
            raise errors.method_not_allowed()
        old = self.existing(target)
        meta = old["metadata"]
        if options.precondition_uid and options.precondition_uid != meta.get("uid"):
            raise errors.conflict(
                target.rtype,
                str(target.name),
                f"Precondition failed: UID in precondition: {options.precondition_uid}, "
                f"UID in object meta: {meta.get('uid')}",
            )
        if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
            raise errors.conflict(
                target.rtype,
                str(target.name),
                f"Precondition failed: ResourceVersion in precondition: {options.precondition_rv}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        if (
            target.rtype.key == builtins.NAMESPACE_KEY
            and meta["name"] in builtins.PROTECTED_NAMESPACES
        ):
            raise errors.forbidden(
                f'namespaces "{meta["name"]}" is forbidden: this namespace may not be deleted'
            )
        if options.propagation not in (None, "Background", "Foreground", "Orphan"):
            raise errors.bad_request(f"unsupported propagationPolicy: {options.propagation}")
        if write.dry_run:
            return Outcome(self.view(old, target))
        final = self.delete_object(target.rtype, old, options.propagation or "Background")
        return Outcome(self.view(final, target))

    def delete_object(self, rtype: ResourceType, old: JsonDict, propagation: str) -> JsonDict:
        """Delete now, or mark for deletion where finalizers (or dependents) must go first."""
        meta = old["metadata"]
        if meta.get("deletionTimestamp"):
            return old
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        elif propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        is_namespace = rtype.key == builtins.NAMESPACE_KEY
        if not finalizers and not is_namespace:
            return self._remove(rtype, old)
        new = deep_copy(old)
        new_meta = new["metadata"]
        new_meta["deletionTimestamp"] = now()
        new_meta["deletionGracePeriodSeconds"] = 0
        if finalizers:
            new_meta["finalizers"] = finalizers
        if rtype.generation:
            new_meta["generation"] = int(new_meta.get("generation") or 0) + 1
        if is_namespace:
            new.setdefault("status", {})["phase"] = "Terminating"
        if rtype.key == builtins.CRD_KEY:
            new["status"] = crds.terminating_status(new.get("status"))
        return self._mark(rtype, old, new)

    def _mark(self, rtype: ResourceType, old: JsonDict, new: JsonDict) -> JsonDict:
        stored = self.store.put(rtype.key, new, old=old, namespaced=rtype.namespaced)
        self.controllers.written(rtype, old, stored)
        return stored

    def delete_collection(
        self,
        target: Target,
        *,
        labels: LabelSelector,
        fields: FieldSelector,
        options: DeleteOptions,
        write: WriteOptions,
    ) -> JsonDict:
        listing = self.list_objects(target, labels=labels, fields=fields)
        deleted = []
        for obj in listing["items"]:
            if write.dry_run:
                deleted.append(obj)
                continue
            current = self.store.get(
                target.rtype.key,
                obj["metadata"].get("namespace", "") if target.rtype.namespaced else "",
                obj["metadata"]["name"],
            )
            if current is not None:
                final = self.delete_object(
                    target.rtype, current, options.propagation or "Background"
                )
                deleted.append(self.view(final, target))
        listing["items"] = deleted
        listing["metadata"] = {"resourceVersion": str(self.store.resource_version)}
        return listing
