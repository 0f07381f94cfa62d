"""Discovery, version, health, OpenAPI and the built-in Table and metadata-only views."""

from __future__ import annotations

import httpx

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


def test_legacy_discovery(http: httpx.Client) -> None:
    api = http.get("/api").json()
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert {
        "autoscaling",
        "policy",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "rbac.authorization.k8s.io",
        "events.k8s.io",
        "batch",
    } <= set(groups)
    assert http.get("/apis/apps").json()["kind"] == "APIGroup"
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["pods"]["kind"] == "Pod"
    assert core["namespaces"]["namespaced"] is False
    assert "shortNames" not in core["pods/status"] and core["pods/status"]["verbs"] == [
        "get",
        "patch",
        "update",
    ]
    assert set(core["configmaps"]["verbs"]) == {
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    }
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert (
        apps["deployments/scale"]["kind"] == "Scale"
        and apps["deployments/scale"]["group"] == "autoscaling"
    )
    assert apps["deployments"]["categories"] == ["all"]
    assert http.get("/apis/autoscaling/v2").json()["groupVersion"] == "autoscaling/v2"
    assert http.get("/apis/nope.io").status_code == 404


def test_aggregated_discovery(http: httpx.Client) -> None:
    beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    accept = f"{AGGREGATED},{beta},application/json"
    core = http.get("/api", headers={"Accept": accept})
    assert core.headers["content-type"] == AGGREGATED
    body = core.json()
    assert (
        body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
    )
    (group,) = body["items"]
    assert group["metadata"]["name"] == ""
    pods = next(r for r in group["versions"][0]["resources"] if r["resource"] == "pods")
    assert pods["scope"] == "Namespaced" and pods["responseKind"]["kind"] == "Pod"
    assert pods["subresources"][0]["subresource"] == "status"
    named = http.get("/apis", headers={"Accept": accept}).json()
    apps = next(i for i in named["items"] if i["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    assert deployments["shortNames"] == ["deploy"]
    assert {s["subresource"] for s in deployments["subresources"]} == {"status", "scale"}
    legacy = http.get("/apis", headers={"Accept": "application/json"})
    assert legacy.json()["kind"] == "APIGroupList"


def test_version_and_health(http: httpx.Client) -> None:
    version = http.get("/version").json()
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.35")
    for path in ("/healthz", "/readyz", "/livez", "/readyz/ping"):
        assert http.get(path).text == "ok"
    unknown = http.get("/nowhere")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "Status"


def test_openapi(http: httpx.Client) -> None:
    v2 = http.get("/openapi/v2", headers={"Accept": "application/json"}).json()
    assert v2["swagger"] == "2.0" and "io.k8s.api.apps.v1.Deployment" in v2["definitions"]
    proto = http.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert proto.status_code == 406
    index = http.get("/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/apiextensions.k8s.io/v1"} <= set(index)
    apps = http.get(index["apis/apps/v1"]["serverRelativeURL"]).json()
    item = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert "application/strategic-merge-patch+json" not in item["patch"]["requestBody"]["content"]
    assert http.get("/openapi/v3/apis/nope.io/v1").status_code == 404


def test_builtin_tables_and_partial_metadata(http: httpx.Client, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    http.post(
        base,
        json={
            "metadata": {"name": "web", "labels": {"a": "b"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i:1"}]},
                },
            },
        },
    )
    http.patch(
        f"{base}/web/status",
        headers={"Content-Type": "application/merge-patch+json"},
        json={"status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}},
    )
    table = http.get(base, headers=TABLE).json()
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
    ]
    assert table["rows"][0]["cells"][:4] == ["web", "2/3", 3, 2]
    full = http.get(base, headers=TABLE, params={"includeObject": "Object"}).json()
    assert full["rows"][0]["object"]["kind"] == "Deployment"
    http.post(
        f"/api/v1/namespaces/{namespace}/pods",
        json={"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    pods = http.get(f"/api/v1/namespaces/{namespace}/pods", headers=TABLE).json()
    assert [c["name"] for c in pods["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert pods["rows"][0]["cells"][:4] == ["p", "0/1", "Pending", 0]
    partial = http.get(
        base, headers={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}
    ).json()
    assert partial["kind"] == "PartialObjectMetadataList"
    assert partial["items"][0] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": partial["items"][0]["metadata"],
    }
    assert "spec" not in partial["items"][0]
