"""reconcile/children.py: names taken by another owner, refused writes, retiring records."""

from __future__ import annotations

from typing import Any

import pytest

from mmop.operator import kube, naming
from mmop.operator.reconcile.children import ensure_children

OURS = "uid-ours"


def _obj(kind: str, name: str, *, owner: str = OURS, **spec: Any) -> dict[str, Any]:
    api = {
        "Service": "v1",
        "Deployment": "apps/v1",
        "HTTPRoute": "gateway.networking.k8s.io/v1",
    }[kind]
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {naming.LABEL_MODEL: "a", naming.LABEL_VERSION: "v1"},
            "ownerReferences": [
                {
                    "kind": "MultimodalModel",
                    "name": "a-v1" if owner != OURS else "a",
                    "uid": owner,
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


class FakeClient:
    """Just enough of KubeClient: a store by (kind, name), and scripted refusals."""

    def __init__(self, existing: list[dict[str, Any]], refuse: dict[str, int] | None = None):
        self.store = {(o["kind"], o["metadata"]["name"]): o for o in existing}
        self.refuse = refuse or {}
        self.writes: list[tuple[str, str, str]] = []

    def _check(self, verb: str, kind: kube.Kind, name: str) -> None:
        code = self.refuse.get(f"{verb} {kind.kind}/{name}")
        if code:
            raise kube.ApiError(
                code, {"reason": "Invalid", "message": "denied by webhook"}, method=verb, path=name
            )

    async def create(self, kind: kube.Kind, obj: dict[str, Any], *, namespace: str) -> Any:
        name = obj["metadata"]["name"]
        self._check("create", kind, name)
        if (kind.kind, name) in self.store:
            raise kube.ConflictError(409, {"reason": "AlreadyExists"}, method="POST", path=name)
        self.store[(kind.kind, name)] = obj
        self.writes.append(("create", kind.kind, name))
        return obj

    async def get_or_none(self, kind: kube.Kind, *, name: str, namespace: str) -> Any:
        return self.store.get((kind.kind, name))

    async def patch(self, kind: kube.Kind, *, name: str, namespace: str, patch: Any) -> Any:
        self._check("patch", kind, name)
        self.writes.append(("patch", kind.kind, name))
        return patch

    async def delete(self, kind: kube.Kind, *, name: str, namespace: str) -> None:
        self._check("delete", kind, name)
        self.writes.append(("delete", kind.kind, name))


async def _ensure(client: FakeClient, desired: list[dict[str, Any]], **kw: Any) -> Any:
    actual: dict[kube.Kind, dict[str, dict[str, Any]]] = {}
    for (_kind, name), obj in client.store.items():
        if obj["metadata"]["ownerReferences"][0]["uid"] == OURS:
            actual.setdefault(kube.kind_of(obj), {})[name] = obj
    return await ensure_children(
        client,  # type: ignore[arg-type]
        namespace="ml",
        owner_uid=OURS,
        desired=desired,
        actual=actual,
        unserved=set(),
        keep_versions=kw.get("keep_versions", set()),
    )


async def test_a_name_owned_by_another_model_is_reported_and_not_routed_to() -> None:
    client = FakeClient([_obj("Service", "a-v1", owner="uid-other")])
    route = _obj("HTTPRoute", "a", rules=[{"backendRefs": [{"name": "a-v1", "port": 80}]}])
    report = await _ensure(client, [_obj("Service", "a-v1"), route])
    assert report.conflicts[0] == "Service a-v1 exists and belongs to MultimodalModel a-v1"
    assert "HTTPRoute a not written" in report.conflicts[1]
    assert report.conflict_versions == {"v1"}
    assert client.writes == []  # neither the foreign Service nor a route to it was touched


async def test_refused_writes_are_reported_and_the_pass_goes_on() -> None:
    client = FakeClient([], refuse={"create Service/a-v1": 422})
    report = await _ensure(client, [_obj("Service", "a-v1"), _obj("Deployment", "a-v1")])
    assert report.refused == ["Service a-v1: 422 Invalid: denied by webhook"]
    assert report.created == ["Deployment/a-v1"]


async def test_other_api_errors_still_abort() -> None:
    client = FakeClient([], refuse={"create Service/a-v1": 500})
    with pytest.raises(kube.ApiError):
        await _ensure(client, [_obj("Service", "a-v1")])


async def test_retiring_deployment_gets_its_role_on_metadata() -> None:
    old = _obj("Deployment", "a-v1")
    old["metadata"]["annotations"] = {naming.ANNOTATION_ROLE: "stable"}
    client = FakeClient([old])
    report = await _ensure(client, [], keep_versions={"v1"})
    assert client.writes == [("patch", "Deployment", "a-v1")]
    assert report.updated == ["Deployment/a-v1"]
    old["metadata"]["annotations"][naming.ANNOTATION_ROLE] = naming.ROLE_RETIRING
    client.writes.clear()
    await _ensure(client, [], keep_versions={"v1"})
    assert client.writes == []  # once recorded, no more writes
