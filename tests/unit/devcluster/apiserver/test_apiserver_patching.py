"""JSON merge patch, JSON patch and the error codes clients rely on."""

from __future__ import annotations

import pytest

from mmop.devcluster.apiserver import errors, fieldtypes, patching


def test_merge_patch_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": 1}
    result = patching.merge_patch(target, {"a": {"b": None, "d": 4}, "list": [3], "gone": None})
    assert result == {"a": {"c": 2, "d": 4}, "list": [3]}
    assert patching.merge_patch({"a": 1}, ["x"]) == ["x"]


def test_json_patch_applies_ops() -> None:
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "f2"},
        {"op": "replace", "path": "/spec/x", "value": 2},
        {"op": "remove", "path": "/spec/y"},
    ]
    obj = {"metadata": {"resourceVersion": "5", "finalizers": ["f1"]}, "spec": {"x": 1, "y": 1}}
    assert patching.json_patch(obj, ops) == {
        "metadata": {"resourceVersion": "5", "finalizers": ["f1", "f2"]},
        "spec": {"x": 2},
    }


def test_failed_test_op_is_422() -> None:
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({"metadata": {"resourceVersion": "5"}}, ops)
    assert caught.value.code == 422


def test_missing_path_is_422_and_garbage_is_400() -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({}, [{"op": "remove", "path": "/nope"}])
    assert caught.value.code == 422
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({}, [{"op": "frobnicate", "path": "/x"}])
    assert caught.value.code == 400
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({}, {"op": "add"})
    assert caught.value.code == 400


def test_strategic_merge_is_refused_for_custom_resources() -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.apply_patch(
            {}, {}, content_type=patching.STRATEGIC, node=fieldtypes.ANY, builtin=False
        )
    assert caught.value.code == 415
    result = patching.apply_patch(
        {"spec": {"a": 1}},
        {"spec": {"b": 2}},
        content_type=patching.STRATEGIC,
        node=fieldtypes.PLAIN,
        builtin=True,
    )
    assert result == {"spec": {"a": 1, "b": 2}}
