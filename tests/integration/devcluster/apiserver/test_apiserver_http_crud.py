"""Create / read / update / delete semantics over real HTTP (httpx and the project's KubeClient)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from mmop.operator import kube

MERGE = {"Content-Type": "application/merge-patch+json"}


def deployment(name: str, image: str = "app:1", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def deploy_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def test_create_sets_metadata_and_list_has_kind_and_version(
    http: httpx.Client, namespace: str
) -> None:
    created = http.post(deploy_path(namespace), json=deployment("web"))
    assert created.status_code == 201
    meta = created.json()["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == namespace
    cm = http.post(f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": {"name": "c"}})
    assert int(cm.json()["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert "generation" not in cm.json()["metadata"]  # like a real server: no spec, no generation
    listing = http.get(deploy_path(namespace)).json()
    assert listing["kind"] == "DeploymentList" and listing["apiVersion"] == "apps/v1"
    assert int(listing["metadata"]["resourceVersion"]) >= int(
        cm.json()["metadata"]["resourceVersion"]
    )
    assert [i["metadata"]["name"] for i in listing["items"]] == ["web"]
    assert listing["items"][0]["spec"]["replicas"] == 1
    everywhere = http.get("/apis/apps/v1/deployments").json()
    assert any(i["metadata"]["namespace"] == namespace for i in everywhere["items"])


def test_already_exists_and_missing(http: httpx.Client, namespace: str) -> None:
    assert http.post(deploy_path(namespace), json=deployment("web")).status_code == 201
    again = http.post(deploy_path(namespace), json=deployment("web"))
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists" and again.json()["kind"] == "Status"
    missing = http.get(deploy_path(namespace, "nope"))
    assert missing.status_code == 404
    assert missing.json()["message"] == 'deployments.apps "nope" not found'
    assert http.delete(deploy_path(namespace, "nope")).status_code == 404
    assert http.patch(deploy_path(namespace, "nope"), json={}, headers=MERGE).status_code == 404


def test_stale_resource_version_is_a_conflict(http: httpx.Client, namespace: str) -> None:
    obj = http.post(deploy_path(namespace), json=deployment("web")).json()
    fresh = http.patch(
        deploy_path(namespace, "web"), json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE
    ).json()
    stale = http.put(deploy_path(namespace, "web"), json=obj)
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    stale_patch = http.patch(
        deploy_path(namespace, "web"),
        headers=MERGE,
        json={"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}},
    )
    assert stale_patch.status_code == 409
    current = http.put(deploy_path(namespace, "web"), json=fresh)
    assert current.status_code == 200
    unconditional = dict(fresh)
    unconditional["metadata"] = {
        k: v for k, v in fresh["metadata"].items() if k != "resourceVersion"
    }
    assert http.put(deploy_path(namespace, "web"), json=unconditional).status_code == 200


def test_generate_name_and_dry_run(http: httpx.Client, namespace: str) -> None:
    body = {"metadata": {"generateName": "cm-"}, "data": {"a": "1"}}
    made = http.post(f"/api/v1/namespaces/{namespace}/configmaps", json=body).json()
    assert made["metadata"]["name"].startswith("cm-") and len(made["metadata"]["name"]) == 8
    dry = http.post(deploy_path(namespace), json=deployment("dry"), params={"dryRun": "All"})
    assert dry.status_code == 201 and dry.json()["metadata"]["name"] == "dry"
    assert http.get(deploy_path(namespace, "dry")).status_code == 404
    http.post(deploy_path(namespace), json=deployment("web"))
    patched = http.patch(
        deploy_path(namespace, "web"),
        params={"dryRun": "All"},
        headers=MERGE,
        json={"spec": {"replicas": 5}},
    )
    assert patched.json()["spec"]["replicas"] == 5
    assert http.get(deploy_path(namespace, "web")).json()["spec"]["replicas"] == 1
    assert http.delete(deploy_path(namespace, "web"), params={"dryRun": "All"}).status_code == 200
    assert http.get(deploy_path(namespace, "web")).status_code == 200
    assert (
        http.post(
            deploy_path(namespace), json=deployment("x"), params={"dryRun": "Some"}
        ).status_code
        == 400
    )


def test_namespaces_must_exist(http: httpx.Client) -> None:
    response = http.post(deploy_path("no-such-ns"), json=deployment("web"))
    assert response.status_code == 404
    assert response.json()["message"] == 'namespaces "no-such-ns" not found'
    for name in ("default", "kube-system", "kube-public"):
        assert http.get(f"/api/v1/namespaces/{name}").status_code == 200
    assert http.delete("/api/v1/namespaces/default").status_code == 403


def test_body_must_match_the_url(http: httpx.Client, namespace: str) -> None:
    wrong_ns = {**deployment("web"), "metadata": {"name": "web", "namespace": "other"}}
    assert http.post(deploy_path(namespace), json=wrong_ns).status_code == 400
    wrong_kind = {**deployment("web"), "kind": "StatefulSet"}
    assert http.post(deploy_path(namespace), json=wrong_kind).status_code == 400
    http.post(deploy_path(namespace), json=deployment("web"))
    assert http.put(deploy_path(namespace, "web"), json=deployment("other")).status_code == 400
    bad_name = http.post(deploy_path(namespace), json=deployment("Not_Valid"))
    assert (
        bad_name.status_code == 422
        and bad_name.json()["details"]["causes"][0]["field"] == "metadata.name"
    )
    assert (
        http.post(
            deploy_path(namespace), content=b"{nope", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )


def test_generation_and_status_subresource_for_deployments(
    http: httpx.Client, namespace: str
) -> None:
    http.post(deploy_path(namespace), json={**deployment("web"), "status": {"replicas": 9}})
    obj = http.get(deploy_path(namespace, "web")).json()
    assert "replicas" not in obj.get("status", {})  # status is dropped on create
    labelled = http.patch(
        deploy_path(namespace, "web"),
        headers=MERGE,
        json={"metadata": {"labels": {"x": "1"}}, "status": {"replicas": 9}},
    ).json()
    assert (
        labelled["metadata"]["generation"] == 1
    )  # metadata only; status ignored on the main resource
    assert "replicas" not in labelled.get("status", {})
    status = http.patch(
        deploy_path(namespace, "web") + "/status",
        headers=MERGE,
        json={
            "spec": {"replicas": 7},
            "metadata": {"labels": {"y": "1"}},
            "status": {"replicas": 1, "observedGeneration": 1},
        },
    ).json()
    assert status["status"]["replicas"] == 1 and status["spec"]["replicas"] == 1
    assert "y" not in status["metadata"]["labels"] and status["metadata"]["generation"] == 1
    spec = http.patch(
        deploy_path(namespace, "web"), headers=MERGE, json={"spec": {"replicas": 2}}
    ).json()
    assert spec["metadata"]["generation"] == 2 and spec["status"]["replicas"] == 1
    put = {**spec, "status": {"replicas": 100}}
    assert http.put(deploy_path(namespace, "web"), json=put).json()["status"]["replicas"] == 1
    put_status = http.put(
        deploy_path(namespace, "web") + "/status", json={**spec, "status": {"replicas": 2}}
    )
    assert put_status.json()["status"]["replicas"] == 2


def test_defaults_and_allocations(http: httpx.Client, namespace: str) -> None:
    created = http.post(
        deploy_path(namespace),
        json={**deployment("web"), "spec": {**deployment("web")["spec"], "replicas": None}},
    ).json()
    assert created["spec"]["replicas"] == 1
    assert created["spec"]["strategy"]["type"] == "RollingUpdate"
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    svc = http.post(
        f"/api/v1/namespaces/{namespace}/services",
        json={
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    ).json()
    ip = svc["spec"]["clusterIP"]
    assert ip.startswith("10.96.") and svc["spec"]["ports"][0] == {
        "port": 80,
        "protocol": "TCP",
        "targetPort": 80,
    }
    svc["spec"].pop("clusterIP")
    svc["spec"].pop("clusterIPs")
    again = http.put(f"/api/v1/namespaces/{namespace}/services/web", json=svc).json()
    assert again["spec"]["clusterIP"] == ip
    secret = http.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        json={"metadata": {"name": "s"}, "stringData": {"user": "me"}},
    ).json()
    assert secret["type"] == "Opaque" and secret["data"] == {
        "user": base64.b64encode(b"me").decode()
    }
    assert "stringData" not in secret
    pod = http.post(
        f"/api/v1/namespaces/{namespace}/pods",
        json={
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        },
    ).json()
    assert pod["status"]["phase"] == "Pending"


def test_no_op_writes_do_not_bump_the_resource_version(http: httpx.Client, namespace: str) -> None:
    obj = http.post(deploy_path(namespace), json=deployment("web")).json()
    same = http.put(deploy_path(namespace, "web"), json=obj).json()
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    patched = http.patch(
        deploy_path(namespace, "web"), json={"spec": {"replicas": 1}}, headers=MERGE
    ).json()
    assert patched["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_selectors_and_pagination(http: httpx.Client, namespace: str) -> None:
    for i in range(5):
        http.post(
            f"/api/v1/namespaces/{namespace}/configmaps",
            json={
                "metadata": {
                    "name": f"cm{i}",
                    "labels": {"i": str(i), "even": str(i % 2 == 0).lower()},
                }
            },
        )

    def names(**params: str) -> list[str]:
        response = http.get(f"/api/v1/namespaces/{namespace}/configmaps", params=params)
        assert response.status_code == 200, response.text
        return [i["metadata"]["name"] for i in response.json()["items"]]

    assert names(labelSelector="even=true") == ["cm0", "cm2", "cm4"]
    assert names(labelSelector="i in (1,3),even!=true") == ["cm1", "cm3"]
    assert names(labelSelector="!even") == []
    assert names(fieldSelector="metadata.name=cm3") == ["cm3"]
    assert names(fieldSelector="metadata.name!=cm3,metadata.namespace=" + namespace) == [
        "cm0",
        "cm1",
        "cm2",
        "cm4",
    ]
    bad = http.get(
        f"/api/v1/namespaces/{namespace}/configmaps", params={"fieldSelector": "data.a=1"}
    )
    assert bad.status_code == 400 and "field label not supported" in bad.json()["message"]
    assert (
        http.get(
            f"/api/v1/namespaces/{namespace}/configmaps", params={"labelSelector": "a in (("}
        ).status_code
        == 400
    )
    first = http.get(f"/api/v1/namespaces/{namespace}/configmaps", params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["cm0", "cm1"]
    assert first["metadata"]["remainingItemCount"] == 3
    rest = http.get(
        f"/api/v1/namespaces/{namespace}/configmaps",
        params={"limit": "10", "continue": first["metadata"]["continue"]},
    ).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["cm2", "cm3", "cm4"]
    assert "continue" not in rest["metadata"]


def test_pod_field_selectors(http: httpx.Client, namespace: str) -> None:
    for name, node in (("a", "n1"), ("b", "n2")):
        http.post(
            f"/api/v1/namespaces/{namespace}/pods",
            json={
                "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            },
        )
    http.patch(
        f"/api/v1/namespaces/{namespace}/pods/b/status",
        headers=MERGE,
        json={"status": {"phase": "Running"}},
    )
    pods = f"/api/v1/namespaces/{namespace}/pods"
    assert [
        p["metadata"]["name"]
        for p in http.get(pods, params={"fieldSelector": "spec.nodeName=n1"}).json()["items"]
    ] == ["a"]
    running = http.get(pods, params={"fieldSelector": "status.phase=Running"}).json()["items"]
    assert [p["metadata"]["name"] for p in running] == ["b"]


def test_delete_collection(http: httpx.Client, namespace: str) -> None:
    for i in range(3):
        http.post(
            f"/api/v1/namespaces/{namespace}/configmaps",
            json={"metadata": {"name": f"cm{i}", "labels": {"drop": "yes" if i < 2 else "no"}}},
        )
    deleted = http.delete(
        f"/api/v1/namespaces/{namespace}/configmaps", params={"labelSelector": "drop=yes"}
    )
    assert deleted.status_code == 200
    assert sorted(i["metadata"]["name"] for i in deleted.json()["items"]) == ["cm0", "cm1"]
    left = http.get(f"/api/v1/namespaces/{namespace}/configmaps").json()["items"]
    assert [i["metadata"]["name"] for i in left] == ["cm2"]


def test_delete_preconditions(http: httpx.Client, namespace: str) -> None:
    obj = http.post(
        f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": {"name": "c"}}
    ).json()
    path = f"/api/v1/namespaces/{namespace}/configmaps/c"
    wrong = http.request("DELETE", path, json={"preconditions": {"uid": "other"}})
    assert wrong.status_code == 409
    right = http.request("DELETE", path, json={"preconditions": {"uid": obj["metadata"]["uid"]}})
    assert right.status_code == 200 and right.json()["metadata"]["name"] == "c"


def _ld(number: int, payload: bytes) -> bytes:
    length, out = len(payload), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(out) + payload


def test_protobuf_bodies(http: httpx.Client, namespace: str) -> None:
    meta = _ld(1, b"from-proto") + _ld(11, _ld(1, b"app") + _ld(2, b"web"))
    raw = _ld(1, meta) + _ld(2, _ld(1, b"key") + _ld(2, b"value"))
    body = b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"ConfigMap")) + _ld(2, raw)
    headers = {
        "Content-Type": "application/vnd.kubernetes.protobuf",
        "Accept": "application/vnd.kubernetes.protobuf, */*",
    }
    created = http.post(f"/api/v1/namespaces/{namespace}/configmaps", content=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    assert created.json()["data"] == {"key": "value"}
    assert created.json()["metadata"]["labels"] == {"app": "web"}
    pod = b"k8s\x00" + _ld(1, _ld(1, b"v1") + _ld(2, b"Pod")) + _ld(2, b"")
    refused = http.post(f"/api/v1/namespaces/{namespace}/pods", content=pod, headers=headers)
    assert refused.status_code == 415


def test_unknown_paths_and_methods(http: httpx.Client, namespace: str) -> None:
    assert http.get("/apis/nope.io/v1/things").status_code == 404
    assert http.get(f"/api/v1/namespaces/{namespace}/nodes").status_code == 404
    assert http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/x/bogus").status_code == 404
    http.post(f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": {"name": "c"}})
    assert http.post(f"/api/v1/namespaces/{namespace}/configmaps/c", json={}).status_code == 405
    assert (
        http.patch(
            f"/api/v1/namespaces/{namespace}/configmaps/c",
            json={},
            headers={"Content-Type": "text/plain"},
        ).status_code
        == 415
    )


async def test_kube_client(connection: kube.Connection) -> None:
    async with kube.KubeClient(connection) as client:
        ns = await client.create(kube.NAMESPACE, {"metadata": {"name": "kube-client"}})
        assert ns["status"]["phase"] == "Active"
        dep = await client.create(kube.DEPLOYMENT, deployment("web"), namespace="kube-client")
        with pytest.raises(kube.ConflictError):
            await client.create(kube.DEPLOYMENT, deployment("web"), namespace="kube-client")
        await client.patch(
            kube.DEPLOYMENT, name="web", namespace="kube-client", patch={"spec": {"replicas": 3}}
        )
        with pytest.raises(kube.ConflictError):
            await client.replace(kube.DEPLOYMENT, dep)
        status = await client.patch_status(
            kube.DEPLOYMENT, name="web", namespace="kube-client", status={"readyReplicas": 3}
        )
        assert status["status"]["readyReplicas"] == 3
        items = await client.list_items(
            kube.DEPLOYMENT, namespace="kube-client", label_selector="app=web"
        )
        assert [i["spec"]["replicas"] for i in items] == [3]
        await client.delete(kube.DEPLOYMENT, name="web", namespace="kube-client")
        assert (
            await client.get_or_none(kube.DEPLOYMENT, name="web", namespace="kube-client") is None
        )
        with pytest.raises(kube.NotFoundError):
            await client.delete(
                kube.DEPLOYMENT, name="web", namespace="kube-client", missing_ok=False
            )
