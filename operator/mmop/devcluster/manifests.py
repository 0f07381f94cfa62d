"""Apply manifests of any kind to the dev cluster (server-side apply, like
``kubectl apply --server-side``): Namespaces and CRDs first, then the rest in file order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from mmop.operator import kube
from mmop.operator.documents import load_documents

FIELD_MANAGER: Final = "mmop-dev"
CRD_WAIT_SECONDS: Final = 10.0

__all__ = ["FIELD_MANAGER", "ApplyError", "apply", "load_documents", "resolve_kind"]


class ApplyError(Exception):
    """An object could not be applied (unknown kind, rejected by the API server)."""


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


async def _discover(client: kube.KubeClient, api_version: str) -> list[dict[str, Any]]:
    group, version = _split_api_version(api_version)
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    try:
        listing = await client.request("GET", path)
    except kube.NotFoundError:
        return []
    resources: list[dict[str, Any]] = listing.get("resources") or []
    return resources


async def resolve_kind(client: kube.KubeClient, obj: Mapping[str, Any]) -> kube.Kind:
    """The resource type of a manifest: a known kind, else found by discovery."""
    try:
        return kube.kind_of(obj)
    except KeyError:
        pass
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    for resource in await _discover(client, api_version):
        if resource.get("kind") == kind and "/" not in str(resource.get("name", "")):
            group, version = _split_api_version(api_version)
            return kube.Kind(
                group,
                version,
                str(resource["name"]),
                kind,
                namespaced=bool(resource.get("namespaced")),
            )
    raise ApplyError(f"the server has no resource type {api_version} {kind}")


async def wait_for_crd(client: kube.KubeClient, crd: Mapping[str, Any]) -> None:
    """Until the API server serves every version of ``crd``."""
    spec = crd.get("spec") or {}
    plural = (spec.get("names") or {}).get("plural")
    deadline = time.monotonic() + CRD_WAIT_SECONDS
    for version in spec.get("versions") or []:
        api_version = f"{spec.get('group')}/{version.get('name')}"
        while not any(r.get("name") == plural for r in await _discover(client, api_version)):
            if time.monotonic() > deadline:
                raise ApplyError(
                    f"CRD {crd['metadata']['name']} is not served after {CRD_WAIT_SECONDS:.0f}s"
                )
            await asyncio.sleep(0.1)


def _rank(obj: Mapping[str, Any]) -> int:
    return {"Namespace": 0, "CustomResourceDefinition": 1}.get(str(obj.get("kind")), 2)


async def apply(
    client: kube.KubeClient,
    objects: Iterable[Mapping[str, Any]],
    *,
    default_namespace: str = "default",
) -> list[dict[str, Any]]:
    """Create or update every object; returns them as the server stored them."""
    ordered = sorted(objects, key=_rank)  # stable: file order within a rank
    applied = []
    for obj in ordered:
        kind = await resolve_kind(client, obj)
        meta = dict(obj.get("metadata") or {})
        name = meta.get("name")
        if not name:
            raise ApplyError(f"{obj.get('kind')} without metadata.name")
        namespace = None
        if kind.namespaced:
            namespace = str(meta.get("namespace") or default_namespace)
            meta["namespace"] = namespace
        body = {**obj, "metadata": meta}
        try:
            result = await client.patch(
                kind,
                name=str(name),
                namespace=namespace,
                patch=body,
                patch_type="apply",
                force=True,
            )
        except kube.ApiError as error:
            raise ApplyError(f"{obj.get('kind')} {name}: {error}") from None
        if kind == kube.CRD:
            await wait_for_crd(client, result)
        applied.append(result)
    return applied
