"""Fixtures for the API server's integration tests: one server per test module (in a thread),
an httpx client, a fresh namespace per test, a kubeconfig, and a polling helper."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.operator import kube
from tests.support import wait as support_wait

Waiter = Callable[..., Any]


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ServerHandle]:
    with ApiServer.start_in_thread() as handle:
        yield handle
        assert handle.server.internal_errors == []


@pytest.fixture(autouse=True)
def _no_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test's server must answer without 500s (a 500 is a server bug)."""
    yield
    if "apiserver" in request.fixturenames:
        handle: ServerHandle = request.getfixturevalue("apiserver")
        assert handle.server.internal_errors == []


@pytest.fixture(scope="module")
def http(apiserver: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=apiserver.url, timeout=10, headers=apiserver.headers, verify=apiserver.ssl_context
    ) as client:
        yield client


@pytest.fixture
def namespace(http: httpx.Client) -> str:
    name = "t-" + uuid.uuid4().hex[:8]
    response = http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
    assert response.status_code == 201, response.text
    return name


@pytest.fixture(scope="module")
def kubeconfig(apiserver: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "config",
        apiserver.url,
        token=apiserver.token,
        ca_pem=apiserver.ca_pem,
    )


@pytest.fixture(scope="module")
def connection(apiserver: ServerHandle) -> kube.Connection:
    """The project's client settings for ``apiserver``: its URL, token and CA."""
    return kube.Connection(server=apiserver.url, token=apiserver.token, ca_data=apiserver.ca_pem)


@pytest.fixture(scope="session")
def wait_until() -> Waiter:
    """``wait_until(fn, timeout=5)``: poll ``fn`` until it returns a truthy value; return it."""

    def wait(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
        return support_wait.wait_until(fn, within=timeout, every=interval)

    return wait
