"""The real operator (kopf, a subprocess) against the embedded API server (a thread)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmop.devcluster.apiserver import ApiServer, ServerHandle, write_kubeconfig
from mmop.devcluster.cluster import free_port
from mmop.devcluster.router import meshcrds
from mmop.operator import crd, kube

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ServerHandle]:
    handle = ApiServer.start_in_thread()
    yield handle
    handle.stop()


class FakeHub:
    """The hub's model API on loopback (no network here): every ``ORG/NAME@REV`` resolves to a
    commit derived from it, except repositories of the org ``missing`` (404)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urllib.parse.unquote(self.path)
                hub.asked.append(path)
                repo, _, revision = path.removeprefix("/api/models/").partition("/revision/")
                if not path.startswith("/api/models/") or repo.startswith("missing/"):
                    body, code = b'{"error": "Repository not found"}', 404
                else:
                    body, code = json.dumps({"sha": FakeHub.commit(repo, revision)}).encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def commit(repo: str, revision: str) -> str:
        return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


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


class OperatorProcess:
    """`python -m mmop.operator` with a short resync, restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path, *, hub_url: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.hub_url = hub_url
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
            "MMOP_OPERATOR_HUB_ENDPOINT": self.hub_url,
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
    client: kube.KubeClient,
    kubeconfig: Path,
    hub: FakeHub,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator"), hub_url=hub.url)
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


async def posted_events(
    client: kube.KubeClient, namespace: str, reason: str, *, containing: str = ""
) -> list[dict[str, Any]]:
    """The Events with ``reason`` (and ``containing`` in the message), waited for: the
    operator posts an Event after the status it explains, so reading once races it."""

    async def matching() -> list[dict[str, Any]]:
        events = await client.list_items(kube.EVENT, namespace=namespace)
        return [e for e in events if e.get("reason") == reason and containing in e["message"]]

    return await eventually(matching, what=f"a {reason} Event containing {containing!r}")


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
