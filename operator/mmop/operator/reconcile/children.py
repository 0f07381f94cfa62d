"""Make the model's children match the desired list: create, patch the difference, delete
what is no longer wanted. A no-op pass makes no writes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mmop.operator import kube
from mmop.operator.builders import meta
from mmop.operator.reconcile.diff import is_subset

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
        if not is_subset(obj, current):
            await client.patch(kind, name=name, namespace=namespace, patch=obj)
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
