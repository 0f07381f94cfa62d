"""Another local user against the dev API server: loopback is shared by every user of the
machine, so the server speaks only TLS, with a certificate from a CA made for it alone, and
every request needs the token from the kubeconfig (readable by its owner only). kubectl sends
that token because the connection is TLS; without it kubectl is refused."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.operator import kube

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
  namespace: default
data:
  who: {name}
"""


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerHandle]:
    with ApiServer.start_in_thread() as handle:  # the defaults: TLS, the token required
        yield handle


@pytest.fixture
def kubeconfig(guarded: ServerHandle, tmp_path: Path) -> Path:
    return write_kubeconfig(
        tmp_path / "config", guarded.url, token=guarded.token, ca_pem=guarded.ca_pem
    )


def kubectl(
    kubectl_bin: str, kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    home = kubeconfig.parent / "home"
    return subprocess.run(
        [kubectl_bin, "--kubeconfig", str(kubeconfig), "--cache-dir", str(home / "cache"), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=60,
    )


def without_credentials(kubeconfig: Path, target: Path, **user: Any) -> Path:
    """A copy of ``kubeconfig`` as another local user could write it: the server's address and
    CA (public) but not the owner's token (``user``: what to put in its place)."""
    config = yaml.safe_load(kubeconfig.read_text())
    config["users"][0]["user"] = user
    target.write_text(yaml.safe_dump(config))
    return target


def configmap_names(guarded: ServerHandle) -> set[str]:
    response = httpx.get(
        guarded.url + "/api/v1/namespaces/default/configmaps",
        headers=guarded.headers,
        verify=guarded.ssl_context,
        timeout=10,
    )
    return {c["metadata"]["name"] for c in response.json()["items"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/namespaces/default/secrets"),
        ("POST", "/api/v1/namespaces/default/pods"),
        ("GET", "/version"),
        ("GET", "/apis"),
        ("GET", "/openapi/v2"),
        ("GET", "/debug/audit"),
        ("POST", "/debug/faults"),
        ("POST", "/debug/compact"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic bW1vcDptbW9w", "Bearer x", "Bearer"],
    ids=["none", "wrong", "basic", "short", "empty"],
)
def test_a_request_without_the_token_is_401(
    guarded: ServerHandle, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"metadata": {"name": "intruder"}} if method == "POST" else None
    response = httpx.request(
        method,
        guarded.url + path,
        headers=headers,
        json=body,
        timeout=10,
        verify=guarded.ssl_context,
    )
    assert response.status_code == 401, response.text
    status = response.json()
    assert (status["kind"], status["status"], status["code"], status["reason"]) == (
        "Status",
        "Failure",
        401,
        "Unauthorized",
    )
    assert guarded.token not in response.text


def test_nothing_was_written_by_the_intruder(guarded: ServerHandle) -> None:
    response = httpx.get(
        guarded.url + "/api/v1/namespaces/default/pods",
        headers=guarded.headers,
        verify=guarded.ssl_context,
        timeout=10,
    )
    assert "intruder" not in {p["metadata"]["name"] for p in response.json()["items"]}
    assert guarded.audit.records() == []


@pytest.mark.parametrize("path", ["/readyz", "/api/v1/namespaces/default/secrets"])
def test_plain_http_is_not_served(guarded: ServerHandle, path: str) -> None:
    plain = guarded.url.replace("https://", "http://", 1)
    assert plain.startswith("http://127.0.0.1:")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + path, headers=guarded.headers, timeout=10)


def test_only_its_own_ca_is_trusted(guarded: ServerHandle) -> None:
    """The certificate is for the loopback names, signed by a CA no other server shares: a
    client that checks certificates sends its token to this server only."""
    by_name = guarded.url.replace("127.0.0.1", "localhost", 1)
    assert httpx.get(by_name + "/readyz", verify=guarded.ssl_context, timeout=10).text == "ok"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(guarded.url + "/readyz", verify=ssl.create_default_context(), timeout=10)
    with ApiServer.start_in_thread() as other:
        assert other.ca_pem != guarded.ca_pem
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(guarded.url + "/readyz", verify=other.ssl_context, timeout=10)


async def test_health_is_public_and_the_token_opens_the_rest(
    guarded: ServerHandle, kubeconfig: Path
) -> None:
    async with httpx.AsyncClient(
        base_url=guarded.url, timeout=10, verify=guarded.ssl_context
    ) as anonymous:
        assert (await anonymous.get("/readyz")).text == "ok"
    assert len(guarded.token) >= 32
    async with kube.KubeClient(kube.Connection.from_kubeconfig(str(kubeconfig))) as client:
        assert "default" in {n["metadata"]["name"] for n in await client.list_items(kube.NAMESPACE)}


def test_kubectl_with_the_kubeconfig_reads_and_writes(
    guarded: ServerHandle, kubectl_bin: str, kubeconfig: Path
) -> None:
    assert kubeconfig.stat().st_mode & 0o077 == 0
    listed = kubectl(kubectl_bin, kubeconfig, "get", "namespaces", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert "namespace/default" in listed.stdout.split()
    applied = kubectl(
        kubectl_bin, kubeconfig, "apply", "-f", "-", stdin=CONFIGMAP.format(name="ok")
    )
    assert applied.returncode == 0, applied.stderr
    assert "ok" in configmap_names(guarded)


@pytest.mark.parametrize(
    "user",
    [{"username": "intruder", "password": "guess"}, {"token": "guessed-" + "x" * 40}],
    ids=["no-token", "wrong-token"],
)
def test_kubectl_without_the_owners_token_is_refused(
    guarded: ServerHandle, kubectl_bin: str, kubeconfig: Path, user: dict[str, str]
) -> None:
    other = without_credentials(kubeconfig, kubeconfig.parent / "other-user", **user)
    manifest = kubeconfig.parent / "evil.yaml"
    manifest.write_text(CONFIGMAP.format(name="evil"))
    # -v=6 logs each response's status; the last line is kubectl's own word for a 401.
    listed = kubectl(kubectl_bin, other, "get", "secrets", "-v=6")
    assert listed.returncode != 0
    assert "401 Unauthorized" in listed.stderr and "200 OK" not in listed.stderr
    assert "error: You must be logged in to the server" in listed.stderr
    applied = kubectl(kubectl_bin, other, "apply", "-f", str(manifest), "-v=6")
    assert applied.returncode != 0
    assert "401 Unauthorized" in applied.stderr
    assert "200 OK" not in applied.stderr
    assert "evil" not in configmap_names(guarded)


def test_kubectl_without_the_ca_does_not_talk_to_the_server(
    guarded: ServerHandle, kubectl_bin: str, kubeconfig: Path
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    del config["clusters"][0]["cluster"]["certificate-authority-data"]
    untrusting = kubeconfig.parent / "no-ca"
    untrusting.write_text(yaml.safe_dump(config))
    listed = kubectl(kubectl_bin, untrusting, "get", "namespaces")
    assert listed.returncode != 0
    assert "certificate signed by unknown authority" in listed.stderr


def test_the_kubeconfig_is_never_written_through_a_link(
    guarded: ServerHandle, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    (tmp_path / "config").symlink_to(victim)
    with pytest.raises(OSError):
        write_kubeconfig(tmp_path / "config", guarded.url, token=guarded.token, ca_pem="")
    assert victim.read_text() == "someone else's file"
