"""Resource types the server knows: built-ins at start, custom resources as their CRDs come and go.

A :class:`ResourceType` is one group + plural (the storage identity); it is served at one or
more versions (:class:`VersionInfo`), each with its own schema, printer columns and
subresources for custom resources.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mmop.devcluster.apiserver import fieldtypes

Defaulter = Callable[[dict[str, Any], "dict[str, Any] | None"], None]
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ScaleSpec:
    """Where the ``/scale`` subresource reads and writes (CRD ``subresources.scale`` shape)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class VersionInfo:
    """One served version of a resource type."""

    name: str
    schema: dict[str, Any] | None = None
    columns: tuple[PrinterColumn, ...] = ()
    status: bool = False
    scale: ScaleSpec | None = None
    selectable_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourceType:
    """A kind of object, stored once and served at ``versions`` (the first is preferred)."""

    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    versions: tuple[VersionInfo, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    builtin: bool = True
    verbs: tuple[str, ...] = ALL_VERBS
    field_labels: frozenset[str] = frozenset()
    type_root: fieldtypes.Node = fieldtypes.PLAIN
    defaulter: Defaulter | None = None
    crd_uid: str | None = None
    generation: bool = True  # whether objects carry metadata.generation (not ConfigMaps...)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def preferred(self) -> VersionInfo:
        return self.versions[0]

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def version(self, name: str) -> VersionInfo | None:
        for v in self.versions:
            if v.name == name:
                return v
        return None

    def type_node(self, version: VersionInfo) -> fieldtypes.Node:
        if version.schema is not None:
            return fieldtypes.SchemaNode(version.schema)
        return self.type_root

    def supports_field(self, label: str, version: VersionInfo) -> bool:
        if label in ("metadata.name", "metadata.namespace"):
            return True
        return label in self.field_labels or label in version.selectable_fields


class Registry:
    """The served resource types, by (group, plural), with a change counter for caches."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._lock = threading.Lock()
        self.revision = 0
        for rtype in types:
            self._types[rtype.key] = rtype

    def register(self, rtype: ResourceType) -> None:
        with self._lock:
            self._types[rtype.key] = rtype
            self.revision += 1

    def unregister(self, key: tuple[str, str]) -> ResourceType | None:
        with self._lock:
            removed = self._types.pop(key, None)
            self.revision += 1
            return removed

    def get(self, key: tuple[str, str]) -> ResourceType | None:
        return self._types.get(key)

    def resolve(
        self, group: str, version: str, plural: str
    ) -> tuple[ResourceType, VersionInfo] | None:
        rtype = self._types.get((group, plural))
        if rtype is None:
            return None
        info = rtype.version(version)
        return (rtype, info) if info is not None else None

    def by_kind(self, api_version: str, kind: str) -> tuple[ResourceType, VersionInfo] | None:
        group, _, version = api_version.rpartition("/")
        for rtype in self._types.values():
            if rtype.group == group and rtype.kind == kind:
                info = rtype.version(version)
                if info is not None:
                    return rtype, info
        return None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions) in a stable order: core first, then built-ins, then CRDs."""
        order: dict[str, list[str]] = {}
        for rtype in self._types.values():
            versions = order.setdefault(rtype.group, [])
            for v in rtype.versions:
                if v.name not in versions:
                    versions.append(v.name)
        return [(g, _sort_versions(vs)) for g, vs in order.items()]

    def in_group_version(self, group: str, version: str) -> list[tuple[ResourceType, VersionInfo]]:
        found = []
        for rtype in self._types.values():
            if rtype.group == group:
                info = rtype.version(version)
                if info is not None:
                    found.append((rtype, info))
        return found


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version ordering: GA > beta > alpha, higher numbers first (sort ascending)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor, version)


def _sort_versions(versions: list[str]) -> list[str]:
    return sorted(versions, key=version_priority)
