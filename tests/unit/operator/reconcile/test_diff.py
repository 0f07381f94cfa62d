"""reconcile/diff.py: drift detection and merge patches."""

from __future__ import annotations

from typing import Any

import pytest

from mmop.operator.reconcile.diff import is_subset, merge_patch


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # server defaults and others' fields are fine
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": [{"n": 1}]}, {"a": [{"n": 1, "x": 0}]}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": "x"}, {}, False),
    ],
)
def test_is_subset(desired: Any, actual: Any, expected: bool) -> None:
    assert is_subset(desired, actual) is expected


def test_merge_patch_removes_with_null_and_recurses() -> None:
    old = {"phase": "Progressing", "canaryVersion": "v2", "rollout": {"step": 1, "baseline": {}}}
    new = {"phase": "Ready", "rollout": {"step": 1}}
    assert merge_patch(old, new) == {
        "phase": "Ready",
        "canaryVersion": None,
        "rollout": {"baseline": None},
    }


def test_merge_patch_of_equal_is_none() -> None:
    assert merge_patch({"a": [1], "b": {"c": 1}}, {"a": [1], "b": {"c": 1}}) is None


def test_update_patch_removes_keys_from_owned_maps() -> None:
    from mmop.operator.reconcile.children import update_patch

    desired = {"kind": "Service", "spec": {"selector": {"mmop.io/model": "m"}, "ports": [1]}}
    pinned = {
        "kind": "Service",
        "spec": {
            "selector": {"mmop.io/model": "m", "mmop.io/version": "v1"},
            "ports": [1],
            "clusterIP": "10.0.0.1",
        },
    }
    patch = update_patch(desired, pinned)
    assert patch is not None
    assert patch["spec"]["selector"] == {"mmop.io/version": None}
    # no drift, no patch (server-set fields like clusterIP do not count)
    settled = {
        "kind": "Service",
        "spec": {"selector": {"mmop.io/model": "m"}, "ports": [1], "clusterIP": "10.0.0.1"},
    }
    assert update_patch(desired, settled) is None
    # other kinds keep subset semantics: extra labels set by others are not drift
    dep = {"kind": "Deployment", "metadata": {"labels": {"a": "1"}}}
    assert (
        update_patch(dep, {"kind": "Deployment", "metadata": {"labels": {"a": "1", "b": "2"}}})
        is None
    )
