"""Discovery documents: ``/api``, ``/apis``, group versions, and aggregated discovery (v2).

kubectl 1.35 first asks for aggregated discovery
(``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList``); that is served
when asked for, the legacy documents otherwise (client-go picks the parser by the response's
Content-Type).
"""

from __future__ import annotations

from typing import Any

from mmop.devcluster.apiserver.resources import Registry, ResourceType, VersionInfo

JsonDict = dict[str, Any]
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_SUB_VERBS = ["get", "patch", "update"]


def wants_aggregated(accept: str) -> bool:
    for part in accept.split(","):
        params = {
            k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])
        }
        if (
            params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") == "v2"
            and params.get("g") == "apidiscovery.k8s.io"
        ):
            return True
    return False


def api_versions(server_address: str) -> JsonDict:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_doc(group: str, versions: list[str]) -> JsonDict:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: Registry) -> JsonDict:
    groups = [_group_doc(g, vs) for g, vs in registry.groups() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> JsonDict | None:
    for g, versions in registry.groups():
        if g == group and g:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(g, versions)}
    return None


def _resource_entries(rtype: ResourceType, info: VersionInfo) -> list[JsonDict]:
    main: JsonDict = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        main["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        main["categories"] = list(rtype.categories)
    entries = [main]
    if info.status:
        entries.append(
            {
                "name": f"{rtype.plural}/status",
                "singularName": "",
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": _SUB_VERBS,
            }
        )
    if info.scale is not None:
        entries.append(
            {
                "name": f"{rtype.plural}/scale",
                "singularName": "",
                "namespaced": rtype.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": _SUB_VERBS,
            }
        )
    return entries


def resource_list(registry: Registry, group: str, version: str) -> JsonDict | None:
    found = registry.in_group_version(group, version)
    if not found:
        return None
    resources: list[JsonDict] = []
    for rtype, info in found:
        resources += _resource_entries(rtype, info)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _aggregated_resource(rtype: ResourceType, info: VersionInfo) -> JsonDict:
    entry: JsonDict = {
        "resource": rtype.plural,
        "responseKind": {"group": rtype.group, "version": info.name, "kind": rtype.kind},
        "scope": "Namespaced" if rtype.namespaced else "Cluster",
        "singularResource": rtype.singular,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        entry["categories"] = list(rtype.categories)
    subresources = []
    if info.status:
        subresources.append(
            {
                "subresource": "status",
                "verbs": _SUB_VERBS,
                "responseKind": {"group": rtype.group, "version": info.name, "kind": rtype.kind},
            }
        )
    if info.scale is not None:
        subresources.append(
            {
                "subresource": "scale",
                "verbs": _SUB_VERBS,
                "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(registry: Registry, *, core: bool) -> JsonDict:
    """The APIGroupDiscoveryList for ``/api`` (core) or ``/apis`` (every named group)."""
    items = []
    for group, versions in registry.groups():
        if bool(group) == core:
            continue
        version_docs = []
        for version in versions:
            resources = [
                _aggregated_resource(t, i) for t, i in registry.in_group_version(group, version)
            ]
            version_docs.append(
                {"version": version, "resources": resources, "freshness": "Current"}
            )
        items.append(
            {"metadata": {"name": group, "creationTimestamp": None}, "versions": version_docs}
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
