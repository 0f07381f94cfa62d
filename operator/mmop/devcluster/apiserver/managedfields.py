"""Field ownership (``metadata.managedFields``) and server-side apply, simplified.

Field sets are sets of paths in the ``fieldsV1`` vocabulary: ``f:<field>`` for map keys,
``k:{"name":"x"}`` for items of associative lists (with ``.`` for the item itself) and
``v:<json>`` for members of set lists; atomic lists and scalars are leaves.

Update requests (PUT, non-apply PATCH, create) give their manager the fields they changed and
take those fields from every other manager. Apply requests (``application/apply-patch+yaml``):

* conflict (409) when another manager owns a field the applied config sets to a different
  value, unless ``force=true``, which takes the field over;
* merge the applied config into the live object (maps recursively, associative lists by
  key, set lists as unions, everything else replaced);
* remove the fields this manager applied before, no longer applies, and nobody else owns;
* record the manager's ``Apply`` entry as exactly the applied field set.

Unlike the real server, list item keys are the patch merge keys only, defaults are not
tracked specially, and ownership is not converted between versions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mmop.devcluster.apiserver import fieldtypes
from mmop.devcluster.apiserver.objects import deep_copy, now

Path = tuple[str, ...]
JsonDict = dict[str, Any]
_TRACKED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
_MISSING = object()


class ApplyConflict(Exception):
    """Fields another manager owns with other values: ``(manager, path)`` pairs."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts
        lines = [f'conflict with "{m}": {p}' for m, p in conflicts]
        noun = "conflict" if len(conflicts) == 1 else "conflicts"
        super().__init__(f"Apply failed with {len(conflicts)} {noun}: " + "\n".join(lines))


def item_key(item: Any, keys: tuple[str, ...]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys}, separators=(",", ":"))


def scope(obj: JsonDict, subresource: str | None, *, status_split: bool) -> JsonDict:
    """The part of an object that field ownership tracks for a (sub)resource write."""
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    if status_split:
        out.pop("status", None)
    meta = obj.get("metadata") or {}
    tracked = {k: meta[k] for k in _TRACKED_METADATA if meta.get(k) not in (None, {}, [])}
    if tracked:
        out["metadata"] = tracked
    return out


def field_paths(obj: Any, node: fieldtypes.Node, prefix: Path = ()) -> set[Path]:
    """The leaf paths of ``obj``."""
    paths: set[Path] = set()
    if not isinstance(obj, dict):
        return paths
    for key, value in obj.items():
        path = (*prefix, "f:" + key)
        child = node.field(key)
        if isinstance(value, dict) and value:
            paths |= field_paths(value, child, path)
        elif isinstance(value, list) and value and child.list_kind == "map":
            for item in value:
                if isinstance(item, dict):
                    item_path = (*path, item_key(item, child.keys))
                    paths.add((*item_path, "."))
                    paths |= field_paths(item, child.items(), item_path)
                else:
                    paths.add(path)
        elif isinstance(value, list) and value and child.list_kind == "set":
            for item in value:
                paths.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
        else:
            paths.add(path)
    return paths


def value_at(obj: Any, path: Path) -> Any:
    for part in path:
        if part == ".":
            return obj
        kind, _, text = part.partition(":")
        if kind == "f":
            if not isinstance(obj, dict) or text not in obj:
                return _MISSING
            obj = obj[text]
        elif kind == "k":
            want = json.loads(text)
            if not isinstance(obj, list):
                return _MISSING
            obj = next(
                (
                    i
                    for i in obj
                    if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())
                ),
                _MISSING,
            )
            if obj is _MISSING:
                return _MISSING
        elif kind == "v":
            value = json.loads(text)
            return value if isinstance(obj, list) and value in obj else _MISSING
    return obj


def changed_paths(
    old: JsonDict, new: JsonDict, node: fieldtypes.Node
) -> tuple[set[Path], set[Path]]:
    """(paths set or changed by ``new``, paths of ``old`` gone in ``new``)."""
    new_paths = field_paths(new, node)
    old_paths = field_paths(old, node)
    changed = {p for p in new_paths if p not in old_paths or value_at(new, p) != value_at(old, p)}
    return changed, old_paths - new_paths


# --- fieldsV1 encoding ------------------------------------------------------------------------


def encode(paths: Iterable[Path]) -> JsonDict:
    tree: JsonDict = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def decode(tree: Any, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    if not isinstance(tree, dict):
        return paths
    for part, child in tree.items():
        path = (*prefix, part)
        if isinstance(child, dict) and child:
            paths |= decode(child, path)
        else:
            paths.add(path)
    return paths


class Entries:
    """A decoded ``managedFields`` list."""

    def __init__(self, managed: list[JsonDict] | None) -> None:
        self.entries: list[JsonDict] = []
        self.paths: list[set[Path]] = []
        for entry in managed or []:
            if isinstance(entry, dict):
                self.entries.append(dict(entry))
                self.paths.append(decode(entry.get("fieldsV1")))

    def _index(self, manager: str, operation: str, subresource: str | None) -> int:
        for i, entry in enumerate(self.entries):
            if (
                entry.get("manager") == manager
                and entry.get("operation") == operation
                and entry.get("subresource") == subresource
            ):
                return i
        entry = {"manager": manager, "operation": operation}
        if subresource:
            entry["subresource"] = subresource
        self.entries.append(entry)
        self.paths.append(set())
        return len(self.entries) - 1

    def same_scope(self, subresource: str | None) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e.get("subresource") == subresource]

    def render(self, *, touched: int | None, api_version: str) -> list[JsonDict]:
        out = []
        for i, (entry, paths) in enumerate(zip(self.entries, self.paths, strict=True)):
            if not paths:
                continue
            entry = dict(entry)
            if i == touched or "time" not in entry:
                entry["time"] = now()
                entry["apiVersion"] = api_version
            entry["fieldsType"] = "FieldsV1"
            entry["fieldsV1"] = encode(paths)
            out.append(entry)
        return out


def record_update(
    *,
    old: JsonDict | None,
    new: JsonDict,
    manager: str,
    subresource: str | None,
    node: fieldtypes.Node,
    status_split: bool,
    api_version: str,
) -> list[JsonDict]:
    """``new``'s managedFields after an Update-operation write by ``manager``."""
    entries = Entries((old or {}).get("metadata", {}).get("managedFields"))
    new_scope = scope(new, subresource, status_split=status_split)
    if old is None:
        changed: set[Path] = field_paths(new_scope, node)
        removed: set[Path] = set()
    else:
        changed, removed = changed_paths(
            scope(old, subresource, status_split=status_split), new_scope, node
        )
    if not changed and not removed:
        return list((old or {}).get("metadata", {}).get("managedFields") or [])
    for paths in entries.paths:
        paths -= changed | removed
    index = entries._index(manager, "Update", subresource) if changed else None
    if index is not None:
        entries.paths[index] |= changed
    return entries.render(touched=index, api_version=api_version)


def apply(
    *,
    live: JsonDict,
    applied: JsonDict,
    manager: str,
    force: bool,
    subresource: str | None,
    node: fieldtypes.Node,
    status_split: bool,
    api_version: str,
) -> JsonDict:
    """The object after ``manager`` applies ``applied`` to ``live`` (both private copies).

    Raises :class:`ApplyConflict`.
    """
    applied_scope = scope(applied, subresource, status_split=status_split)
    applied_paths = field_paths(applied_scope, node)
    entries = Entries(live.get("metadata", {}).get("managedFields"))
    mine = entries._index(manager, "Apply", subresource)
    previous = set(entries.paths[mine])
    conflicts: list[tuple[str, str]] = []
    for i in entries.same_scope(subresource):
        if entries.entries[i].get("manager") == manager:
            continue
        overlap = {p for p in applied_paths & entries.paths[i] if p[-1] != "."}
        clashing = {p for p in overlap if value_at(live, p) != value_at(applied_scope, p)}
        if clashing and force:
            entries.paths[i] -= clashing
        else:
            conflicts += [
                (str(entries.entries[i].get("manager")), _dotted(p)) for p in sorted(clashing)
            ]
    if conflicts:
        raise ApplyConflict(conflicts)
    merged: JsonDict = _merge(live, applied_scope, node)
    others: set[Path] = set()
    for i in entries.same_scope(subresource):
        if i != mine:
            others |= entries.paths[i]
    keep = applied_paths | others
    # parents first: a removed list item takes its fields with it
    for path in sorted(previous - keep, key=lambda p: (len(p) - (p[-1] == "."), p)):
        _remove(merged, path, keep)
    entries.paths[mine] = applied_paths
    merged.setdefault("metadata", {})["managedFields"] = entries.render(
        touched=mine, api_version=api_version
    )
    return merged


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        if part.startswith("f:"):
            out += "." + part[2:]
        elif part.startswith(("k:", "v:")):
            out += "[" + part[2:] + "]"
    return out


def _merge(live: Any, applied: Any, node: fieldtypes.Node) -> Any:
    if not isinstance(applied, dict) or not isinstance(live, dict):
        return deep_copy(applied)
    for key, value in applied.items():
        child = node.field(key)
        current = live.get(key)
        if value is None:
            live.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            live[key] = _merge(current, value, child)
        elif isinstance(value, list) and isinstance(current, list) and child.list_kind == "map":
            result = list(current)
            for item in value:
                if not isinstance(item, dict):
                    result.append(deep_copy(item))
                    continue
                ident = item_key(item, child.keys)
                index = next(
                    (
                        i
                        for i, v in enumerate(result)
                        if isinstance(v, dict) and item_key(v, child.keys) == ident
                    ),
                    None,
                )
                if index is None:
                    result.append(deep_copy(item))
                else:
                    result[index] = _merge(result[index], item, child.items())
            live[key] = result
        elif isinstance(value, list) and isinstance(current, list) and child.list_kind == "set":
            live[key] = current + [v for v in value if v not in current]
        else:
            live[key] = deep_copy(value)
    return live


def _remove(obj: Any, path: Path, keep: set[Path]) -> None:
    """Delete the field at ``path`` unless something kept lives below it."""
    if any(k[: len(path)] == path and k != path for k in keep):
        return
    if path[-1] == ".":
        path = path[:-1]
        if any(k[: len(path)] == path for k in keep):
            return
    parent = value_at(obj, path[:-1])
    last = path[-1]
    kind, _, text = last.partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(text, None)
    elif kind == "k" and isinstance(parent, list):
        want = json.loads(text)
        parent[:] = [
            i
            for i in parent
            if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))
        ]
    elif kind == "v" and isinstance(parent, list):
        value = json.loads(text)
        parent[:] = [i for i in parent if i != value]
