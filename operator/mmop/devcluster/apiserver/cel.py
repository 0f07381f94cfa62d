"""``x-kubernetes-validations`` (CEL rules) of CRD schemas, best effort, via ``cel-python``.

Each rule runs on the node that declares it, with ``self`` (and ``oldSelf`` for transition
rules on updates). A rule that evaluates to false rejects the write (422, like a real server).
A rule this evaluator cannot compile or evaluate (Kubernetes-only library functions, escaped
property names such as ``__namespace__``, a missing optional field) is skipped, never
rejects: more permissive than a real server, on purpose. Unchanged subtrees are not
re-checked on updates (the real server's validation ratcheting).
"""

from __future__ import annotations

import functools
import itertools
import logging
from typing import Any

from mmop.devcluster.apiserver.schema import type_name as _type_name

JsonDict = dict[str, Any]
logger = logging.getLogger(__name__)
NO_OLD: Any = object()  # no previous object (a create)
_MISSING = NO_OLD


def _is_sorted(value: Any) -> Any:
    from celpy import celtypes

    items = list(value)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


@functools.lru_cache(maxsize=1024)
def _program(rule: str) -> Any:
    """The compiled rule, or None when cel-python cannot compile it."""
    import celpy

    try:
        env = celpy.Environment()
        return env.program(env.compile(rule), functions={"isSorted": _is_sorted})
    except Exception as exc:  # an unsupported rule is skipped, see the module docstring
        logger.debug("CEL rule not compiled, skipped: %r: %s", rule, exc)
        return None


def _evaluate(rule: JsonDict, value: Any, old: Any) -> bool | None:
    """True/False, or None when the rule cannot be evaluated here."""
    import celpy

    text = str(rule.get("rule", ""))
    transition = "oldSelf" in text
    if transition and old is _MISSING:
        return None
    program = _program(text)
    if program is None:
        return None
    activation = {"self": celpy.json_to_cel(value)}  # type: ignore[attr-defined]
    if transition:
        activation["oldSelf"] = celpy.json_to_cel(old)  # type: ignore[attr-defined]
    try:
        result = program.evaluate(activation)
    except Exception:
        return None
    if isinstance(result, Exception):
        return None
    return bool(result)


def causes(value: Any, schema: JsonDict, *, old: Any = _MISSING, path: str = "") -> list[JsonDict]:
    """The 422 causes of the rules ``value`` (at ``path``) breaks."""
    if old is not _MISSING and value == old:
        return []
    found: list[JsonDict] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if not isinstance(rule, dict) or _evaluate(rule, value, old) is not False:
            continue
        field = path + str(rule.get("fieldPath") or "")
        message = rule.get("message") or f"failed rule: {rule.get('rule')}"
        found.append(
            {
                "reason": str(rule.get("reason") or "FieldValueInvalid"),
                "message": f'Invalid value: "{_type_name(value)}": {message}',
                "field": field.lstrip("."),
            }
        )
    if isinstance(value, dict):
        props: JsonDict = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if isinstance(sub, dict):
                before = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                found += causes(child, sub, old=before, path=f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += causes(item, schema["items"], path=f"{path}[{i}]")
    return found
