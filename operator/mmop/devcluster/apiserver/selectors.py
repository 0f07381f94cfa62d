"""Label and field selectors: parsing the query-string syntax and matching objects.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
``a>1``, ``a<1``, comma-separated (all must hold). Field selectors: ``path=value``,
``path==value``, ``path!=value`` over dotted field paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class SelectorError(ValueError):
    """A selector that does not parse (answered with 400 BadRequest)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in ("gt", "lt"):
            try:
                have, want = int(str(value)), int(self.values[0])
            except (TypeError, ValueError):
                return False
            return have > want if self.op == "gt" else have < want
        raise AssertionError(self.op)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str, source: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {source!r}")
    return key


def _check_value(value: str, source: str) -> str:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(
            f"unable to parse requirement: invalid label value {value!r} in {source!r}"
        )
    return value


_SET_RE = re.compile(r"^\s*(?P<key>\S+?)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^=!<>\s]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^=!<>]*?)\s*$")


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    requirements = []
    for raw in _split_top_level(text):
        part = raw.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: empty requirement in {text!r}")
        if m := _SET_RE.match(part):
            values = tuple(_check_value(v.strip(), text) for v in m.group("values").split(","))
            requirements.append(
                Requirement(_check_key(m.group("key"), text), m.group("op"), values)
            )
        elif m := _CMP_RE.match(part):
            op = {"==": "=", ">": "gt", "<": "lt"}.get(m.group("op"), m.group("op"))
            value = m.group("value")
            if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
                raise SelectorError(f"unable to parse requirement: {value!r} is not an integer")
            requirements.append(
                Requirement(_check_key(m.group("key"), text), op, (_check_value(value, text),))
            )
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip(), text), "!"))
        else:
            requirements.append(Requirement(_check_key(part, text), "exists"))
    return LabelSelector(tuple(requirements))


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels / matchExpressions) as a :class:`LabelSelector`."""
    if not selector:
        return LabelSelector()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is not None:
            reqs.append(
                Requirement(str(expr.get("key")), op, tuple(map(str, expr.get("values") or ())))
            )
    return LabelSelector(tuple(reqs))


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """The query-string form of a metav1.LabelSelector (for ``Scale.status.selector``)."""
    parts = []
    for req in selector_from_object(selector).requirements:
        if req.op == "=":
            parts.append(f"{req.key}={req.values[0]}")
        elif req.op in ("in", "notin"):
            parts.append(f"{req.key} {req.op} ({','.join(sorted(req.values))})")
        elif req.op == "exists":
            parts.append(req.key)
        elif req.op == "!":
            parts.append(f"!{req.key}")
    return ",".join(parts)


# --- fields -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(r.field for r in self.requirements)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.requirements:
            if (field_value(obj, req.field) == req.value) == req.negate:
                return False
        return True

    def exact_name(self) -> str | None:
        """The name an ``metadata.name=x`` requirement pins (lets lists skip a scan)."""
        for req in self.requirements:
            if req.field == "metadata.name" and not req.negate:
                return req.value
        return None


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_unescaped(text: str, sep: str) -> list[str]:
    return [p for p in re.split(rf"(?<!\\){re.escape(sep)}", text)]


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    reqs = []
    for part in _split_unescaped(text, ","):
        part = part.strip()
        m = re.match(r"^([^=!]+?)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {part!r}")
        reqs.append(FieldRequirement(m.group(1).strip(), _unescape(m.group(3)), m.group(2) == "!="))
    return FieldSelector(tuple(reqs))


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """A field's value as a field selector compares it (a string; missing is "")."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            value = None
            break
        value = value.get(part)
    if path == "source" and isinstance(value, Mapping):  # core Event: source.component
        value = value.get("component")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
