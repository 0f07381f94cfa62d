"""Real kopf against the embedded API server: create/update/delete handlers, status patches,
finalizers, events, and recovery from a 410 Gone after the watch history is compacted."""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import kopf
import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle

Waiter = Callable[..., Any]
GROUP = "kopf.example.com"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = {"Content-Type": "application/merge-patch+json"}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gizmos.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
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


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ServerHandle]:
    # long bookmark interval: the 410 test needs the operator to lag behind the global version
    with ApiServer.start_in_thread(bookmark_interval=3600) as handle:
        yield handle


class Operator:
    """A tiny kopf operator in a thread, with its own registry, recording what it handled."""

    def __init__(self, server: ServerHandle, namespace: str) -> None:
        self.handled: list[tuple[str, str, Any]] = []
        registry = kopf.OperatorRegistry()

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server.url, token=server.token, ca_data=server.ca_pem)

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.watching.server_timeout = 30
            settings.posting.level = logging.INFO

        @kopf.on.create(GROUP, "v1", "gizmos", id="created", registry=registry)
        def created(name: str, spec: Any, body: Any, patch: kopf.Patch, **_: Any) -> dict[str, Any]:
            self.handled.append(("create", name, spec.get("size")))
            patch.status["phase"] = "Created"
            kopf.info(body, reason="Created", message="gizmo created")  # a core/v1 Event
            return {"size": spec.get("size")}

        @kopf.on.update(GROUP, "v1", "gizmos", id="updated", registry=registry)
        def updated(name: str, spec: Any, patch: kopf.Patch, **_: Any) -> None:
            self.handled.append(("update", name, spec.get("size")))
            patch.status["phase"] = f"Size{spec.get('size')}"

        @kopf.on.delete(GROUP, "v1", "gizmos", id="deleted", registry=registry)
        def deleted(name: str, **_: Any) -> None:
            self.handled.append(("delete", name, None))

        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=kopf.run,
            kwargs={
                "registry": registry,
                "standalone": True,
                "namespaces": [namespace],
                "stop_flag": self.stop_flag,
                "ready_flag": ready,
            },
            daemon=True,
        )
        self.thread.start()
        assert ready.wait(30), "kopf did not start"

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        # kopf's aiohttp sessions can leave a watch socket unclosed when its loop stops; it is
        # garbage now, so collect it here rather than in whatever test the collector next runs
        # in (where, with warnings as errors, it failed test_custom_resources in CI).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture
def operator(apiserver: ServerHandle, http: httpx.Client, namespace: str) -> Iterator[Operator]:
    if http.get(f"{CRDS}/gizmos.{GROUP}").status_code == 404:
        assert http.post(CRDS, json=CRD).status_code == 201
    running = Operator(apiserver, namespace)
    yield running
    running.stop()


def test_kopf_operator(
    operator: Operator,
    apiserver: ServerHandle,
    http: httpx.Client,
    namespace: str,
    wait_until: Waiter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kopf")
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/gizmos"
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gizmo",
        "metadata": {"name": "g1"},
        "spec": {"size": 1},
    }
    assert http.post(path, json=body).status_code == 201

    def status() -> dict[str, Any]:
        result: dict[str, Any] = http.get(f"{path}/g1").json().get("status", {})
        return result

    wait_until(lambda: status().get("phase") == "Created", timeout=15)
    # the handler's result, stored by kopf in status (kept: status preserves unknown fields)
    wait_until(lambda: status().get("created") == {"size": 1})
    obj = http.get(f"{path}/g1").json()
    assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]
    events = wait_until(lambda: http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"])
    assert any(e["involvedObject"]["name"] == "g1" and e["reason"] == "Created" for e in events)

    http.patch(f"{path}/g1", headers=MERGE, json={"spec": {"size": 2}})
    wait_until(lambda: status().get("phase") == "Size2", timeout=15)

    # force a 410: move the global version on elsewhere, then compact and end open watches
    http.post(f"/api/v1/namespaces/{namespace}/configmaps", json={"metadata": {"name": "bump"}})
    apiserver.call(apiserver.server.compact)
    wait_until(lambda: "Restarting the watch-stream" in caplog.text, timeout=15)
    http.patch(f"{path}/g1", headers=MERGE, json={"spec": {"size": 3}})
    wait_until(lambda: status().get("phase") == "Size3", timeout=15)

    assert http.delete(f"{path}/g1").json()["metadata"]["deletionTimestamp"]
    wait_until(lambda: http.get(f"{path}/g1").status_code == 404, timeout=15)
    assert operator.handled == [
        ("create", "g1", 1),
        ("update", "g1", 2),
        ("update", "g1", 3),
        ("delete", "g1", None),
    ]
