"""Make the model's children match the desired list: create, patch the difference, delete
what is no longer wanted. A no-op pass makes no writes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from mmop.operator import kube, naming
from mmop.operator.reconcile.diff import is_subset, merge_patch

log = logging.getLogger(__name__)

CHILD_KINDS: tuple[kube.Kind, ...] = (
    kube.DEPLOYMENT,
    kube.SERVICE,
    kube.HPA,
    kube.PDB,
    kube.DESTINATION_RULE,
    kube.VIRTUAL_SERVICE,
    kube.HTTP_ROUTE,
)


# Maps we own whole: an extra key there is drift too (is_subset alone would keep it), and the
# patch must delete it. The selector of Service NAME is how plain Service routing pins the stable.
EXACT_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Service": (("spec", "selector"),),
}


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def update_patch(desired: dict[str, Any], current: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that brings ``current`` to ``desired``, or None when nothing differs."""
    exact = EXACT_FIELDS.get(str(desired.get("kind")), ())
    stale = [p for p in exact if _get(current, p) != _get(desired, p)]
    if is_subset(desired, current) and not stale:
        return None
    patch: dict[str, Any] = json.loads(json.dumps(desired))
    for path in stale:
        removal = merge_patch(_get(current, path) or {}, _get(desired, path) or {})
        node = patch
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = removal if isinstance(removal, dict) else _get(desired, path)
    return patch


# Answers that mean "this write will not go through as it is": reported, not retried blindly.
REFUSED_STATUSES = (400, 403, 422)
ROUTE_KINDS = ("VirtualService", "DestinationRule", "HTTPRoute")


@dataclass
class ChildrenReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)
    """Kinds the cluster does not serve (no Istio / Gateway API CRDs) that we wanted."""
    conflicts: list[str] = field(default_factory=list)
    """Children whose name is taken by an object this model does not own, one line each."""
    conflict_versions: set[str] = field(default_factory=set)
    """The versions those children belong to."""
    refused: list[str] = field(default_factory=list)
    """Writes the API server refused (400, 403, 422), one line each."""

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


def _key(kind: kube.Kind, name: str) -> str:
    return f"{kind.kind}/{name}"


async def list_children(
    client: kube.KubeClient, *, namespace: str, model: str
) -> tuple[dict[kube.Kind, dict[str, dict[str, Any]]], set[kube.Kind]]:
    """(existing children by kind and name, kinds the cluster does not serve)."""
    selector = naming.selector_string(
        {naming.LABEL_MODEL: model, naming.LABEL_MANAGED_BY: naming.MANAGER}
    )
    actual: dict[kube.Kind, dict[str, dict[str, Any]]] = {}
    unserved: set[kube.Kind] = set()
    for kind in CHILD_KINDS:
        try:
            items = await client.list_items(kind, namespace=namespace, label_selector=selector)
        except kube.NotFoundError:
            unserved.add(kind)
            continue
        actual[kind] = {obj["metadata"]["name"]: obj for obj in items}
    return actual, unserved


async def ensure_children(
    client: kube.KubeClient,
    *,
    namespace: str,
    owner_uid: str,
    desired: list[dict[str, Any]],
    actual: dict[kube.Kind, dict[str, dict[str, Any]]],
    unserved: set[kube.Kind],
    keep_versions: set[str],
) -> ChildrenReport:
    """Write the difference. Objects of ``keep_versions`` (retiring) are left alone."""
    report = ChildrenReport()
    wanted: set[str] = set()
    taken_services: set[str] = set()
    for obj in desired:
        kind = kube.kind_of(obj)
        name = obj["metadata"]["name"]
        wanted.add(_key(kind, name))
        if kind in unserved:
            report.unserved.append(kind.kind)
            continue
        if kind.kind in ROUTE_KINDS and _names_any(obj, taken_services):
            # Never route to a Service that belongs to another model.
            report.conflicts.append(
                f"{kind.kind} {name} not written: it would send traffic to Service "
                f"{', '.join(sorted(n for n in taken_services if _names_any(obj, {n})))} of "
                f"another owner"
            )
            continue
        current = actual.get(kind, {}).get(name)
        try:
            if current is None:
                taken = await _create(client, kind, obj, namespace=namespace, owner_uid=owner_uid)
                if taken is None:
                    report.created.append(_key(kind, name))
                elif taken:
                    report.conflicts.append(f"{kind.kind} {name} {taken}")
                    version = (obj["metadata"].get("labels") or {}).get(naming.LABEL_VERSION)
                    if version:
                        report.conflict_versions.add(version)
                    if kind == kube.SERVICE:
                        taken_services.add(name)
                continue
            if current["metadata"].get("deletionTimestamp"):
                continue  # recreated once it is gone
            patch = update_patch(obj, current)
            if patch is not None:
                await client.patch(kind, name=name, namespace=namespace, patch=patch)
                report.updated.append(_key(kind, name))
        except kube.ApiError as error:
            if error.status not in REFUSED_STATUSES:
                raise
            report.refused.append(f"{kind.kind} {name}: {_why(error)}")

    for kind, objects in actual.items():
        for name, obj in objects.items():
            if _key(kind, name) in wanted:
                continue
            labels = obj["metadata"].get("labels") or {}
            owners = {o.get("uid") for o in obj["metadata"].get("ownerReferences") or []}
            if owner_uid not in owners:
                continue  # not ours (a same-named model that was deleted and recreated)
            if obj["metadata"].get("deletionTimestamp"):
                continue
            try:
                if labels.get(naming.LABEL_VERSION) in keep_versions:
                    if await _mark_retiring(client, kind, obj, namespace=namespace):
                        report.updated.append(_key(kind, name))
                    continue
                await client.delete(kind, name=name, namespace=namespace)
                report.deleted.append(_key(kind, name))
            except kube.ApiError as error:
                if error.status not in REFUSED_STATUSES:
                    raise
                report.refused.append(f"{kind.kind} {name}: {_why(error)}")
    return report


def _why(error: kube.ApiError) -> str:
    message = str(error.body.get("message") or error)
    return f"{error.status} {error.reason or 'refused'}: {message}"[:400]


def _names_any(obj: dict[str, Any], names: set[str]) -> bool:
    """Does a route object refer to one of ``names`` (a backendRef, parentRef or host)?"""
    if not names:
        return False
    text = json.dumps(obj.get("spec") or {})
    return any(f'"{n}"' in text or f'"{n}.' in text for n in names)


async def _create(
    client: kube.KubeClient,
    kind: kube.Kind,
    obj: dict[str, Any],
    *,
    namespace: str,
    owner_uid: str,
) -> str | None:
    """Create ``obj``. None: created (or ours already, patched); "": nothing to report yet;
    otherwise why the name is taken by an object this model does not own."""
    name = obj["metadata"]["name"]
    try:
        await client.create(kind, obj, namespace=namespace)
        return None
    except kube.ConflictError:
        pass
    existing = await client.get_or_none(kind, name=name, namespace=namespace)
    if existing is None or existing["metadata"].get("deletionTimestamp"):
        return ""  # gone meanwhile, or still being deleted: the next pass creates it
    owners = existing["metadata"].get("ownerReferences") or []
    if owner_uid in {o.get("uid") for o in owners}:
        # Ours but not listed (someone changed its labels): bring it back.
        patch = update_patch(obj, existing)
        if patch is not None:
            await client.patch(kind, name=name, namespace=namespace, patch=patch)
        return None
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    whose = f"{owner.get('kind')} {owner.get('name')}" if owner else "an object with no owner"
    return f"exists and belongs to {whose}"


async def _mark_retiring(
    client: kube.KubeClient, kind: kube.Kind, obj: dict[str, Any], *, namespace: str
) -> bool:
    """Record the retiring role on a retiring version's Deployment (metadata only, no restart),
    so that a lost status does not find two Deployments claiming to be stable."""
    if kind != kube.DEPLOYMENT:
        return False
    annotations = obj["metadata"].get("annotations") or {}
    if annotations.get(naming.ANNOTATION_ROLE) == naming.ROLE_RETIRING:
        return False
    await client.patch(
        kind,
        name=obj["metadata"]["name"],
        namespace=namespace,
        patch={"metadata": {"annotations": {naming.ANNOTATION_ROLE: naming.ROLE_RETIRING}}},
    )
    return True
