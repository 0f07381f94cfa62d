"""The public API: ``async with ApiServer()``, ``start_in_thread``, ``write_kubeconfig`` with the
official kubeconfig loader, and a few more built-in kinds (leases, events.k8s.io, Table watches)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.operator import kube


async def test_async_context_manager() -> None:
    async with ApiServer(host="127.0.0.1", port=0) as server:
        assert server.port != 0 and server.url == f"https://127.0.0.1:{server.port}"
        headers = {"Authorization": f"Bearer {server.token}"}
        verify = server.client_ssl_context()
        async with httpx.AsyncClient(base_url=server.url, headers=headers, verify=verify) as client:
            assert (await client.get("/version")).json()["minor"] == "35"
            created = await client.post(
                "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}}
            )
            assert created.status_code == 201
        assert [r.name for r in server.audit.records()] == ["a"]
        url = server.url
    async with httpx.AsyncClient(verify=verify) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/version")


def test_a_taken_port_fails_the_start(apiserver: ServerHandle) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        ApiServer.start_in_thread(port=apiserver.server.port)


def test_thread_handle_stops() -> None:
    handle = ApiServer.start_in_thread(watch_history=7)
    assert handle.server.hub.history_size == 7
    assert httpx.get(f"{handle.url}/healthz", verify=handle.ssl_context).text == "ok"
    assert handle.call(handle.server.compact) == handle.server.store.resource_version
    handle.stop()
    handle.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/healthz", verify=handle.ssl_context)


async def test_kubeconfig_works_with_the_official_loader(
    apiserver: ServerHandle, tmp_path: Path
) -> None:
    path = write_kubeconfig(
        tmp_path / "nested" / "config",
        apiserver.url,
        namespace="team",
        token=apiserver.token,
        ca_pem=apiserver.ca_pem,
    )
    assert path.stat().st_mode & 0o777 == 0o600
    connection = kube.Connection.from_kubeconfig(str(path))
    assert connection.server == apiserver.url and connection.token
    async with kube.KubeClient(connection) as client:
        names = [n["metadata"]["name"] for n in await client.list_items(kube.NAMESPACE)]
        assert {"default", "kube-system", "kube-public"} <= set(names)


def test_leases_and_new_events(http: httpx.Client, namespace: str) -> None:
    lease = http.post(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
        json={
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15},
        },
    )
    assert lease.status_code == 201
    renewed = http.patch(
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/leader",
        headers={"Content-Type": "application/merge-patch+json"},
        json={"spec": {"renewTime": "2025-01-01T00:00:00.000000Z"}},
    )
    assert renewed.json()["spec"]["holderIdentity"] == "me"
    event = http.post(
        f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
        json={
            "metadata": {"name": "e1"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "reason": "Tested",
            "action": "Test",
            "reportingController": "tests",
            "reportingInstance": "t1",
            "type": "Normal",
            "regarding": {"kind": "Lease", "name": "leader", "namespace": namespace},
        },
    )
    assert event.status_code == 201
    found = http.get(
        f"/apis/events.k8s.io/v1/namespaces/{namespace}/events",
        params={"fieldSelector": "regarding.name=leader"},
    ).json()["items"]
    assert [e["reason"] for e in found] == ["Tested"]


def test_table_watch(http: httpx.Client, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    http.post(path, json={"metadata": {"name": "c"}, "data": {"a": "1"}})
    headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    with http.stream(
        "GET", path, params={"watch": "true", "timeoutSeconds": "2"}, headers=headers
    ) as response:
        line = next(line for line in response.iter_lines() if line)
    event = json.loads(line)
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][:2] == ["c", 1]
