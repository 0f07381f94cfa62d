"""Strategic merge patch (``application/strategic-merge-patch+json``) for built-in kinds.

Maps merge recursively and ``null`` deletes; lists described by :mod:`.fieldtypes` merge by
their patch merge key (``containers`` by ``name``, ``ports`` by ``containerPort``, ...) or as
sets of scalars (``finalizers``); every other list is replaced. Directives: ``$patch``
(``merge`` / ``replace`` / ``delete``, in maps and list items), ``$retainKeys``,
``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``.
"""

from __future__ import annotations

from typing import Any

from mmop.devcluster.apiserver import fieldtypes
from mmop.devcluster.apiserver.objects import deep_copy

_DELETE = object()
_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


class PatchError(ValueError):
    """A malformed patch (answered with 400 BadRequest)."""


def strategic_merge(original: Any, patch: Any, node: fieldtypes.Node) -> Any:
    """``original`` patched by ``patch``; ``original`` is consumed (mutated), pass a copy."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    result = _merge_map(original if isinstance(original, dict) else {}, patch, node)
    return {} if result is _DELETE else result


def clean(value: Any) -> Any:
    """A copy of ``value`` without patch directives (for content the patch adds wholesale)."""
    if isinstance(value, dict):
        return {
            k: clean(v)
            for k, v in value.items()
            if not (k.startswith("$") and (k in ("$patch", "$retainKeys") or "/" in k))
        }
    if isinstance(value, list):
        return [clean(v) for v in value if not (isinstance(v, dict) and set(v) == {"$patch"})]
    return value


def _merge_map(original: dict[str, Any], patch: dict[str, Any], node: fieldtypes.Node) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return clean(patch)
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive!r}")
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list")
        for key in [k for k in original if k not in retain]:
            del original[key]
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"{key} must be a list")
            orders[key[len(_ORDER) :]] = value
            continue
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM) :]
            current = original.get(field)
            if isinstance(current, list) and isinstance(value, list):
                original[field] = [v for v in current if v not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        child = node.field(key)
        current = original.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, child)
            if merged is _DELETE:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _merge_list(
                current if isinstance(current, list) else None, value, child
            )
        else:
            original[key] = value
    for field, order in orders.items():
        current = original.get(field)
        if isinstance(current, list):
            original[field] = _reorder(current, order, node.field(field))
    return original


def _merge_list(current: list[Any] | None, patch: list[Any], node: fieldtypes.Node) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" and len(i) == 1 for i in patch):
        return clean(patch)  # type: ignore[no-any-return]
    if current is None or node.list_kind == "atomic":
        return clean(patch)  # type: ignore[no-any-return]
    if node.list_kind == "set":
        result = list(current)
        for value in patch:
            if value not in result:
                result.append(value)
        return result
    key = node.keys[0]
    result = list(current)
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list items merged by {key!r} must be objects")
        if key not in item:
            if item.get("$patch") == "delete":
                raise PatchError(f"a $patch: delete item needs its merge key {key!r}")
            result.append(clean(item))
            continue
        index = next(
            (i for i, v in enumerate(result) if isinstance(v, dict) and v.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(clean(item))
        else:
            merged = _merge_map(deep_copy(result[index]), item, node.items())
            if merged is _DELETE:
                del result[index]
            else:
                result[index] = merged
    return result


def _reorder(items: list[Any], order: list[Any], node: fieldtypes.Node) -> list[Any]:
    """``$setElementOrder``: listed elements first in the listed order, the rest after."""
    if node.list_kind == "map":
        key = node.keys[0]

        def identity(v: Any) -> Any:
            return v.get(key) if isinstance(v, dict) else v

        wanted = [identity(o) for o in order]
    else:

        def identity(v: Any) -> Any:
            return v

        wanted = list(order)
    placed: list[Any] = []
    rest = list(items)
    for ident in wanted:
        for i, item in enumerate(rest):
            if identity(item) == ident:
                placed.append(rest.pop(i))
                break
    return placed + rest
