"""The real operator (kopf, a subprocess) against the embedded API server (a thread)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.devcluster.router import meshcrds
from mmop.operator import crd, kube
from tests.support.operator import FakeHub, OperatorProcess


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ServerHandle]:
    handle = ApiServer.start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(scope="session")
def kubeconfig(apiserver: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kubeconfig(
        tmp_path_factory.mktemp("kube") / "config",
        apiserver.url,
        token=apiserver.token,
        ca_pem=apiserver.ca_pem,
    )


@pytest.fixture(scope="session")
async def client(kubeconfig: Path) -> AsyncIterator[kube.KubeClient]:
    async with kube.KubeClient(kube.Connection.from_kubeconfig(str(kubeconfig))) as c:
        for obj in [crd.build_crd(), *meshcrds.routing_crds()]:
            await c.create(kube.CRD, obj)
        yield c


@pytest.fixture(scope="session")
def operator(
    client: kube.KubeClient,
    kubeconfig: Path,
    hub: FakeHub,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator"), hub_url=hub.url)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def namespace(client: kube.KubeClient) -> str:
    name = f"it-{uuid.uuid4().hex[:8]}"
    await client.create(
        kube.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name
