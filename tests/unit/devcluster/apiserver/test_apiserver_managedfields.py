"""Field ownership and the simplified server-side apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mmop.devcluster.apiserver import fieldtypes, managedfields

NODE = fieldtypes.WORKLOAD


def deployment(image: str = "app:1", replicas: int = 2, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels or {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }


def apply(
    live: dict[str, Any], applied: dict[str, Any], manager: str, *, force: bool = False
) -> Any:
    return managedfields.apply(
        live=copy.deepcopy(live),
        applied=copy.deepcopy(applied),
        manager=manager,
        force=force,
        subresource=None,
        node=NODE,
        status_split=True,
        api_version="apps/v1",
    )


def owned(obj: dict[str, Any], manager: str) -> set[tuple[str, ...]]:
    for entry in obj["metadata"].get("managedFields", []):
        if entry["manager"] == manager:
            return managedfields.decode(entry["fieldsV1"])
    return set()


def test_field_paths_use_fieldsv1_vocabulary() -> None:
    obj = {
        "metadata": {"finalizers": ["f"]},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}},
    }
    paths = managedfields.field_paths(obj, NODE)
    assert ("f:metadata", "f:finalizers", 'v:"f"') in paths
    item = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}')
    assert (*item, ".") in paths
    assert (*item, "f:image") in paths
    assert managedfields.decode(managedfields.encode(paths)) == paths


def test_apply_creates_ownership_and_removes_fields_it_stops_applying() -> None:
    first = apply(
        deployment(),
        {**deployment(), "metadata": {"name": "web", "labels": {"app": "web", "x": "1"}}},
        "helm",
    )
    assert first["metadata"]["labels"] == {"app": "web", "x": "1"}
    assert ("f:spec", "f:replicas") in owned(first, "helm")
    second = apply(first, deployment(), "helm")
    assert second["metadata"]["labels"] == {"app": "web"}  # x was helm's, and no longer applied


def test_apply_conflicts_with_another_manager_unless_forced() -> None:
    live = apply(deployment(), deployment(), "helm")
    with pytest.raises(managedfields.ApplyConflict) as caught:
        apply(live, deployment(replicas=5), "kubectl")
    assert caught.value.conflicts == [("helm", ".spec.replicas")]
    forced = apply(live, deployment(replicas=5), "kubectl", force=True)
    assert forced["spec"]["replicas"] == 5
    assert ("f:spec", "f:replicas") in owned(forced, "kubectl")
    assert ("f:spec", "f:replicas") not in owned(forced, "helm")


def test_same_values_are_shared_not_conflicting() -> None:
    live = apply(deployment(), deployment(), "helm")
    shared = apply(live, deployment(), "kubectl")
    assert ("f:spec", "f:replicas") in owned(shared, "helm")
    assert ("f:spec", "f:replicas") in owned(shared, "kubectl")
    # helm stops applying replicas: kubectl still owns it, so it stays
    applied = deployment()
    del applied["spec"]["replicas"]
    after = apply(shared, applied, "helm")
    assert after["spec"]["replicas"] == 2


def test_list_items_merge_by_key() -> None:
    live = apply(deployment(), deployment(), "helm")
    sidecar = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s:1"}]}}},
    }
    merged = apply(live, sidecar, "injector")
    names = [c["name"] for c in merged["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "side"]
    removed = apply(
        merged, {**sidecar, "spec": {"template": {"spec": {"containers": []}}}}, "injector"
    )
    names = [c["name"] for c in removed["spec"]["template"]["spec"]["containers"]]
    assert names == ["app"]


def test_record_update_moves_changed_fields_to_the_writer() -> None:
    live = apply(deployment(), deployment(), "helm")
    new = copy.deepcopy(live)
    new["spec"]["replicas"] = 7
    managed = managedfields.record_update(
        old=live,
        new=new,
        manager="hpa",
        subresource=None,
        node=NODE,
        status_split=True,
        api_version="apps/v1",
    )
    new["metadata"]["managedFields"] = managed
    assert owned(new, "hpa") == {("f:spec", "f:replicas")}
    assert ("f:spec", "f:replicas") not in owned(new, "helm")
    entry = next(e for e in managed if e["manager"] == "hpa")
    assert entry["operation"] == "Update" and entry["fieldsType"] == "FieldsV1"
    with pytest.raises(managedfields.ApplyConflict):
        apply(new, deployment(replicas=2), "helm")
