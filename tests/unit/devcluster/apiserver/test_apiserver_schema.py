"""CRD structural schemas: pruning, defaults, validation causes."""

from __future__ import annotations

from typing import Any

from mmop.devcluster.apiserver import schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "steps": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "batching": {
                    "type": "object",
                    "default": {},
                    "properties": {"maxBatchSize": {"type": "integer", "default": 32}},
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def obj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "x.io/v1", "kind": "X", "metadata": {"name": "a"}, "spec": spec}


def test_prune_reports_and_removes_unknown_fields() -> None:
    data = obj(size=1, bogus=1, labels={"a": "b"}, free={"any": {"thing": 1}})
    data["extra"] = 1
    data["status"] = {"whatever": 1}
    unknown = schema.prune(data, SCHEMA)
    assert sorted(unknown) == ["extra", "spec.bogus"]
    assert data["spec"] == {"size": 1, "labels": {"a": "b"}, "free": {"any": {"thing": 1}}}
    assert data["status"] == {"whatever": 1}
    assert data["metadata"] == {"name": "a"}


def test_defaults_fill_nested_objects() -> None:
    data = obj(size=1)
    schema.apply_defaults(data, SCHEMA)
    assert data["spec"] == {"size": 1, "color": "red", "batching": {"maxBatchSize": 32}}


def causes(**spec: Any) -> list[dict[str, str]]:
    return schema.validate(obj(**spec), SCHEMA)


def test_valid_object_has_no_causes() -> None:
    assert (
        causes(size=3, color="blue", name="abc", port="http", note=None, steps=[1], ratio=0.5) == []
    )
    assert causes(size=3, port=8080) == []


def test_required_enum_bounds() -> None:
    assert causes() == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}
    ]
    (enum,) = causes(size=1, color="green")
    assert enum["reason"] == "FieldValueNotSupported" and enum["field"] == "spec.color"
    assert 'supported values: "red", "blue"' in enum["message"]
    (low,) = causes(size=0)
    assert low == {
        "reason": "FieldValueInvalid",
        "message": "Invalid value: 0: spec.size in body should be greater than or equal to 1",
        "field": "spec.size",
    }
    (high,) = causes(size=11)
    assert "less than or equal to 10" in high["message"]
    (exclusive,) = causes(size=1, ratio=0)
    assert "should be greater than 0" in exclusive["message"]


def test_types_patterns_lengths_items() -> None:
    (wrong,) = causes(size="3")
    assert wrong["reason"] == "FieldValueTypeInvalid"
    assert "must be of type integer" in wrong["message"]
    (pattern,) = causes(size=1, name="ABC")
    assert "should match '^[a-z]+$'" in pattern["message"]
    (long,) = causes(size=1, name="abcdefg")
    assert long["reason"] == "FieldValueTooLong"
    (many,) = causes(size=1, steps=[1, 2, 3])
    assert many["reason"] == "FieldValueTooMany" and many["field"] == "spec.steps"
    (item,) = causes(size=1, steps=["x"])
    assert item["field"] == "spec.steps[0]"
    (null,) = causes(size=1, port=None)  # not pruned here: validation alone sees the null
    assert null["field"] == "spec.port"


def test_non_nullable_nulls_are_pruned_then_defaulted() -> None:
    data = obj(size=1, color=None, note=None)
    assert schema.prune(data, SCHEMA) == []
    schema.apply_defaults(data, SCHEMA)
    assert data["spec"]["color"] == "red"
    assert data["spec"]["note"] is None


def test_json_schema_conversion() -> None:
    converted = schema.to_json_schema(SCHEMA)
    spec = converted["properties"]["spec"]["properties"]
    assert spec["port"]["type"] == ["integer", "string"]
    assert spec["note"]["type"] == ["string", "null"]
    assert "default" not in spec["color"]


def test_duplicates_in_set_and_map_lists() -> None:
    from mmop.devcluster.apiserver.schema import duplicates

    spec_schema = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "x-kubernetes-list-type": "set",
                "items": {"type": "integer"},
            },
            "metrics": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}}},
            },
            "free": {"type": "array", "items": {"type": "integer"}},
        },
    }
    ok = {"steps": [1, 2], "metrics": [{"type": "CPU"}, {"type": "QPS"}], "free": [1, 1]}
    assert duplicates(ok, spec_schema) == []
    bad = {"steps": [1, 1], "metrics": [{"type": "CPU"}, {"type": "CPU", "x": 1}]}
    assert [c["field"] for c in duplicates(bad, spec_schema)] == ["steps[1]", "metrics[1]"]
