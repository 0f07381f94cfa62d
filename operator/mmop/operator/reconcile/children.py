"""Make the model's children match the desired list: create, patch the difference, delete
what is no longer wanted. A no-op pass makes no writes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from mmop.operator import kube
from mmop.operator.builders import meta
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


@dataclass
class ChildrenReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)
    """Kinds the cluster does not serve (no Istio / Gateway API CRDs) that we wanted."""

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted)


def _key(kind: kube.Kind, name: str) -> str:
    return f"{kind.kind}/{name}"


async def list_children(
    client: kube.KubeClient, *, namespace: str, model: str
) -> tuple[dict[kube.Kind, dict[str, dict[str, Any]]], set[kube.Kind]]:
    """(existing children by kind and name, kinds the cluster does not serve)."""
    selector = meta.selector_string({meta.LABEL_MODEL: model, meta.LABEL_MANAGED_BY: meta.MANAGER})
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
    for obj in desired:
        kind = kube.kind_of(obj)
        name = obj["metadata"]["name"]
        wanted.add(_key(kind, name))
        if kind in unserved:
            report.unserved.append(kind.kind)
            continue
        current = actual.get(kind, {}).get(name)
        if current is None:
            try:
                await client.create(kind, obj, namespace=namespace)
                report.created.append(_key(kind, name))
            except kube.ConflictError:
                # Created by someone else meanwhile (or still being deleted): next pass fixes.
                log.info(
                    "%s %s/%s exists already; will compare next pass", kind.kind, namespace, name
                )
            continue
        if current["metadata"].get("deletionTimestamp"):
            continue  # recreated once it is gone
        patch = update_patch(obj, current)
        if patch is not None:
            await client.patch(kind, name=name, namespace=namespace, patch=patch)
            report.updated.append(_key(kind, name))

    for kind, objects in actual.items():
        for name, obj in objects.items():
            if _key(kind, name) in wanted:
                continue
            labels = obj["metadata"].get("labels") or {}
            if labels.get(meta.LABEL_VERSION) in keep_versions:
                continue
            owners = {o.get("uid") for o in obj["metadata"].get("ownerReferences") or []}
            if owner_uid not in owners:
                continue  # not ours (a same-named model that was deleted and recreated)
            if obj["metadata"].get("deletionTimestamp"):
                continue
            await client.delete(kind, name=name, namespace=namespace)
            report.deleted.append(_key(kind, name))
    return report
