"""The real operator (kopf, a subprocess) against the embedded API server (a thread)."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmop.devcluster import meshcrds
from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.devcluster.cluster import free_port
from mmop.operator import crd, kube

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ServerHandle]:
    handle = ApiServer.start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def kubeconfig(apiserver: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", apiserver.url)


@pytest.fixture(scope="session")
async def client(kubeconfig: Path) -> AsyncIterator[kube.KubeClient]:
    async with kube.KubeClient(kube.Connection.from_kubeconfig(str(kubeconfig))) as c:
        for obj in [crd.build_crd(), *meshcrds.routing_crds()]:
            await c.create(kube.CRD, obj)
        yield c


class OperatorProcess:
    """`python -m mmop.operator` with a short resync, restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: IO[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_file = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {
            **os.environ,
            "MMOP_OPERATOR_HEALTH_PORT": str(free_port()),
            "MMOP_OPERATOR_RESYNC_SECONDS": "2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmop.operator", "--kubeconfig", str(self.kubeconfig)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the operator's own /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )


@pytest.fixture(scope="session")
def operator(
    client: kube.KubeClient, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30, what: str = "condition"
) -> T:
    """Poll until ``probe`` returns something truthy (correctness, not speed: generous)."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@pytest.fixture
async def namespace(client: kube.KubeClient) -> str:
    name = f"it-{uuid.uuid4().hex[:8]}"
    await client.create(
        kube.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def example(name: str, *, namespace: str, **spec_updates: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    doc["spec"].update(spec_updates)
    return doc
