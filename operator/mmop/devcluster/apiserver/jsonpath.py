"""The JSONPath subset that printer columns use.

Supported: ``.a.b``, ``.a['b.c']``, ``.labels.app\\.kubernetes\\.io/name``, ``[0]``, ``[-1]``,
``[*]``, and filters ``[?(@.type=="Ready")]`` (``==``/``!=`` against a string or number, or
bare ``@.x`` for existence), optionally wrapped in ``{}`` and/or starting with ``$``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any


class JsonPathError(ValueError):
    pass


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Index:
    index: int | None  # None: every item ([*])


@dataclass(frozen=True)
class _Filter:
    path: tuple[str, ...]
    op: str | None  # "==", "!=", or None (existence)
    value: Any = None


_Step = _Field | _Index | _Filter
_FILTER_RE = re.compile(r"^\?\(\s*@((?:\.[^=!<>\s)]+)*)\s*(?:(==|!=)\s*(.+?))?\s*\)$")


@functools.lru_cache(maxsize=1024)
def compile_path(text: str) -> tuple[_Step, ...]:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[_Step] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ".":
            i += 1
            name = []
            while i < len(text) and text[i] not in ".[":
                if text[i] == "\\" and i + 1 < len(text):
                    i += 1
                name.append(text[i])
                i += 1
            if name:
                steps.append(_Field("".join(name)))
        elif ch == "[":
            end = _closing_bracket(text, i)
            inner = text[i + 1 : end].strip()
            steps.append(_bracket(inner, text))
            i = end + 1
        else:
            raise JsonPathError(f"unexpected {ch!r} at {i} in {text!r}")
    return tuple(steps)


def _closing_bracket(text: str, start: int) -> int:
    depth, quote = 0, ""
    for j in range(start, len(text)):
        ch = text[j]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return j
    raise JsonPathError(f"unclosed [ in {text!r}")


def _bracket(inner: str, text: str) -> _Step:
    if inner == "*":
        return _Index(None)
    if re.fullmatch(r"-?\d+", inner):
        return _Index(int(inner))
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return _Field(inner[1:-1])
    m = _FILTER_RE.match(inner)
    if m:
        path = tuple(p for p in m.group(1).split(".") if p)
        op = m.group(2)
        value: Any = None
        if op is not None:
            raw = m.group(3).strip()
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
                value = raw[1:-1]
            else:
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    raise JsonPathError(f"bad filter value {raw!r} in {text!r}") from exc
        return _Filter(path, op, value)
    raise JsonPathError(f"unsupported expression [{inner}] in {text!r}")


def _lookup(value: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def evaluate(steps: tuple[_Step, ...], obj: Any) -> list[Any]:
    current = [obj]
    for step in steps:
        found: list[Any] = []
        for value in current:
            if isinstance(step, _Field):
                if isinstance(value, dict) and step.name in value:
                    found.append(value[step.name])
            elif isinstance(step, _Index):
                if isinstance(value, list):
                    if step.index is None:
                        found.extend(value)
                    elif -len(value) <= step.index < len(value):
                        found.append(value[step.index])
            elif isinstance(value, list):
                found.extend(item for item in value if _passes(step, item))
        current = found
    return current


def _passes(step: _Filter, item: Any) -> bool:
    present, value = _lookup(item, step.path)
    if step.op is None:
        return present
    equal = present and (value == step.value or str(value) == str(step.value))
    return equal if step.op == "==" else not equal


def first(text: str, obj: Any) -> Any:
    """The first result of ``text`` on ``obj``, or None."""
    results = evaluate(compile_path(text), obj)
    return results[0] if results else None
