"""Deletion over HTTP: finalizers and deletionTimestamp, ownerReference garbage collection
(background, foreground, orphan), dangling owners, and namespace termination."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Waiter = Callable[..., Any]
MERGE = {"Content-Type": "application/merge-patch+json"}


def cm_path(ns: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/configmaps" + (f"/{name}" if name else "")


def make(
    http: httpx.Client,
    ns: str,
    name: str,
    *,
    owner: dict[str, Any] | None = None,
    finalizers: list[str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": True,
            }
        ]
    if finalizers:
        meta["finalizers"] = finalizers
    response = http.post(cm_path(ns), json={"metadata": meta})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def gone(http: httpx.Client, ns: str, name: str) -> bool:
    return http.get(cm_path(ns, name)).status_code == 404


def test_finalizers_hold_deletion(http: httpx.Client, namespace: str) -> None:
    make(http, namespace, "f", finalizers=["example.com/a", "example.com/b"])
    deleted = http.delete(cm_path(namespace, "f"))
    assert deleted.status_code == 200
    meta = deleted.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    again = http.delete(cm_path(namespace, "f")).json()
    assert again["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]
    added = http.patch(
        cm_path(namespace, "f"),
        headers=MERGE,
        json={"metadata": {"finalizers": ["example.com/a", "example.com/b", "new/one"]}},
    )
    assert added.status_code == 422
    http.patch(
        cm_path(namespace, "f"), headers=MERGE, json={"metadata": {"finalizers": ["example.com/b"]}}
    )
    assert not gone(http, namespace, "f")
    http.patch(cm_path(namespace, "f"), headers=MERGE, json={"metadata": {"finalizers": []}})
    assert gone(http, namespace, "f")


def test_background_propagation(http: httpx.Client, namespace: str, wait_until: Waiter) -> None:
    owner = make(http, namespace, "owner")
    child = make(http, namespace, "child", owner=owner)
    make(http, namespace, "grandchild", owner=child)
    http.delete(cm_path(namespace, "owner"))
    assert gone(http, namespace, "owner")
    wait_until(lambda: gone(http, namespace, "child") and gone(http, namespace, "grandchild"))


def test_foreground_propagation_waits_for_dependents(
    http: httpx.Client, namespace: str, wait_until: Waiter
) -> None:
    owner = make(http, namespace, "owner")
    make(http, namespace, "child", owner=owner, finalizers=["example.com/slow"])
    deleted = http.request(
        "DELETE",
        cm_path(namespace, "owner"),
        json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"},
    )
    assert "foregroundDeletion" in deleted.json()["metadata"]["finalizers"]
    wait_until(
        lambda: http.get(cm_path(namespace, "child")).json()["metadata"].get("deletionTimestamp")
    )
    assert not gone(http, namespace, "owner")
    http.patch(cm_path(namespace, "child"), headers=MERGE, json={"metadata": {"finalizers": None}})
    wait_until(lambda: gone(http, namespace, "owner"))


def test_orphan_propagation(http: httpx.Client, namespace: str, wait_until: Waiter) -> None:
    owner = make(http, namespace, "owner")
    make(http, namespace, "child", owner=owner)
    http.delete(cm_path(namespace, "owner"), params={"propagationPolicy": "Orphan"})
    wait_until(lambda: gone(http, namespace, "owner"))
    child = http.get(cm_path(namespace, "child")).json()
    assert "ownerReferences" not in child["metadata"]


def test_dangling_and_partial_owners(
    http: httpx.Client, namespace: str, wait_until: Waiter
) -> None:
    fake = {"metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}}
    make(http, namespace, "orphaned", owner=fake)
    wait_until(lambda: gone(http, namespace, "orphaned"))
    a, b = make(http, namespace, "a"), make(http, namespace, "b")
    both = make(http, namespace, "both", owner=a)
    refs = both["metadata"]["ownerReferences"] + [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": b["metadata"]["uid"]}
    ]
    http.patch(
        cm_path(namespace, "both"), headers=MERGE, json={"metadata": {"ownerReferences": refs}}
    )
    http.delete(cm_path(namespace, "a"))
    wait_until(
        lambda: len(http.get(cm_path(namespace, "both")).json()["metadata"]["ownerReferences"]) == 1
    )
    assert (
        http.get(cm_path(namespace, "both")).json()["metadata"]["ownerReferences"][0]["name"] == "b"
    )


def test_namespace_deletion_empties_it(
    http: httpx.Client, namespace: str, wait_until: Waiter
) -> None:
    make(http, namespace, "plain")
    make(http, namespace, "held", finalizers=["example.com/hold"])
    http.post(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        json={
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
    )
    deleted = http.delete(f"/api/v1/namespaces/{namespace}").json()
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    refused = http.post(cm_path(namespace), json={"metadata": {"name": "late"}})
    assert refused.status_code == 403
    wait_until(lambda: gone(http, namespace, "plain"))
    assert http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/d").status_code == 404
    assert http.get(f"/api/v1/namespaces/{namespace}").status_code == 200  # held by "held"
    http.patch(cm_path(namespace, "held"), headers=MERGE, json={"metadata": {"finalizers": []}})
    wait_until(lambda: http.get(f"/api/v1/namespaces/{namespace}").status_code == 404)
