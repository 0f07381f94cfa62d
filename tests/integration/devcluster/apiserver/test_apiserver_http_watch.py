"""Watch streams over HTTP: resuming from a resourceVersion, initial events, bookmarks,
timeouts, selectors, and 410 Gone after compaction (HTTP and the project's KubeClient)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle
from mmop.operator import kube

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ServerHandle]:
    with ApiServer.start_in_thread(bookmark_interval=0.3, watch_history=5) as handle:
        yield handle


def events(
    http: httpx.Client,
    path: str,
    params: dict[str, str],
    *,
    count: int,
    then: Callable[[], Any] | None = None,
) -> list[dict[str, Any]]:
    """Open a watch, run ``then`` (writes), and read ``count`` events (or until the stream ends)."""
    found: list[dict[str, Any]] = []
    with http.stream(
        "GET", path, params={"watch": "true", "timeoutSeconds": "3", **params}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        if then is not None:
            then()
        for line in response.iter_lines():
            if line.strip():
                found.append(json.loads(line))
            if len(found) >= count:
                break
    return found


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"].get("metadata", {}).get("name", "")) for e in found]


def cm(http: httpx.Client, ns: str, name: str, **labels: str) -> dict[str, Any]:
    response = http.post(
        f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": name, "labels": labels}}
    )
    assert response.status_code == 201
    result: dict[str, Any] = response.json()
    return result


def test_watch_from_a_list_resource_version(http: httpx.Client, namespace: str) -> None:
    cm(http, namespace, "before")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    rv = http.get(path).json()["metadata"]["resourceVersion"]

    def writes() -> None:
        cm(http, namespace, "a")
        http.patch(f"{path}/a", headers=MERGE, json={"data": {"k": "v"}})
        http.delete(f"{path}/a")

    found = events(http, path, {"resourceVersion": rv}, count=3, then=writes)
    assert summary(found) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in found]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert found[1]["object"]["data"] == {"k": "v"}
    # resuming from the middle replays only what came after
    replay = events(http, path, {"resourceVersion": str(rvs[0])}, count=2)
    assert summary(replay) == [("MODIFIED", "a"), ("DELETED", "a")]


def test_watch_without_version_starts_with_the_current_objects(
    http: httpx.Client, namespace: str
) -> None:
    cm(http, namespace, "x")
    cm(http, namespace, "y")
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    found = events(http, path, {}, count=3, then=lambda: cm(http, namespace, "z"))
    assert summary(found) == [("ADDED", "x"), ("ADDED", "y"), ("ADDED", "z")]


def test_send_initial_events_ends_with_a_marked_bookmark(
    http: httpx.Client, namespace: str
) -> None:
    cm(http, namespace, "x")
    found = events(
        http,
        f"/api/v1/namespaces/{namespace}/configmaps",
        {
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
        },
        count=2,
    )
    assert summary(found)[0] == ("ADDED", "x")
    assert found[1]["type"] == "BOOKMARK"
    assert found[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_bookmarks_carry_the_current_resource_version(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    rv = http.get(path).json()["metadata"]["resourceVersion"]
    other = cm(http, "default", "elsewhere-" + namespace)  # moves the global resourceVersion
    found = events(http, path, {"resourceVersion": rv, "allowWatchBookmarks": "true"}, count=1)
    assert found[0]["type"] == "BOOKMARK"
    assert found[0]["object"]["kind"] == "ConfigMap" and found[0]["object"]["apiVersion"] == "v1"
    assert int(found[0]["object"]["metadata"]["resourceVersion"]) >= int(
        other["metadata"]["resourceVersion"]
    )


def test_a_busy_watch_still_gets_bookmarks_within_the_interval(
    apiserver: ServerHandle, http: httpx.Client, namespace: str
) -> None:
    """Changes every 50 ms, bookmarks every 0.3 s: a bookmark must not wait for a quiet
    moment that never comes, and never claim an event the client has not received yet."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    rv = http.get(path).json()["metadata"]["resourceVersion"]
    stop = threading.Event()
    writer_http = httpx.Client(
        base_url=apiserver.url, timeout=10, headers=apiserver.headers, verify=apiserver.ssl_context
    )

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer_http.post(path, json={"metadata": {"name": f"busy-{i}"}})
            i += 1
            stop.wait(0.05)

    writer = threading.Thread(target=write, daemon=True)
    found: list[dict[str, Any]] = []
    try:
        with http.stream(
            "GET",
            path,
            params={
                "watch": "true",
                "timeoutSeconds": "10",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
            },
        ) as response:
            writer.start()
            for line in response.iter_lines():
                if line.strip():
                    found.append(json.loads(line))
                if sum(e["type"] == "BOOKMARK" for e in found) >= 2:
                    break
    finally:
        stop.set()
        writer.join(10)
        writer_http.close()
    kinds = [e["type"] for e in found]
    assert kinds.count("BOOKMARK") >= 2, kinds
    first = kinds.index("BOOKMARK")
    assert kinds[:first].count("ADDED") >= 2  # it was busy before the first bookmark
    seen = bookmark = 0
    for event in found:
        event_rv = int(event["object"]["metadata"]["resourceVersion"])
        if event["type"] == "BOOKMARK":
            assert event_rv >= seen  # it covers what was delivered
            bookmark = event_rv
        else:
            assert event_rv > bookmark  # and claimed nothing still on its way
            seen = max(seen, event_rv)


def test_timeout_seconds_ends_the_stream(http: httpx.Client, namespace: str) -> None:
    started = time.monotonic()
    with http.stream(
        "GET",
        f"/api/v1/namespaces/{namespace}/configmaps",
        params={"watch": "1", "timeoutSeconds": "1"},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines == []
    assert 0.9 < time.monotonic() - started < 3


def test_label_selector_transitions(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    rv = http.get(path).json()["metadata"]["resourceVersion"]

    def writes() -> None:
        cm(http, namespace, "c", app="db")
        http.patch(f"{path}/c", headers=MERGE, json={"metadata": {"labels": {"app": "web"}}})
        http.patch(f"{path}/c", headers=MERGE, json={"metadata": {"labels": {"app": "db"}}})
        cm(http, namespace, "d", app="web")

    found = events(
        http, path, {"resourceVersion": rv, "labelSelector": "app=web"}, count=3, then=writes
    )
    assert summary(found) == [("ADDED", "c"), ("DELETED", "c"), ("ADDED", "d")]


def test_field_selector_and_legacy_watch_path(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    rv = http.get(path).json()["metadata"]["resourceVersion"]

    def writes() -> None:
        cm(http, namespace, "skip")
        cm(http, namespace, "keep")

    found = events(
        http,
        path,
        {"resourceVersion": rv, "fieldSelector": "metadata.name=keep"},
        count=1,
        then=writes,
    )
    assert summary(found) == [("ADDED", "keep")]
    legacy = events(
        http,
        f"/api/v1/watch/namespaces/{namespace}/configmaps/keep",
        {"resourceVersion": rv},
        count=1,
    )
    assert summary(legacy) == [("ADDED", "keep")]
    bad = http.get(path, params={"watch": "true", "fieldSelector": "data.x=1"})
    assert bad.status_code == 400


def test_compacted_history_is_410(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    first = cm(http, namespace, "c0")
    for i in range(1, 8):  # the window holds 5 events per type
        cm(http, namespace, f"c{i}")
    found = events(http, path, {"resourceVersion": first["metadata"]["resourceVersion"]}, count=1)
    assert found[0]["type"] == "ERROR"
    assert found[0]["object"]["code"] == 410 and found[0]["object"]["reason"] == "Expired"


async def test_kube_client_watch_and_gone(connection: kube.Connection, namespace: str) -> None:
    async with kube.KubeClient(connection) as client:
        listing = await client.list(kube.CONFIGMAP, namespace=namespace)
        rv = listing["metadata"]["resourceVersion"]
        await client.create(kube.CONFIGMAP, {"metadata": {"name": "w"}}, namespace=namespace)
        stream = client.watch(
            kube.CONFIGMAP, namespace=namespace, resource_version=rv, timeout_seconds=2
        )
        event = await anext(stream)
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "w"
        await stream.aclose()
        await client.request("POST", "/debug/compact")
        with pytest.raises(kube.GoneError):
            async for _ in client.watch(
                kube.CONFIGMAP, namespace=namespace, resource_version=rv, timeout_seconds=2
            ):
                pass


def test_compaction_ends_open_watches(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    started = time.monotonic()
    found = events(
        http, path, {"timeoutSeconds": "10"}, count=1, then=lambda: http.post("/debug/compact")
    )
    assert found == [] and time.monotonic() - started < 5
