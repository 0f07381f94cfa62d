"""Strategic merge patch with the built-in patch merge keys and directives."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mmop.devcluster.apiserver import fieldtypes, strategic

DEPLOYMENT: dict[str, Any] = {
    "metadata": {
        "name": "web",
        "labels": {"app": "web", "old": "x"},
        "finalizers": ["a", "b"],
        "ownerReferences": [{"uid": "u1", "name": "o1"}, {"uid": "u2", "name": "o2"}],
    },
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "name": "http"}],
                        "volumeMounts": [{"name": "v", "mountPath": "/data"}],
                    },
                    {"name": "side", "image": "side:1"},
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "a"}, {"key": "b"}],
            }
        },
    },
    "status": {"conditions": [{"type": "Available", "status": "False"}]},
}


def patched(patch: dict[str, Any], node: fieldtypes.Node = fieldtypes.WORKLOAD) -> Any:
    return strategic.strategic_merge(copy.deepcopy(DEPLOYMENT), patch, node)


def containers(obj: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def test_containers_merge_by_name_and_env_by_name() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:2",
                            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                        }
                    ]
                }
            }
        }
    }
    result = patched(patch)
    app, side = containers(result)
    assert app["image"] == "app:2"
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert app["ports"] == [{"containerPort": 80, "name": "http"}]  # untouched
    assert side == {"name": "side", "image": "side:1"}


def test_new_list_item_is_appended_and_ports_merge_by_container_port() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "ports": [
                                {"containerPort": 80, "protocol": "TCP"},
                                {"containerPort": 9090},
                            ],
                        },
                        {"name": "new", "image": "new:1"},
                    ]
                }
            }
        }
    }
    result = patched(patch)
    assert [c["name"] for c in containers(result)] == ["app", "side", "new"]
    assert containers(result)[0]["ports"] == [
        {"containerPort": 80, "name": "http", "protocol": "TCP"},
        {"containerPort": 9090},
    ]


def test_patch_delete_directive_in_list_and_map() -> None:
    patch = {
        "metadata": {"labels": {"old": None}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "side", "$patch": "delete"}],
                    "volumes": [{"name": "v", "$patch": "delete"}],
                }
            }
        },
        "status": {"$patch": "delete"},
    }
    result = patched(patch)
    assert [c["name"] for c in containers(result)] == ["app"]
    assert result["spec"]["template"]["spec"]["volumes"] == []
    assert result["metadata"]["labels"] == {"app": "web"}
    assert "status" not in result


def test_replace_directives() -> None:
    result = patched({"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert result["metadata"]["labels"] == {"only": "this"}
    result = patched(
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]
                    }
                }
            }
        }
    )
    assert containers(result) == [{"name": "solo", "image": "solo:1"}]


def test_lists_without_merge_key_are_replaced() -> None:
    result = patched({"spec": {"template": {"spec": {"tolerations": [{"key": "c"}]}}}})
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "c"}]


def test_retain_keys_on_volumes() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {
                            "name": "v",
                            "configMap": {"name": "cm"},
                            "$retainKeys": ["configMap", "name"],
                        }
                    ]
                }
            }
        }
    }
    result = patched(patch)
    assert result["spec"]["template"]["spec"]["volumes"] == [
        {"name": "v", "configMap": {"name": "cm"}}
    ]


def test_finalizers_are_a_set_and_owner_references_merge_by_uid() -> None:
    patch = {
        "metadata": {
            "finalizers": ["b", "c"],
            "$deleteFromPrimitiveList/finalizers": ["a"],
            "ownerReferences": [
                {"uid": "u2", "name": "renamed"},
                {"uid": "u1", "$patch": "delete"},
            ],
        }
    }
    result = patched(patch)
    assert result["metadata"]["finalizers"] == ["b", "c"]
    assert result["metadata"]["ownerReferences"] == [{"uid": "u2", "name": "renamed"}]


def test_conditions_merge_by_type() -> None:
    patch = {
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "True"},
                {"type": "Available", "status": "True"},
            ]
        }
    }
    result = patched(patch)
    assert result["status"]["conditions"] == [
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "True"},
    ]


def test_set_element_order() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                    "containers": [{"name": "app", "image": "app:3"}],
                }
            }
        }
    }
    result = patched(patch)
    assert [c["name"] for c in containers(result)] == ["side", "app"]
    assert containers(result)[1]["image"] == "app:3"


def test_service_ports_merge_by_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    result = strategic.strategic_merge(
        svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, fieldtypes.SERVICE
    )
    assert result["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_bad_patches() -> None:
    with pytest.raises(strategic.PatchError):
        patched({"metadata": {"$patch": "explode"}})
    with pytest.raises(strategic.PatchError):
        strategic.strategic_merge({}, [1, 2], fieldtypes.PLAIN)
    with pytest.raises(strategic.PatchError):
        patched({"spec": {"template": {"spec": {"containers": ["not-a-map"]}}}})
