"""The operator's integration harness: the operator as a subprocess (``OperatorProcess``), a
fake model hub on loopback (``FakeHub``) and the Events the operator posts (``posted_events``)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mmop.devcluster.cluster import free_port
from mmop.operator import kube
from tests.support.wait import wait_until_async


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


class OperatorProcess:
    """`python -m mmop.operator` with a short resync, restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path, *, hub_url: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.hub_url = hub_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: IO[bytes] | None = None
        self.starts = 0
        self.health_port = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_file = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.health_port = free_port()
        env = {
            **os.environ,
            "MMOP_OPERATOR_HEALTH_PORT": str(self.health_port),
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
        """The sum of the samples of ``name`` matching ``labels`` in the operator's own
        /metrics (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text
        return sum(
            float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def passes(self) -> float:
        """Reconcile passes so far, every result (``mmop_operator_reconciles_total``)."""
        return self.metric("mmop_operator_reconciles_total")

    def loops(self) -> float:
        """MultimodalModels with a running reconcile loop."""
        return self.metric("mmop_operator_models")

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log"))
        )


async def posted_events(
    client: kube.KubeClient, namespace: str, reason: str, *, containing: str = ""
) -> list[dict[str, Any]]:
    """The Events with ``reason`` (and ``containing`` in the message), waited for: the
    operator posts an Event after the status it explains, so reading once races it."""

    async def matching() -> list[dict[str, Any]]:
        events = await client.list_items(kube.EVENT, namespace=namespace)
        return [e for e in events if e.get("reason") == reason and containing in e["message"]]

    return await wait_until_async(matching, what=f"a {reason} Event containing {containing!r}")


async def more_passes(operator: OperatorProcess, per_loop: int) -> None:
    """Wait until the operator's loops have made ``per_loop`` more passes each (on average)."""
    start = await asyncio.to_thread(operator.passes)

    async def enough() -> bool:
        passes, loops = await asyncio.gather(
            asyncio.to_thread(operator.passes), asyncio.to_thread(operator.loops)
        )
        return loops >= 1 and passes - start >= per_loop * loops

    await wait_until_async(enough, within=60, what=f"{per_loop} more reconcile passes per loop")
