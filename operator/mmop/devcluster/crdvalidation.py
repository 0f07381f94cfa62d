"""Validate a custom object against a CRD version's openAPIV3Schema like an API server does.

Three passes, in the API server's order: apply ``default``s, check the structural schema
(types, enums, bounds, patterns, required; via ``jsonschema``), then evaluate the
``x-kubernetes-validations`` CEL rules (via ``cel-python``, plus the Kubernetes list
functions our rules use). Used by the embedded API server and by the tests of the CRD.
"""

from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import dataclass
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

_X_KEYS = (
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
)


@dataclass(frozen=True)
class FieldError:
    """One problem, at a path like ``spec.rollout.steps``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of ``obj`` with the schema's defaults filled in (objects, recursively)."""
    obj = copy.deepcopy(obj)
    _default_into(schema, obj)
    return obj


def _default_into(schema: dict[str, Any], obj: Any) -> None:
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _default_into(sub, obj[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if key not in (schema.get("properties") or {}):
                    _default_into(extra, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _default_into(schema["items"], item)


def _strip(schema: Any) -> Any:
    """The schema with Kubernetes extensions removed and unknown fields refused where the
    schema does not preserve them (a real server prunes them; we report them instead)."""
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strip(v) for k, v in schema.items() if k not in _X_KEYS and k != "default"}
    if "properties" in schema:
        out["properties"] = {k: _strip(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and (
            "additionalProperties" not in schema
        ):
            out["additionalProperties"] = False
    return out


def structural_errors(schema: dict[str, Any], obj: Any, *, root: str = "") -> list[FieldError]:
    validator = jsonschema.Draft4Validator(_strip(schema))
    errors = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join([root] * bool(root) + [str(p) for p in error.absolute_path])
        errors.append(FieldError(path, error.message))
    return errors


def list_type_errors(schema: dict[str, Any], obj: Any, *, path: str = "") -> list[FieldError]:
    """Duplicates in lists declared ``x-kubernetes-list-type: set`` or ``map``."""
    errors: list[FieldError] = []
    if isinstance(obj, list):
        kind = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list[Any] = []
        for i, item in enumerate(obj):
            ident = (
                [item.get(k) for k in keys] if kind == "map" and isinstance(item, dict) else item
            )
            if kind in ("set", "map") and ident in seen:
                errors.append(FieldError(f"{path}[{i}]", f"Duplicate value: {ident!r}"))
            seen.append(ident)
            if isinstance(schema.get("items"), dict):
                errors += list_type_errors(schema["items"], item, path=f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                errors += list_type_errors(sub, obj[key], path=f"{path}.{key}" if path else key)
    return errors


def _is_sorted(value: Any) -> celtypes.BoolType:
    items = list(value)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


_CEL_FUNCTIONS: dict[str, Any] = {"isSorted": _is_sorted}


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=_CEL_FUNCTIONS)


def cel_errors(schema: dict[str, Any], obj: Any, *, path: str = "") -> list[FieldError]:
    """Evaluate every x-kubernetes-validations rule on the node it is declared on."""
    errors: list[FieldError] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            activation = {"self": celpy.json_to_cel(obj)}  # type: ignore[attr-defined]
            result = _program(rule["rule"]).evaluate(activation)
        except Exception as error:  # a rule that cannot evaluate is reported, as a server does
            errors.append(FieldError(path, f"rule {rule['rule']!r} failed: {error}"))
            continue
        if not bool(result):
            where = path + rule.get("fieldPath", "") if path else rule.get("fieldPath", "")
            errors.append(FieldError(where.lstrip("."), rule.get("message") or rule["rule"]))
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                errors += cel_errors(sub, obj[key], path=f"{path}.{key}" if path else key)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += cel_errors(schema["items"], item, path=f"{path}[{i}]")
    return errors


_ROOT_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}


def validate(
    schema: dict[str, Any], obj: dict[str, Any]
) -> tuple[dict[str, Any], list[FieldError]]:
    """(the defaulted object, its problems). CEL runs only on structurally valid objects."""
    # Every object has apiVersion, kind and metadata, whether the CRD's schema says so or not.
    schema = {**schema, "properties": {**_ROOT_FIELDS, **(schema.get("properties") or {})}}
    defaulted = apply_defaults(schema, obj)
    problems = structural_errors(schema, defaulted) + list_type_errors(schema, defaulted)
    if not problems:
        problems = cel_errors(schema, defaulted)
    return defaulted, problems
