"""A control plane for scale runs: the embedded API server, the real operator, and a stand-in
for the Deployment controller that marks Deployments available without running pods.

``DevCluster``'s kubelet would start one ``mmop-runtime`` process per Deployment, which at 300
models measures the kubelet and the models, not the operator. The operator decides from the
Deployment's status (``observedGeneration``, ``readyReplicas``) and its pods; with no pods and
a ready Deployment status, a version counts as available (``reconcile.observe``). So here the
API server is ``DevCluster``'s own (``mmop.devcluster.apiserver.ApiServer``, with the same CRDs
``DevCluster`` registers) and a small watcher plays the Deployment controller: every
Deployment whose status lags its generation gets a ready status (one status write, counted
apart from the operator's writes in the audit log by its user agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx

from mmop.devcluster import manifests
from mmop.devcluster.apiserver import ApiServer, AuditLog, AuditRecord, write_kubeconfig
from mmop.devcluster.cluster import free_port, platform_crds
from mmop.operator import kube

T = TypeVar("T")
STAND_IN_AGENT: Final = "bench-deployment-controller"
BENCH_AGENT: Final = "bench-client"
OPERATOR_AGENTS: Final = ("mmop-operator", "kopf")


class BarePlane:
    """API server (+ CRDs), the operator as a subprocess, the Deployment stand-in."""

    def __init__(self, state_dir: Path, *, namespace: str, operator_env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.namespace = namespace
        self.kubeconfig = state_dir / "kubeconfig"
        self.operator_log = state_dir / "operator.log"
        self._operator_env = operator_env
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-plane")
        self._server: ApiServer | None = None
        self.client: kube.KubeClient | None = None
        self._stand_in: asyncio.Task[None] | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.status_writes = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> BarePlane:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self.run(self._astart())
        return self

    async def _astart(self) -> None:
        self._server = ApiServer("127.0.0.1", 0)
        await self._server.start()
        write_kubeconfig(
            self.kubeconfig,
            self._server.url,
            self.namespace,
            token=self._server.token,
            ca_pem=self._server.ca_pem,
        )
        self.client = kube.KubeClient(
            kube.Connection(
                server=self._server.url, token=self._server.token, ca_data=self._server.ca_pem
            ),
            field_manager="bench",
            user_agent=BENCH_AGENT,
        )
        await manifests.apply(self.client, platform_crds())
        await manifests.apply(
            self.client,
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}],
        )
        self._stand_in = asyncio.create_task(self._deployment_stand_in())

    def stop(self) -> None:
        self.stop_operator()
        with contextlib.suppress(Exception):
            self.run(self._astop(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _astop(self) -> None:
        if self._stand_in is not None:
            self._stand_in.cancel()
            with contextlib.suppress(BaseException):
                await self._stand_in
        if self.client is not None:
            await self.client.close()
        if self._server is not None:
            await self._server.stop()

    def __enter__(self) -> BarePlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def audit(self) -> AuditLog:
        assert self._server is not None
        return self._server.audit

    # --- the operator -------------------------------------------------------------------------

    def start_operator(self) -> subprocess.Popen[bytes]:
        """``python -m mmop.operator --kubeconfig ...``, as ``DevCluster.start_operator`` does."""
        self.health_port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        env |= {"MMOP_OPERATOR_HEALTH_PORT": str(self.health_port)} | self._operator_env
        with self.operator_log.open("ab") as out:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "mmop.operator", "--kubeconfig", str(self.kubeconfig)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise RuntimeError(f"the operator exited; see {self.operator_log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.metrics_url, timeout=1.0).status_code == 200:
                    return self.operator
            time.sleep(0.2)
        raise RuntimeError("the operator's metrics endpoint did not come up within 60 s")

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/metrics"

    def stop_operator(self) -> None:
        process, self.operator = self.operator, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    # --- the Deployment controller stand-in -----------------------------------------------------

    async def _deployment_stand_in(self) -> None:
        """Watch Deployments; give each one whose status lags its spec a ready status."""
        assert self._server is not None
        client = kube.KubeClient(
            kube.Connection(
                server=self._server.url, token=self._server.token, ca_data=self._server.ca_pem
            ),
            field_manager="bench-deployments",
            user_agent=STAND_IN_AGENT,
        )
        try:
            while True:
                listing = await client.list(kube.DEPLOYMENT, namespace=self.namespace)
                for item in listing.get("items") or []:
                    await self._mark_ready(client, item)
                version = (listing.get("metadata") or {}).get("resourceVersion")
                with contextlib.suppress(kube.GoneError):
                    async for event in client.watch(
                        kube.DEPLOYMENT, namespace=self.namespace, resource_version=version
                    ):
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            await self._mark_ready(client, event["object"])
        finally:
            await client.close()

    async def _mark_ready(self, client: kube.KubeClient, deployment: dict[str, Any]) -> None:
        md = deployment.get("metadata") or {}
        if md.get("deletionTimestamp"):
            return
        generation = int(md.get("generation") or 1)
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        status = deployment.get("status") or {}
        if (
            int(status.get("observedGeneration") or 0) >= generation
            and int(status.get("readyReplicas") or 0) == replicas
        ):
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ready = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": stamp,
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": "marked available by the benchmark (no pods run)",
                    "lastUpdateTime": stamp,
                    "lastTransitionTime": stamp,
                },
            ],
        }
        with contextlib.suppress(kube.NotFoundError):
            await client.patch_status(
                kube.DEPLOYMENT, name=md["name"], namespace=md["namespace"], status=ready
            )
            self.status_writes += 1


def operator_writes(records: list[AuditRecord]) -> list[AuditRecord]:
    """Writes made by the operator (our client or kopf's), not by the benchmark."""
    return [
        r
        for r in records
        if not r.dry_run and any(r.user_agent.startswith(agent) for agent in OPERATOR_AGENTS)
    ]
