"""CEL rules (``x-kubernetes-validations``): evaluated where possible, skipped where not."""

from __future__ import annotations

import copy
from typing import Any

from mmop.devcluster.apiserver import cel

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {
                    "rule": "self.min <= self.max",
                    "message": "min must not exceed max",
                    "fieldPath": ".min",
                },
                {"rule": "self.notAFunction()"},  # cannot evaluate here: skipped
                {"rule": "self.max >= oldSelf.max", "message": "max may only grow"},
            ],
            "properties": {
                "min": {"type": "integer"},
                "max": {"type": "integer"},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "integer",
                        "x-kubernetes-validations": [{"rule": "self > 0"}],
                    },
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.isSorted()",
                            "message": "steps must be sorted",
                            "reason": "FieldValueForbidden",
                        }
                    ],
                },
                "tags": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "string",
                        "x-kubernetes-validations": [{"rule": "self.size() < 5"}],
                    },
                },
            },
        }
    },
}


def obj(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x"}, "spec": spec}


def test_valid_objects_pass() -> None:
    assert cel.causes(obj(min=1, max=2, steps=[1, 2], tags={"a": "b"}), SCHEMA) == []


def test_false_rules_are_causes() -> None:
    found = cel.causes(obj(min=3, max=2, steps=[2, 1, -1], tags={"a": "toolong"}), SCHEMA)
    assert found == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": min must not exceed max',
            "field": "spec.min",
        },
        {
            "reason": "FieldValueForbidden",
            "message": 'Invalid value: "array": steps must be sorted',
            "field": "spec.steps",
        },
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "integer": failed rule: self > 0',
            "field": "spec.steps[2]",
        },
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "string": failed rule: self.size() < 5',
            "field": "spec.tags.a",
        },
    ]


def test_transition_rules_and_ratcheting() -> None:
    old = obj(min=5, max=4)
    assert cel.causes(obj(min=5, max=4), SCHEMA, old=old) == []  # unchanged: not re-checked
    shrunk = cel.causes(obj(min=1, max=3), SCHEMA, old=old)
    assert [c["message"] for c in shrunk] == ['Invalid value: "object": max may only grow']
    assert cel.causes(obj(min=1, max=3), SCHEMA) == []  # no oldSelf on create


def test_ratcheting_compares_against_the_stored_object_as_read_with_defaults() -> None:
    """An object stored under a permissive schema, then a status write under a stricter one
    that adds a default: the unchanged, invalid spec is not re-checked (the server defaults
    what it reads from storage), while a spec change still is."""
    from mmop.devcluster.apiserver import validation

    strict = copy.deepcopy(SCHEMA)
    strict["properties"]["spec"]["properties"]["mode"] = {"type": "string", "default": "fast"}
    strict["properties"]["status"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    stored = obj(min=5, max=4)  # breaks "min must not exceed max"; stored without `mode`
    status_write = {**copy.deepcopy(stored), "status": {"phase": "Failed"}}
    assert validation.check_custom_object(status_write, strict, old=stored)[1] == []
    spec_write = obj(min=6, max=4)
    causes = validation.check_custom_object(spec_write, strict, old=stored)[1]
    assert [c["message"] for c in causes] == ['Invalid value: "object": min must not exceed max']
