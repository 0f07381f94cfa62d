"""PATCH flavours over HTTP: merge, JSON (kopf's ``test`` op), strategic, server-side apply."""

from __future__ import annotations

from typing import Any

import httpx

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}
APPLY = {"Content-Type": "application/apply-patch+yaml"}


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}
                    ]
                },
            },
            **spec,
        },
    }


def test_json_patch_test_op_guards_like_kopf_expects(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/c"
    obj = http.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        json={"metadata": {"name": "c", "finalizers": ["x/y"]}},
    ).json()
    rv = obj["metadata"]["resourceVersion"]
    ok = http.patch(
        path,
        headers=JSON,
        json=[
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ],
    )
    assert ok.status_code == 200
    assert not ok.json()["metadata"].get("finalizers")
    stale = http.patch(
        path,
        headers=JSON,
        json=[
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
        ],
    )
    assert stale.status_code == 422
    assert http.get(path).json()["metadata"].get("labels") is None


def test_merge_patch_nulls_delete(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/c"
    http.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        json={"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}},
    )
    result = http.patch(path, headers=MERGE, json={"data": {"a": None, "c": "3"}}).json()
    assert result["data"] == {"b": "2", "c": "3"}


def test_strategic_merge_on_deployments(http: httpx.Client, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    http.post(base, json=deployment())
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "B", "value": "2"}]},
                        {"name": "side", "image": "side:1"},
                    ]
                }
            }
        }
    }
    result = http.patch(f"{base}/web", headers=STRATEGIC, json=patch).json()
    containers = result["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "side"]
    assert containers[0]["image"] == "app:1"
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert result["metadata"]["generation"] == 2
    merge = http.patch(
        f"{base}/web",
        headers=MERGE,
        json={"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}},
    ).json()
    assert [c["name"] for c in merge["spec"]["template"]["spec"]["containers"]] == ["only"]


def test_strategic_merge_is_415_for_custom_resources(http: httpx.Client, namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.patch.example.com"},
        "spec": {
            "group": "patch.example.com",
            "scope": "Namespaced",
            "names": {"plural": "gizmos", "kind": "Gizmo"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
    base = f"/apis/patch.example.com/v1/namespaces/{namespace}/gizmos"
    http.post(
        base,
        json={"apiVersion": "patch.example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}},
    )
    assert http.patch(f"{base}/g", headers=STRATEGIC, json={"spec": {"a": 1}}).status_code == 415
    assert http.patch(f"{base}/g", headers=MERGE, json={"spec": {"a": 1}}).json()["spec"] == {
        "a": 1
    }


def test_server_side_apply(http: httpx.Client, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    labelled = deployment()
    labelled["metadata"]["labels"] = {"from": "helm"}
    created = http.patch(path, headers=APPLY, params={"fieldManager": "helm"}, json=labelled)
    assert created.status_code == 201
    managers = {e["manager"]: e for e in created.json()["metadata"]["managedFields"]}
    assert managers["helm"]["operation"] == "Apply"
    assert "f:replicas" in managers["helm"]["fieldsV1"]["f:spec"]
    # another manager changing a helm-owned field: 409 with causes, then force
    conflict = http.patch(
        path, headers=APPLY, params={"fieldManager": "ops"}, json=deployment(replicas=3)
    )
    assert conflict.status_code == 409
    cause = conflict.json()["details"]["causes"][0]
    assert cause["reason"] == "FieldManagerConflict" and cause["field"] == ".spec.replicas"
    assert 'conflict with "helm"' in conflict.json()["message"]
    forced = http.patch(
        path,
        headers=APPLY,
        params={"fieldManager": "ops", "force": "true"},
        json=deployment(replicas=3),
    )
    assert forced.status_code == 200 and forced.json()["spec"]["replicas"] == 3
    # an Update by another client takes the field; re-applying by helm now conflicts
    http.patch(path, headers=MERGE, params={"fieldManager": "hpa"}, json={"spec": {"replicas": 4}})
    assert (
        http.patch(
            path, headers=APPLY, params={"fieldManager": "ops"}, json=deployment(replicas=3)
        ).status_code
        == 409
    )
    # changing a value co-owned with another applier conflicts (ops applied the same image)
    yaml_body = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n"
        "    spec:\n      containers:\n      - {name: app, image: 'app:IMAGE'}\n"
    )
    two = yaml_body.replace("IMAGE", "2").encode()
    assert (
        http.patch(path, headers=APPLY, params={"fieldManager": "helm"}, content=two).status_code
        == 409
    )
    # helm stops applying its label (only helm's): it is removed; YAML bodies are accepted
    one = yaml_body.replace("IMAGE", "1").encode()
    applied = http.patch(path, headers=APPLY, params={"fieldManager": "helm"}, content=one)
    assert applied.status_code == 200, applied.text
    assert "from" not in applied.json()["metadata"].get("labels", {})
    container = applied.json()["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "A", "value": "1"}]  # still applied by ops
    assert applied.json()["spec"]["replicas"] == 4  # not helm's any more
    missing_manager = http.patch(path, headers=APPLY, json=deployment())
    assert missing_manager.status_code == 422


def test_apply_ignores_status_on_the_main_resource(http: httpx.Client, namespace: str) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    body = {**deployment(), "status": {"replicas": 5}}
    created = http.patch(path, headers=APPLY, params={"fieldManager": "me"}, json=body).json()
    assert "replicas" not in created.get("status", {})
    status = http.patch(
        path + "/status",
        headers=APPLY,
        params={"fieldManager": "kubelet"},
        json={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "status": {"replicas": 5},
        },
    ).json()
    assert status["status"]["replicas"] == 5
    entry = next(e for e in status["metadata"]["managedFields"] if e["manager"] == "kubelet")
    assert entry["subresource"] == "status"
