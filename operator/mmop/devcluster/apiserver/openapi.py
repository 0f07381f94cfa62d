"""OpenAPI documents: ``/openapi/v3`` (an index of per-group-version documents) and
``/openapi/v2`` (one JSON document).

Enough for kubectl and helm: every PATCH operation names its kind
(``x-kubernetes-group-version-kind``) and the ``fieldValidation`` parameter, so clients
leave validation to the server; CRD schemas are published in full (``kubectl explain``);
built-in kinds get a placeholder schema (kubectl uses its compiled-in types for them).
Strategic merge is deliberately not listed as a PATCH body type, which makes
``kubectl apply`` compute strategic patches from its compiled-in types, not from these
placeholder schemas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mmop.devcluster.apiserver.objects import deep_copy
from mmop.devcluster.apiserver.resources import Registry, ResourceType, VersionInfo

JsonDict = dict[str, Any]
KUBE_VERSION = "v1.35.0"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_OBJECT_META_SCHEMA: JsonDict = {
    "type": "object",
    "description": "ObjectMeta is metadata that all persisted resources must have.",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "generateName": {"type": "string", "description": "A prefix for a server-generated name."},
        "namespace": {"type": "string", "description": "The namespace of the object."},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Map of string keys and values to organize and select objects.",
        },
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Unstructured key value map set by external tools.",
        },
        "uid": {"type": "string", "description": "UID is the unique identifier of this object."},
        "resourceVersion": {"type": "string", "description": "An opaque version of this object."},
        "generation": {
            "type": "integer",
            "format": "int64",
            "description": "A sequence number of the desired state.",
        },
        "creationTimestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When this object was created.",
        },
        "deletionTimestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When this object will be deleted.",
        },
        "finalizers": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Must be empty before the object is deleted.",
        },
        "ownerReferences": {
            "type": "array",
            "items": {"type": "object"},
            "description": "Objects this object depends on.",
        },
    },
}


def schema_name(rtype: ResourceType, version: str) -> str:
    if rtype.builtin:
        short = rtype.group.split(".")[0] if rtype.group else "core"
        return f"io.k8s.api.{short}.{version}.{rtype.kind}"
    return ".".join(reversed(rtype.group.split("."))) + f".{version}.{rtype.kind}"


def _gvk(rtype: ResourceType, version: str) -> JsonDict:
    return {"group": rtype.group, "version": version, "kind": rtype.kind}


def kind_schema(rtype: ResourceType, info: VersionInfo, *, ref_prefix: str) -> JsonDict:
    if info.schema is not None:
        out: JsonDict = deep_copy(info.schema)
    else:
        out = {
            "type": "object",
            "description": f"{rtype.kind} (no published schema: a built-in kind).",
            "properties": {"spec": {"type": "object"}, "status": {"type": "object"}},
        }
    props = out.setdefault("properties", {})
    props["apiVersion"] = {
        "type": "string",
        "description": "The versioned schema of this representation of an object.",
    }
    props["kind"] = {
        "type": "string",
        "description": "The REST resource this object represents.",
    }
    props["metadata"] = {
        "allOf": [{"$ref": ref_prefix + OBJECT_META}],
        "description": "Standard object's metadata.",
    }
    out["x-kubernetes-group-version-kind"] = [_gvk(rtype, info.name)]
    return out


_PATCH_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation")
] + [{"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}}]


def _operation(
    rtype: ResourceType, version: str, action: str, *, ref: str, patch: bool = False
) -> JsonDict:
    op: JsonDict = {
        "operationId": f"{action}{rtype.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rtype, version),
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}
        },
    }
    if action in ("post", "put", "patch"):
        op["parameters"] = list(_PATCH_PARAMS)
    if patch:
        op["requestBody"] = {
            "content": {
                ct: {"schema": {"type": "object"}}
                for ct in (
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                )
            },
            "required": True,
        }
    elif action in ("post", "put"):
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": ref}}}, "required": True}
    return op


def _paths(rtype: ResourceType, version: str, ref: str) -> JsonDict:
    base = f"/apis/{rtype.group}/{version}" if rtype.group else f"/api/{version}"
    if rtype.namespaced:
        base += "/namespaces/{namespace}"
    collection = f"{base}/{rtype.plural}"
    item = collection + "/{name}"
    paths = {
        collection: {
            "get": _operation(rtype, version, "list", ref=ref),
            "post": _operation(rtype, version, "post", ref=ref),
        },
        item: {
            "get": _operation(rtype, version, "get", ref=ref),
            "put": _operation(rtype, version, "put", ref=ref),
            "patch": _operation(rtype, version, "patch", ref=ref, patch=True),
            "delete": _operation(rtype, version, "delete", ref=ref),
        },
    }
    return paths


def v3_document(registry: Registry, group: str, version: str) -> JsonDict | None:
    found = registry.in_group_version(group, version)
    if not found:
        return None
    prefix = "#/components/schemas/"
    schemas: JsonDict = {OBJECT_META: _OBJECT_META_SCHEMA}
    paths: JsonDict = {}
    for rtype, info in found:
        name = schema_name(rtype, info.name)
        schemas[name] = kind_schema(rtype, info, ref_prefix=prefix)
        paths.update(_paths(rtype, info.name, prefix + name))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def v3_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def document_hash(doc: JsonDict) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()


def v2_document(registry: Registry) -> JsonDict:
    definitions: JsonDict = {OBJECT_META: _OBJECT_META_SCHEMA}
    for rtype in registry.all():
        for info in rtype.versions:
            definitions[schema_name(rtype, info.name)] = kind_schema(
                rtype, info, ref_prefix="#/definitions/"
            )
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": {},
        "definitions": definitions,
    }
