"""How the fields of an object merge: list semantics for strategic merge patch and apply.

Built-in kinds get a small hand-written descriptor of the Go types' patch strategies
(``patchMergeKey`` / ``listType=map``) for the lists that matter; custom resources get the
same information from their CRD schema (``x-kubernetes-list-type``, ``-list-map-keys``).
Unknown fields merge as maps, and unknown lists are atomic (replaced as a whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ListKind = Literal["atomic", "map", "set"]


class Node:
    """A position in an object's type: what its children are and how its lists merge."""

    def field(self, name: str) -> Node:
        return ANY

    def items(self) -> Node:
        return ANY

    @property
    def list_kind(self) -> ListKind:
        return "atomic"

    @property
    def keys(self) -> tuple[str, ...]:
        return ()

    @property
    def retain_keys(self) -> bool:
        return False


ANY = Node()


@dataclass(frozen=True)
class Struct(Node):
    """A Go struct (or object schema) with some fields described."""

    fields: dict[str, Node] = field(default_factory=dict)
    retain: bool = False

    def field(self, name: str) -> Node:
        return self.fields.get(name, ANY)

    @property
    def retain_keys(self) -> bool:
        return self.retain


@dataclass(frozen=True)
class ListOf(Node):
    """A list: ``map`` merges items by ``key_fields``; ``set`` unions scalars."""

    kind: ListKind = "atomic"
    key_fields: tuple[str, ...] = ()
    item: Node = ANY

    def items(self) -> Node:
        return self.item

    @property
    def list_kind(self) -> ListKind:
        return self.kind

    @property
    def keys(self) -> tuple[str, ...]:
        return self.key_fields


def keyed(*keys: str, item: Node = ANY) -> ListOf:
    return ListOf(kind="map", key_fields=keys, item=item)


SET = ListOf(kind="set")


class SchemaNode(Node):
    """A CRD ``openAPIV3Schema`` position."""

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.schema = schema or {}

    def field(self, name: str) -> Node:
        props = self.schema.get("properties") or {}
        if name in props:
            return SchemaNode(props[name])
        extra = self.schema.get("additionalProperties")
        if isinstance(extra, dict):
            return SchemaNode(extra)
        return ANY

    def items(self) -> Node:
        items = self.schema.get("items")
        return SchemaNode(items) if isinstance(items, dict) else ANY

    @property
    def list_kind(self) -> ListKind:
        kind = self.schema.get("x-kubernetes-list-type")
        if kind == "map" and self.schema.get("x-kubernetes-list-map-keys"):
            return "map"
        if kind == "set":
            return "set"
        return "atomic"

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.schema.get("x-kubernetes-list-map-keys") or ())


# --- built-in descriptors ---------------------------------------------------------------------

CONDITIONS = keyed("type")
META = Struct({"ownerReferences": keyed("uid"), "finalizers": SET})
CONTAINER = Struct(
    {
        "ports": keyed("containerPort"),
        "env": keyed("name"),
        "volumeMounts": keyed("mountPath"),
        "volumeDevices": keyed("devicePath"),
    }
)
POD_SPEC = Struct(
    {
        "containers": keyed("name", item=CONTAINER),
        "initContainers": keyed("name", item=CONTAINER),
        "ephemeralContainers": keyed("name", item=CONTAINER),
        "volumes": keyed("name", item=Struct(retain=True)),
        "imagePullSecrets": keyed("name"),
        "hostAliases": keyed("ip"),
        "topologySpreadConstraints": keyed("topologyKey"),
        "schedulingGates": keyed("name"),
        "resourceClaims": keyed("name"),
    }
)
POD_TEMPLATE = Struct({"metadata": META, "spec": POD_SPEC})
WITH_CONDITIONS = Struct({"conditions": CONDITIONS})


def kind_root(*, spec: Node = ANY, status: Node = WITH_CONDITIONS) -> Struct:
    """The descriptor of a whole object of a built-in kind."""
    return Struct({"metadata": META, "spec": spec, "status": status})


PLAIN = kind_root()
POD = kind_root(
    spec=POD_SPEC,
    status=Struct({"conditions": CONDITIONS, "podIPs": keyed("ip"), "hostIPs": keyed("ip")}),
)
WORKLOAD = kind_root(spec=Struct({"template": POD_TEMPLATE}))
CRONJOB = kind_root(
    spec=Struct({"jobTemplate": Struct({"spec": Struct({"template": POD_TEMPLATE})})})
)
SERVICE = kind_root(spec=Struct({"ports": keyed("port")}))
NODE = kind_root(status=Struct({"conditions": CONDITIONS, "addresses": keyed("type")}))
POD_TEMPLATE_KIND = Struct({"metadata": META, "template": POD_TEMPLATE})
