"""Custom resources over HTTP: CRD registration, discovery and OpenAPI, schema validation,
defaults and pruning, status and scale subresources, printer columns, multiple versions,
the third-party CRDs the operator writes to, and removal with the CRD."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

Waiter = Callable[..., Any]

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = {"Content-Type": "application/merge-patch+json"}
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


def widget_crd(group: str, *, status: bool = True) -> dict[str, Any]:
    subresources: dict[str, Any] = {
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    }
    if status:
        subresources["status"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wdg"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A widget.",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 10,
                                            "description": "How big.",
                                        },
                                        "color": {
                                            "type": "string",
                                            "enum": ["red", "blue"],
                                            "default": "red",
                                        },
                                        "replicas": {"type": "integer", "default": 1},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(group: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def _new_group(http: httpx.Client, request: pytest.FixtureRequest, *, status: bool) -> str:
    name = request.node.name.replace("_", "-").lower()[5:30].strip("-") + ".example.com"
    created = http.post(CRDS, json=widget_crd(name, status=status))
    assert created.status_code == 201, created.text
    return name


@pytest.fixture
def group(http: httpx.Client, request: pytest.FixtureRequest) -> str:
    """A fresh API group serving Widgets (status and scale subresources)."""
    return _new_group(http, request, status=True)


@pytest.fixture
def group_without_status(http: httpx.Client, request: pytest.FixtureRequest) -> str:
    return _new_group(http, request, status=False)


def test_crd_is_established_and_served(http: httpx.Client, group: str, namespace: str) -> None:
    crd = http.get(f"{CRDS}/widgets.{group}").json()
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    assert crd["spec"]["names"]["listKind"] == "WidgetList"
    assert crd["metadata"]["finalizers"] == ["customresourcecleanup.apiextensions.k8s.io"]
    resources = http.get(f"/apis/{group}/v1").json()
    assert resources["groupVersion"] == f"{group}/v1"
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["widgets"]["shortNames"] == ["wdg"] and by_name["widgets"]["namespaced"]
    assert "shortNames" not in by_name["widgets/status"] and "widgets/scale" in by_name
    groups = [g["name"] for g in http.get("/apis").json()["groups"]]
    assert group in groups
    created = http.post(
        f"/apis/{group}/v1/namespaces/{namespace}/widgets", json=widget(group, "w", size=2)
    )
    assert created.status_code == 201
    assert created.json()["spec"] == {"size": 2, "color": "red", "replicas": 1}  # defaults
    listing = http.get(f"/apis/{group}/v1/namespaces/{namespace}/widgets").json()
    assert listing["kind"] == "WidgetList" and len(listing["items"]) == 1


def test_openapi_v3_publishes_the_schema(http: httpx.Client, group: str) -> None:
    index = http.get("/openapi/v3").json()["paths"]
    url = index[f"apis/{group}/v1"]["serverRelativeURL"]
    assert "?hash=" in url
    doc = http.get(url).json()
    schema = doc["components"]["schemas"][".".join(reversed(group.split("."))) + ".v1.Widget"]
    assert schema["properties"]["spec"]["properties"]["size"]["description"] == "How big."
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": group, "version": "v1", "kind": "Widget"}
    ]
    patch = next(p["patch"] for path, p in doc["paths"].items() if path.endswith("/{name}"))
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][2].items()


def test_validation_errors_are_422_with_causes(
    http: httpx.Client, group: str, namespace: str
) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    response = http.post(path, json=widget(group, "w", size=30, color="green"))
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == "Invalid"
    assert body["message"].startswith(f'Widget.{group} "w" is invalid: [')
    causes = {c["field"]: c["reason"] for c in body["details"]["causes"]}
    assert causes == {"spec.color": "FieldValueNotSupported", "spec.size": "FieldValueInvalid"}
    missing = http.post(path, json=widget(group, "w"))
    assert missing.json()["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}
    ]
    http.post(path, json=widget(group, "ok", size=1))
    update = http.patch(f"{path}/ok", headers=MERGE, json={"spec": {"size": 0}})
    assert update.status_code == 422


def test_unknown_fields_pruned_warned_or_refused(
    http: httpx.Client, group: str, namespace: str
) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    strict = http.post(
        path, json=widget(group, "s", size=1, bogus=1), params={"fieldValidation": "Strict"}
    )
    assert strict.status_code == 400 and 'unknown field "spec.bogus"' in strict.json()["message"]
    warned = http.post(path, json=widget(group, "w", size=1, bogus=1))
    assert warned.status_code == 201 and "bogus" not in warned.json()["spec"]
    assert 'unknown field \\"spec.bogus\\"' in warned.headers["warning"]
    ignored = http.post(
        path, json=widget(group, "i", size=1, bogus=1), params={"fieldValidation": "Ignore"}
    )
    assert ignored.status_code == 201 and "warning" not in ignored.headers


def test_status_subresource_and_generation(http: httpx.Client, group: str, namespace: str) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    obj = http.post(path, json={**widget(group, "w", size=1), "status": {"phase": "X"}}).json()
    assert "status" not in obj and obj["metadata"]["generation"] == 1
    status = http.patch(
        f"{path}/w/status", headers=MERGE, json={"status": {"phase": "Ready"}, "spec": {"size": 9}}
    ).json()
    assert status["status"] == {"phase": "Ready"} and status["spec"]["size"] == 1
    assert status["metadata"]["generation"] == 1
    main = http.patch(
        f"{path}/w", headers=MERGE, json={"status": {"phase": "Nope"}, "spec": {"size": 2}}
    ).json()
    assert main["status"] == {"phase": "Ready"} and main["metadata"]["generation"] == 2
    annotated = http.patch(
        f"{path}/w", headers=MERGE, json={"metadata": {"annotations": {"a": "b"}}}
    ).json()
    assert annotated["metadata"]["generation"] == 2


def test_without_status_subresource_status_is_content(
    http: httpx.Client, group_without_status: str, namespace: str
) -> None:
    group = group_without_status
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    http.post(path, json=widget(group, "w", size=1))
    assert (
        http.patch(f"{path}/w/status", headers=MERGE, json={"status": {"a": 1}}).status_code == 404
    )
    changed = http.patch(f"{path}/w", headers=MERGE, json={"status": {"phase": "Ready"}}).json()
    assert changed["status"] == {"phase": "Ready"} and changed["metadata"]["generation"] == 2


def test_scale_subresource(http: httpx.Client, group: str, namespace: str) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    http.post(path, json=widget(group, "w", size=1, replicas=2))
    http.patch(
        f"{path}/w/status", headers=MERGE, json={"status": {"replicas": 2, "selector": "app=w"}}
    )
    scale = http.get(f"{path}/w/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"] == {
        "replicas": 2,
        "selector": "app=w",
    }
    patched = http.patch(f"{path}/w/scale", headers=MERGE, json={"spec": {"replicas": 5}})
    assert patched.json()["spec"]["replicas"] == 5
    assert http.get(f"{path}/w").json()["spec"]["replicas"] == 5
    put = http.put(f"{path}/w/scale", json={**patched.json(), "spec": {"replicas": -1}})
    assert put.status_code == 422


def test_printer_columns(http: httpx.Client, group: str, namespace: str) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    http.post(path, json=widget(group, "w", size=3))
    http.patch(
        f"{path}/w/status",
        headers=MERGE,
        json={"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    )
    table = http.get(path, headers=TABLE).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Ready", "Size", "Age"]
    (row,) = table["rows"]
    assert row["cells"][:3] == ["w", "True", 3] and row["cells"][3].endswith("s")
    assert row["object"]["metadata"]["name"] == "w"
    one = http.get(f"{path}/w", headers=TABLE).json()
    assert one["rows"][0]["cells"][:3] == ["w", "True", 3]


def test_deleting_the_crd_deletes_its_objects(
    http: httpx.Client, group: str, namespace: str, wait_until: Waiter
) -> None:
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets"
    http.post(path, json=widget(group, "plain", size=1))
    held = widget(group, "held", size=1)
    held["metadata"]["finalizers"] = ["example.com/hold"]
    http.post(path, json=held)
    assert http.delete(f"{CRDS}/widgets.{group}").status_code == 200
    wait_until(lambda: http.get(f"{path}/plain").status_code == 404)
    terminating = http.get(f"{CRDS}/widgets.{group}").json()
    assert {c["type"] for c in terminating["status"]["conditions"]} >= {"Terminating"}
    assert http.get(f"{path}/held").json()["metadata"]["deletionTimestamp"]
    http.patch(f"{path}/held", headers=MERGE, json={"metadata": {"finalizers": None}})
    wait_until(lambda: http.get(f"{CRDS}/widgets.{group}").status_code == 404)
    assert http.get(path).status_code == 404
    assert group not in [g["name"] for g in http.get("/apis").json()["groups"]]


def test_invalid_crds_are_refused(http: httpx.Client) -> None:
    crd = widget_crd("bad.example.com")
    crd["metadata"]["name"] = "wrong.example.com"
    assert http.post(CRDS, json=crd).status_code == 422
    builtin = widget_crd("apps")
    builtin["spec"]["names"]["plural"] = "deployments"
    builtin["metadata"]["name"] = "deployments.apps"
    assert http.post(CRDS, json=builtin).status_code == 422  # "apps" has no dot
    taken = widget_crd("rbac.authorization.k8s.io")
    taken["spec"]["names"].update(plural="roles", kind="Role")
    taken["metadata"]["name"] = "roles.rbac.authorization.k8s.io"
    assert http.post(CRDS, json=taken).status_code == 409  # a built-in's group and plural


def _crds(shared_schemas: Path, filename: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((shared_schemas / filename).read_text()) if d]


def test_istio_and_gateway_api_crds(
    http: httpx.Client, namespace: str, shared_schemas: Path
) -> None:
    for doc in _crds(shared_schemas, "istio-networking-crds.yaml") + _crds(
        shared_schemas, "gateway-api-httproutes-crd.yaml"
    ):
        response = http.post(CRDS, json=doc)
        assert response.status_code == 201, response.text[:300]
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "clip"},
        "spec": {
            "hosts": ["clip"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "clip", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "clip", "subset": "v2"}, "weight": 10},
                    ]
                }
            ],
        },
    }
    created = http.post(
        f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices", json=vs
    )
    assert created.status_code == 201, created.text
    old_view = http.get(
        f"/apis/networking.istio.io/v1beta1/namespaces/{namespace}/virtualservices/clip"
    ).json()
    assert old_view["apiVersion"] == "networking.istio.io/v1beta1"
    assert old_view["spec"]["http"][0]["route"][1]["weight"] == 10
    bad = {**vs, "metadata": {"name": "bad"}, "spec": {"hosts": "not-a-list"}}
    assert (
        http.post(
            f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices", json=bad
        ).status_code
        == 422
    )
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "clip"},
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "clip-v1", "port": 8080, "weight": 90},
                        {"name": "clip-v2", "port": 8080, "weight": 10},
                    ]
                }
            ]
        },
    }
    made = http.post(
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes", json=route
    )
    assert made.status_code == 201, made.text
    rule = made.json()["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]  # schema default


def test_cel_rules_reject_writes(http: httpx.Client, namespace: str) -> None:
    crd = widget_crd("cel.example.com")
    version = crd["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = [
        {"rule": "self.replicas <= self.size", "message": "replicas may not exceed size"},
        {"rule": "self.size >= oldSelf.size", "message": "size may only grow"},
    ]
    assert http.post(CRDS, json=crd).status_code == 201
    path = f"/apis/cel.example.com/v1/namespaces/{namespace}/widgets"
    refused = http.post(path, json=widget("cel.example.com", "w", size=1, replicas=2))
    assert refused.status_code == 422
    assert refused.json()["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": replicas may not exceed size',
            "field": "spec",
        }
    ]
    assert (
        http.post(path, json=widget("cel.example.com", "w", size=3, replicas=2)).status_code == 201
    )
    shrink = http.patch(f"{path}/w", headers=MERGE, json={"spec": {"size": 2}})
    assert shrink.status_code == 422 and "size may only grow" in shrink.json()["message"]
    assert http.patch(f"{path}/w", headers=MERGE, json={"spec": {"size": 4}}).status_code == 200


def test_the_project_crd_and_examples(http: httpx.Client, namespace: str) -> None:
    root = Path(__file__).resolve().parents[4]
    (crd,) = [
        d
        for d in yaml.safe_load_all((root / "crds" / "multimodalmodels.mmop.io.yaml").read_text())
        if d
    ]
    created = http.post(CRDS, json=crd)
    assert created.status_code == 201, created.text[:500]
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    examples = sorted((root / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        for doc in yaml.safe_load_all(example.read_text()):
            if not doc or doc.get("kind") != crd["spec"]["names"]["kind"]:
                continue
            doc["metadata"].pop("namespace", None)
            response = http.post(
                f"/apis/{group}/{version}/namespaces/{namespace}/{plural}", json=doc
            )
            assert response.status_code == 201, f"{example.name}: {response.text[:500]}"
    table = http.get(
        f"/apis/{group}/{version}/namespaces/{namespace}/{plural}", headers=TABLE
    ).json()
    assert len(table["rows"]) >= 1
    assert table["columnDefinitions"][0]["name"] == "Name"
