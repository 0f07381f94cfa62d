"""The write audit trail: in-process and over ``/debug/audit``."""

from __future__ import annotations

import httpx

from mmop.devcluster.apiserver import ServerHandle


def test_writes_are_recorded_in_order(
    apiserver: ServerHandle, http: httpx.Client, namespace: str
) -> None:
    start = apiserver.audit.last_index
    http.get(f"/api/v1/namespaces/{namespace}/configmaps")  # reads are not recorded
    http.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        json={"metadata": {"generateName": "a-"}},
        headers={"User-Agent": "tester/1.0"},
    )
    http.patch(
        f"/api/v1/namespaces/{namespace}/configmaps/missing",
        json={},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    http.patch(
        f"/api/v1/namespaces/{namespace}/configmaps/applied",
        params={"fieldManager": "me"},
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}},
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    http.post(
        f"/api/v1/namespaces/{namespace}/configmaps",
        json={"metadata": {"name": "dry"}},
        params={"dryRun": "All"},
    )
    http.delete(f"/api/v1/namespaces/{namespace}/configmaps")
    records = apiserver.audit.records(since=start)
    assert [(r.verb, r.code) for r in records] == [
        ("create", 201),
        ("patch", 404),
        ("apply", 201),
        ("create", 201),
        ("deletecollection", 200),
    ]
    create = records[0]
    assert create.name is not None and create.name.startswith("a-")
    assert (create.resource, create.kind, create.namespace, create.group, create.version) == (
        "configmaps",
        "ConfigMap",
        namespace,
        "",
        "v1",
    )
    assert create.user_agent == "tester/1.0" and create.method == "POST"
    assert records[2].field_manager == "me"
    assert records[3].dry_run and not records[0].dry_run
    assert [r.index for r in records] == list(range(start + 1, start + 6))


def test_debug_endpoint_and_reset(
    apiserver: ServerHandle, http: httpx.Client, namespace: str
) -> None:
    http.post(f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": {"name": "x"}})
    body = http.get("/debug/audit", params={"since": str(apiserver.audit.last_index - 1)}).json()
    assert body["lastIndex"] == apiserver.audit.last_index
    (record,) = body["records"]
    assert (
        record["verb"] == "create"
        and record["name"] == "x"
        and record["index"] == body["lastIndex"]
    )
    last = body["lastIndex"]
    assert http.delete("/debug/audit").json() == {"lastIndex": last}
    assert http.get("/debug/audit").json()["records"] == []
    http.delete(f"/api/v1/namespaces/{namespace}/configmaps/x")
    (after,) = apiserver.audit.records()
    assert after.index == last + 1 and after.verb == "delete"
