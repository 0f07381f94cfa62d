"""Decoding the protobuf request bodies that kubectl and helm send for a few core kinds.

``application/vnd.kubernetes.protobuf`` bodies are ``k8s\\x00`` followed by a
``runtime.Unknown`` message (typeMeta, raw bytes of the object's message). Only the messages
needed are described here: Secret, ConfigMap, Namespace, ServiceAccount and DeleteOptions,
with ObjectMeta and what it contains. Answers are always JSON, which client-go accepts since
it lists ``application/json`` too.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """A body this decoder cannot read (answered with 415 or 400)."""


@dataclass(frozen=True)
class F:
    """One field: its JSON name, how to decode it, whether it repeats."""

    name: str
    kind: str  # string | bytes | int | bool | time | map_string | map_bytes | fields | message
    repeated: bool = False
    message: dict[int, F] | None = None
    omit_zero: bool = False


Message = dict[int, F]


# --- the wire format --------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) triples of one message."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated length-delimited field")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire == 1:
            yield number, wire, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == 5:
            yield number, wire, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = nanos = 0
    for number, _, value in fields(data):
        if number == 1 and isinstance(value, int):
            seconds = _signed(value)
        elif number == 2 and isinstance(value, int):
            nanos = value
    if seconds == 0 and nanos == 0:
        return None
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in fields(data):
        if number == 1 and isinstance(raw, bytes):
            key = raw.decode()
        elif number == 2 and isinstance(raw, bytes):
            value = raw
    return key, value


def decode_message(data: bytes, message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, _, raw in fields(data):
        spec = message.get(number)
        if spec is None:
            continue  # a field this decoder does not know: ignore, as proto does
        value: Any
        if spec.kind in ("map_string", "map_bytes"):
            if not isinstance(raw, bytes):
                raise ProtobufError(f"{spec.name}: expected a map entry")
            key, data_value = _entry(raw)
            target = out.setdefault(spec.name, {})
            target[key] = (
                data_value.decode()
                if spec.kind == "map_string"
                else base64.b64encode(data_value).decode()
            )
            continue
        if isinstance(raw, int):
            if spec.kind == "bool":
                value = bool(raw)
            elif spec.kind == "int":
                value = _signed(raw)
                if spec.omit_zero and value == 0:
                    continue
            else:
                raise ProtobufError(f"{spec.name}: unexpected varint")
        elif spec.kind == "string":
            value = raw.decode()
            if value == "" and not spec.repeated:
                continue
        elif spec.kind == "bytes":
            value = base64.b64encode(raw).decode()
        elif spec.kind == "time":
            value = _time(raw)
            if value is None:
                continue
        elif spec.kind == "fields":
            value = next(
                (json.loads(v) for n, _, v in fields(raw) if n == 1 and isinstance(v, bytes)), {}
            )
        elif spec.kind == "message" and spec.message is not None:
            value = decode_message(raw, spec.message)
        else:
            raise ProtobufError(f"{spec.name}: unexpected length-delimited field")
        if spec.repeated:
            out.setdefault(spec.name, []).append(value)
        else:
            out[spec.name] = value
    return out


# --- the messages -----------------------------------------------------------------------------

OWNER_REFERENCE: Message = {
    1: F("kind", "string"),
    3: F("name", "string"),
    4: F("uid", "string"),
    5: F("apiVersion", "string"),
    6: F("controller", "bool"),
    7: F("blockOwnerDeletion", "bool"),
}
MANAGED_FIELDS_ENTRY: Message = {
    1: F("manager", "string"),
    2: F("operation", "string"),
    3: F("apiVersion", "string"),
    4: F("time", "time"),
    6: F("fieldsType", "string"),
    7: F("fieldsV1", "fields"),
    8: F("subresource", "string"),
}
OBJECT_META: Message = {
    1: F("name", "string"),
    2: F("generateName", "string"),
    3: F("namespace", "string"),
    4: F("selfLink", "string"),
    5: F("uid", "string"),
    6: F("resourceVersion", "string"),
    7: F("generation", "int", omit_zero=True),
    8: F("creationTimestamp", "time"),
    9: F("deletionTimestamp", "time"),
    10: F("deletionGracePeriodSeconds", "int"),
    11: F("labels", "map_string"),
    12: F("annotations", "map_string"),
    13: F("ownerReferences", "message", repeated=True, message=OWNER_REFERENCE),
    14: F("finalizers", "string", repeated=True),
    17: F("managedFields", "message", repeated=True, message=MANAGED_FIELDS_ENTRY),
}
_META = F("metadata", "message", message=OBJECT_META)
SECRET: Message = {
    1: _META,
    2: F("data", "map_bytes"),
    3: F("type", "string"),
    4: F("stringData", "map_string"),
    5: F("immutable", "bool"),
}
CONFIG_MAP: Message = {
    1: _META,
    2: F("data", "map_string"),
    3: F("binaryData", "map_bytes"),
    4: F("immutable", "bool"),
}
NAMESPACE_CONDITION: Message = {
    1: F("type", "string"),
    2: F("status", "string"),
    4: F("lastTransitionTime", "time"),
    5: F("reason", "string"),
    6: F("message", "string"),
}
NAMESPACE: Message = {
    1: _META,
    2: F("spec", "message", message={1: F("finalizers", "string", repeated=True)}),
    3: F(
        "status",
        "message",
        message={
            1: F("phase", "string"),
            2: F("conditions", "message", repeated=True, message=NAMESPACE_CONDITION),
        },
    ),
}
OBJECT_REFERENCE: Message = {
    1: F("kind", "string"),
    2: F("namespace", "string"),
    3: F("name", "string"),
    4: F("uid", "string"),
    5: F("apiVersion", "string"),
    6: F("resourceVersion", "string"),
    7: F("fieldPath", "string"),
}
SERVICE_ACCOUNT: Message = {
    1: _META,
    2: F("secrets", "message", repeated=True, message=OBJECT_REFERENCE),
    3: F("imagePullSecrets", "message", repeated=True, message={1: F("name", "string")}),
    4: F("automountServiceAccountToken", "bool"),
}
DELETE_OPTIONS: Message = {
    1: F("gracePeriodSeconds", "int"),
    2: F(
        "preconditions",
        "message",
        message={1: F("uid", "string"), 2: F("resourceVersion", "string")},
    ),
    3: F("orphanDependents", "bool"),
    4: F("propagationPolicy", "string"),
    5: F("dryRun", "string", repeated=True),
}
MESSAGES: dict[str, Message] = {
    "Secret": SECRET,
    "ConfigMap": CONFIG_MAP,
    "Namespace": NAMESPACE,
    "ServiceAccount": SERVICE_ACCOUNT,
    "DeleteOptions": DELETE_OPTIONS,
}
_TYPE_META: Message = {1: F("apiVersion", "string"), 2: F("kind", "string")}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as its JSON form (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    type_meta: dict[str, Any] = {}
    raw = b""
    for number, _, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            type_meta = decode_message(value, _TYPE_META)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    kind = str(type_meta.get("kind", ""))
    message = MESSAGES.get(kind)
    if message is None:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported; send JSON")
    obj = decode_message(raw, message)
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
