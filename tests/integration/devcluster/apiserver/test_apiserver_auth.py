"""Another local user against the dev API server: loopback is shared by every user of the
machine, so every request needs the token from the kubeconfig (readable by its owner only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.operator import kube


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerHandle]:
    with ApiServer.start_in_thread(require_token=True) as handle:
        yield handle


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/namespaces/default/secrets"),
        ("POST", "/api/v1/namespaces/default/pods"),
        ("GET", "/version"),
        ("GET", "/apis"),
        ("GET", "/debug/audit"),
        ("POST", "/debug/faults"),
        ("POST", "/debug/compact"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic bW1vcDptbW9w", "Bearer x"],
    ids=["none", "wrong", "basic", "short"],
)
def test_a_request_without_the_token_is_401(
    guarded: ServerHandle, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"metadata": {"name": "intruder"}} if method == "POST" else None
    response = httpx.request(method, guarded.url + path, headers=headers, json=body, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["reason"] == "Unauthorized"
    assert guarded.token not in response.text


def test_nothing_was_written_by_the_intruder(guarded: ServerHandle) -> None:
    response = httpx.get(
        guarded.url + "/api/v1/namespaces/default/pods", headers=guarded.headers, timeout=10
    )
    assert "intruder" not in {p["metadata"]["name"] for p in response.json()["items"]}
    assert guarded.audit.records() == []


async def test_health_is_public_and_the_token_opens_the_rest(
    guarded: ServerHandle, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as anonymous:
        assert (await anonymous.get("/readyz")).text == "ok"
    assert len(guarded.token) >= 32
    path = write_kubeconfig(tmp_path / "config", guarded.url, token=guarded.token)
    assert path.stat().st_mode & 0o077 == 0
    async with kube.KubeClient(kube.Connection.from_kubeconfig(str(path))) as client:
        assert "default" in {n["metadata"]["name"] for n in await client.list_items(kube.NAMESPACE)}


def test_the_kubeconfig_is_never_written_through_a_link(
    guarded: ServerHandle, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    (tmp_path / "config").symlink_to(victim)
    with pytest.raises(OSError):
        write_kubeconfig(tmp_path / "config", guarded.url, token=guarded.token)
    assert victim.read_text() == "someone else's file"
