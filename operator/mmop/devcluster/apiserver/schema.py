"""Custom resources against their CRD's structural ``openAPIV3Schema``: pruning, defaulting and
validation (via ``jsonschema``), with errors shaped like the real server's field causes.

Not evaluated: ``x-kubernetes-validations`` (CEL rules), ``format`` checks, and the
metadata restrictions; see docs/devcluster-apiserver.md.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from mmop.devcluster.apiserver.objects import deep_copy

JsonDict = dict[str, Any]
_ROOT_SKIP = ("apiVersion", "kind", "metadata")
_DROP_KEYS = ("format", "nullable", "default", "description", "example", "externalDocs")


# --- pruning and defaults ---------------------------------------------------------------------


def prune(obj: Any, schema: JsonDict, *, root: bool = True, path: str = "") -> list[str]:
    """Remove fields the schema does not declare (in place); return their paths."""
    unknown: list[str] = []
    _prune(obj, schema, root=root, path=path, unknown=unknown)
    return unknown


def _prune(obj: Any, schema: JsonDict, *, root: bool, path: str, unknown: list[str]) -> None:
    if isinstance(obj, dict):
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        props: JsonDict = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(obj):
            sub = f"{path}.{key}" if path else key
            if (root or embedded) and key in _ROOT_SKIP:
                continue
            if key in props:
                if obj[key] is None and not props[key].get("nullable"):
                    del obj[key]  # non-nullable nulls are dropped (then defaulted), as for real
                    continue
                _prune(obj[key], props[key], root=False, path=sub, unknown=unknown)
            elif isinstance(extra, dict):
                _prune(obj[key], extra, root=False, path=sub, unknown=unknown)
            elif extra is True or preserve or schema.get("x-kubernetes-int-or-string"):
                continue
            else:
                unknown.append(sub)
                del obj[key]
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(obj):
                _prune(item, items, root=False, path=f"{path}[{i}]", unknown=unknown)


def apply_defaults(obj: Any, schema: JsonDict) -> None:
    """Fill ``default`` values of absent fields (in place), as the server does on every write."""
    if isinstance(obj, dict):
        props: JsonDict = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in obj and isinstance(sub, dict) and "default" in sub:
                obj[key] = deep_copy(sub["default"])
            if key in obj and isinstance(sub, dict):
                apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                if key not in props:
                    apply_defaults(obj[key], extra)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in obj:
                apply_defaults(item, items)


# --- validation -------------------------------------------------------------------------------


def to_json_schema(schema: Any, *, root: bool = True) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema draft 4."""
    if not isinstance(schema, dict):
        return schema
    out: JsonDict = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {
                k: to_json_schema(v, root=False)
                for k, v in value.items()
                if not (root and k in _ROOT_SKIP)
            }
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value, root=False)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [to_json_schema(v, root=False) for v in value]
        elif key in _DROP_KEYS or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


_VALIDATORS: dict[int, tuple[JsonDict, jsonschema.Draft4Validator]] = {}


def validator_for(schema: JsonDict) -> jsonschema.Draft4Validator:
    """A compiled validator, cached per schema object (CRD versions keep theirs until replaced)."""
    found = _VALIDATORS.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_VALIDATORS) > 512:
            _VALIDATORS.clear()
        found = (schema, jsonschema.Draft4Validator(to_json_schema(schema)))
        _VALIDATORS[id(schema)] = found
    return found[1]


def _field(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def type_name(value: Any) -> str:
    """The JSON type of a value, as the server names it in messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _cause(error: jsonschema.ValidationError) -> list[dict[str, str]]:
    field = _field(error.absolute_path)
    where = field or "<root>"
    keyword: Any = error.validator
    expected: Any = error.validator_value
    value: Any = error.instance
    parent: Any = error.schema
    if keyword == "required":
        missing = [p for p in expected if isinstance(value, dict) and p not in value]
        return [
            {
                "reason": "FieldValueRequired",
                "message": "Required value",
                "field": f"{field}.{name}" if field else name,
            }
            for name in missing
        ]
    if keyword == "type":
        want = expected if isinstance(expected, str) else "/".join(expected)
        message = (
            f'Invalid value: "{type_name(value)}": {where} in body must be of type '
            f"{want}: {_show(value)}"
        )
        return [{"reason": "FieldValueTypeInvalid", "message": message, "field": field}]
    if keyword == "enum":
        supported = ", ".join(_show(v) for v in expected)
        return [
            {
                "reason": "FieldValueNotSupported",
                "message": f"Unsupported value: {_show(value)}: supported values: {supported}",
                "field": field,
            }
        ]
    texts = {
        "minimum": f"should be greater than or equal to {expected}",
        "maximum": f"should be less than or equal to {expected}",
        "pattern": f"should match '{expected}'",
        "minLength": f"should be at least {expected} chars long",
        "maxLength": f"may not be more than {expected} bytes",
        "minItems": f"should have at least {expected} items",
        "maxItems": f"must have at most {expected} items",
        "minProperties": f"should have at least {expected} properties",
        "maxProperties": f"should have at most {expected} properties",
        "uniqueItems": "shouldn't contain duplicates",
        "multipleOf": f"should be a multiple of {expected}",
    }
    if (
        keyword in ("minimum", "maximum")
        and isinstance(parent, dict)
        and parent.get(f"exclusive{keyword.title()}")
    ):
        texts[keyword] = texts[keyword].replace(" or equal to", "")
    reason = {"maxLength": "FieldValueTooLong", "maxItems": "FieldValueTooMany"}.get(
        str(keyword), "FieldValueInvalid"
    )
    detail = texts.get(str(keyword), error.message)
    message = f"Invalid value: {_show(value)}: {where} in body {detail}"
    if keyword in ("maxItems", "maxLength"):
        message = f"Too many: {_show(value) if keyword == 'maxLength' else len(value)}: {detail}"
    return [{"reason": reason, "message": message, "field": field}]


def validate(obj: JsonDict, schema: JsonDict) -> list[dict[str, str]]:
    """The causes (``reason``, ``message``, ``field``) why ``obj`` breaks ``schema``."""
    causes: list[dict[str, str]] = []
    errors = sorted(
        validator_for(schema).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))
    )
    for error in errors:
        causes += _cause(error)
    return causes


def duplicates(obj: Any, schema: JsonDict, *, path: str = "") -> list[dict[str, str]]:
    """Causes for repeated items in lists declared ``x-kubernetes-list-type: set`` or ``map``
    (by ``x-kubernetes-list-map-keys``), as the real server reports them."""
    causes: list[dict[str, str]] = []
    if isinstance(obj, list):
        kind = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        items = schema.get("items")
        seen: list[Any] = []
        for i, item in enumerate(obj):
            by_keys = kind == "map" and isinstance(item, dict)
            ident = [item.get(k) for k in keys] if by_keys else item
            if kind in ("set", "map") and ident in seen:
                causes.append(
                    {
                        "reason": "FieldValueDuplicate",
                        "field": f"{path}[{i}]",
                        "message": f"Duplicate value: {_show(ident)}",
                    }
                )
            seen.append(ident)
            if isinstance(items, dict):
                causes += duplicates(item, items, path=f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj and isinstance(sub, dict):
                causes += duplicates(obj[key], sub, path=f"{path}.{key}" if path else key)
    return causes
