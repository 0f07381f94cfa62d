"""The local kubelet: the one node ``mmop-dev`` with its Deployment controller
(:mod:`mmop.devcluster.controllers.deployment`) and scheduler (:mod:`.scheduler`), running
every pod bound to the node as a local process (:mod:`.podworker`) on its own loopback IP and
keeping its status true.

One loop drives it all, woken by watch events (:mod:`mmop.devcluster.informer`) and by pod
processes, with a periodic resync; a pass writes only what changed. HPAs are not evaluated. On
:meth:`Kubelet.stop` every pod process is stopped; if the whole program dies instead, each pod
gets SIGKILL from the kernel (its parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx

from mmop.devcluster.controllers.deployment import DeploymentController, terminating, uid_of
from mmop.devcluster.informer import Cache
from mmop.devcluster.kubelet import podenv, podstatus, resources
from mmop.devcluster.kubelet.ipam import LoopbackPool, PoolExhaustedError
from mmop.devcluster.kubelet.node import NODE_NAME, register_node
from mmop.devcluster.kubelet.podworker import PodWorker, WorkerSettings, now_stamp, runtime_command
from mmop.devcluster.kubelet.scheduler import Scheduler
from mmop.operator import kube
from mmop.runtime import contract

log = logging.getLogger(__name__)
KINDS: Final = (kube.DEPLOYMENT, kube.POD)
BURST_DELAY: Final = 0.02  # let a burst of watch events land before a pass
# A real NVIDIA driver on this machine: the fake GPUs map to real devices (CUDA_VISIBLE_DEVICES).
HAS_NVIDIA_DRIVER: Final = Path("/dev/nvidiactl").exists()


@dataclass(frozen=True)
class KubeletConfig:
    """How the local node behaves. Times are seconds."""

    state_dir: Path
    node_name: str = NODE_NAME
    gpus: int = 0
    probe_period_cap: float = 1.0
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    sync_interval: float = 1.0
    shutdown_grace: float = 10.0
    command: tuple[str, ...] = field(default_factory=runtime_command)
    lock_dir: Path | None = None
    base_env: Mapping[str, str] | None = None
    kubeconfig: Path | None = None
    cluster_proxy: str | None = None  # the router's URL: pods reach Services through it

    def worker_settings(self) -> WorkerSettings:
        return WorkerSettings(
            command=self.command,
            probe_period_cap=self.probe_period_cap,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            base_env=dict(os.environ if self.base_env is None else self.base_env),
            gpus=self.gpus,
            kubeconfig=self.kubeconfig,
            cluster_proxy=self.cluster_proxy,
        )


def _main_port(pod: Mapping[str, Any]) -> int:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for port in containers[0].get("ports") or []:
        return int(port.get("containerPort", contract.HTTP_PORT))
    return contract.HTTP_PORT


@dataclass
class _Running:
    worker: PodWorker
    requests: dict[str, Decimal]
    devices: list[int]


class Kubelet:
    """The node's controllers. ``start()`` and ``stop()`` on the loop that owns ``client``."""

    def __init__(self, client: kube.KubeClient, cache: Cache, *, config: KubeletConfig) -> None:
        self.config = config
        self._client = client
        self._cache = cache
        self._pool = LoopbackPool(lock_dir=config.lock_dir)
        self._settings = config.worker_settings()
        self._running: dict[str, _Running] = {}  # by pod uid
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._http = httpx.AsyncClient(trust_env=False)
        self._wake = cache.subscribe()
        self._task: asyncio.Task[None] | None = None
        self._pods_dir = config.state_dir / "pods"
        self._logs_dir = config.state_dir / "logs"
        self._claims_dir = config.state_dir / "pvcs"
        self.controller = DeploymentController(client, cache, rng=random.Random())
        self.scheduler = Scheduler(
            client, cache, node_name=config.node_name, gpus=config.gpus, held=self._in_use
        )

    # --- public ----------------------------------------------------------------------------------
    @property
    def node_name(self) -> str:
        return self.config.node_name

    def pids(self) -> dict[str, int]:
        """``namespace/name`` -> pid of every pod process alive now."""
        out = {}
        for running in list(self._running.values()):
            pid = running.worker.pid
            if pid is not None:
                out[f"{running.worker.namespace}/{running.worker.name}"] = pid
        return out

    def log_path(self, namespace: str, name: str) -> Path:
        return self._logs_dir / namespace / f"{name}.log"

    async def start(self) -> None:
        for directory in (self._pods_dir, self._logs_dir):
            shutil.rmtree(directory, ignore_errors=True)  # leftovers of an earlier run
            directory.mkdir(parents=True, exist_ok=True)
        await register_node(self._client, name=self.node_name, gpus=self.config.gpus)
        self._cache.start()
        self._task = asyncio.create_task(self._loop(), name="kubelet")

    async def stop(self) -> None:
        """Stop the loop and every pod process (SIGTERM, SIGKILL after the grace period)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        grace = self.config.shutdown_grace
        workers = [r.worker for r in self._running.values()]
        await asyncio.gather(
            *(w.stop(min(grace, w.grace)) for w in workers),
            *self._stopping.values(),
            return_exceptions=True,
        )
        for worker in workers:
            worker.kill_now()
        self._running.clear()
        self._pool.release_all()
        await self._http.aclose()

    def kill_all(self) -> None:
        """SIGKILL every pod process now (from any thread; the last resort at exit)."""
        for running in list(self._running.values()):
            running.worker.kill_now()

    # --- the loop --------------------------------------------------------------------------------
    async def _loop(self) -> None:
        await self._cache.wait_synced(KINDS)
        while True:
            try:
                await self._sync()
            except (httpx.HTTPError, kube.ApiError) as error:
                log.warning("kubelet sync: %s", error)
            except Exception:
                log.exception("kubelet sync failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.sync_interval)
            self._wake.clear()
            await asyncio.sleep(BURST_DELAY)

    async def _sync(self) -> None:
        now = datetime.now(UTC)
        await self.controller.sync(now)
        await self.scheduler.sync()
        self._run_bound_pods()
        await self._write_pod_statuses()
        await self.controller.write_statuses(now)

    # --- pods on this node -----------------------------------------------------------------------
    def _bound_here(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self._cache[kube.POD]
            if (p.get("spec") or {}).get("nodeName") == self.node_name
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]

    def _in_use(self) -> tuple[dict[str, Decimal], set[int]]:
        """Resources and GPU indices held: pods bound here, and pods still shutting down."""
        held: list[dict[str, Decimal]] = []
        devices: set[int] = set()
        counted: set[str] = set()
        for pod in self._bound_here():
            uid = uid_of(pod)
            counted.add(uid)
            held.append(resources.pod_requests(pod.get("spec") or {}))
            running = self._running.get(uid)
            devices.update(running.devices if running else self.scheduler.reserved_devices(uid))
        for uid, running in self._running.items():
            if uid not in counted:
                held.append(running.requests)
                devices.update(running.devices)
        return resources.add(held), devices

    def _run_bound_pods(self) -> None:
        wanted = {uid_of(p): p for p in self._bound_here() if not terminating(p)}
        for uid in [u for u in self._running if u not in wanted and u not in self._stopping]:
            self._stop_worker(uid)
        for uid, pod in wanted.items():
            if uid not in self._running and uid not in self._stopping:
                self._start_worker(pod)

    def _start_worker(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name, uid = str(meta["namespace"]), str(meta["name"]), uid_of(pod)
        try:
            ip = self._pool.allocate(port=_main_port(pod))
        except PoolExhaustedError as error:
            log.error("pod %s/%s: %s", ns, name, error)
            return
        requests = resources.pod_requests(pod.get("spec") or {})
        devices = self.scheduler.take_devices(uid)
        if devices is None:  # bound by someone else: take devices now
            _, busy = self._in_use()
            count = resources.gpu_count(requests)
            devices = resources.pick_devices(count, total=self.config.gpus, in_use=busy) or []
        visible = ",".join(str(d) for d in devices)
        extra_env = {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "void"}
        if devices and not HAS_NVIDIA_DRIVER:
            # The node's GPUs are fake on a machine without a driver: the runtime (told
            # MMOP_DEVICE=cuda by the operator for a GPU pod) runs on the CPU instead of failing.
            extra_env[contract.ENV_DEVICE] = "cpu"
        worker = PodWorker(
            pod,
            ip=ip,
            pod_dir=self._pods_dir / ns / name,
            claims_dir=self._claims_dir,
            log_path=self.log_path(ns, name),
            settings=self._settings,
            http=self._http,
            fetch_sources=self._fetch_sources,
            on_change=self._wake.set,
            extra_env=extra_env,
        )
        self._running[uid] = _Running(worker=worker, requests=requests, devices=devices)
        worker.start()

    def _stop_worker(self, uid: str) -> None:
        running = self._running[uid]

        async def stop() -> None:
            try:
                await running.worker.stop()
            finally:
                self._running.pop(uid, None)
                self._stopping.pop(uid, None)
                self._pool.release(running.worker.ip)
                shutil.rmtree(running.worker.pod_dir, ignore_errors=True)  # emptyDirs go too
                self._wake.set()

        self._stopping[uid] = asyncio.create_task(stop(), name=f"stop-{running.worker.name}")

    async def _fetch_sources(
        self, namespace: str, secrets: set[str], config_maps: set[str]
    ) -> podenv.EnvSources:
        async def one(kind: kube.Kind, name: str) -> dict[str, Any] | None:
            try:
                return await self._client.get_or_none(kind, name=name, namespace=namespace)
            except (httpx.HTTPError, kube.ApiError):
                return None

        secret_data: dict[str, Mapping[str, str] | None] = {}
        for name in secrets:
            obj = await one(kube.SECRET, name)
            secret_data[name] = None if obj is None else podenv.decode_secret(obj.get("data"))
        map_data: dict[str, Mapping[str, str] | None] = {}
        for name in config_maps:
            obj = await one(kube.CONFIGMAP, name)
            map_data[name] = None if obj is None else dict(obj.get("data") or {})
        return podenv.EnvSources(secrets=secret_data, config_maps=map_data)

    async def _write_pod_statuses(self) -> None:
        for uid, running in list(self._running.items()):
            if uid in self._stopping:
                continue
            worker = running.worker
            pod = self._cache[kube.POD].get(worker.namespace, worker.name)
            if pod is None or uid_of(pod) != uid:
                continue
            previous = pod.get("status") or {}
            status = podstatus.pod_status(
                containers=worker.views,
                pod_ip=worker.ip,
                start_time=worker.start_time,
                now=now_stamp(),
                previous=previous,
                qos_class=resources.qos_class(pod.get("spec") or {}),
            )
            if all(previous.get(k) == v for k, v in status.items()):
                continue
            with contextlib.suppress(kube.NotFoundError):
                updated = await self._client.patch_status(
                    kube.POD, name=worker.name, namespace=worker.namespace, status=status
                )
                self._cache[kube.POD].remember(updated)
