"""``DevCluster``: the whole local control plane (API server, kubelet, router) on one event loop
in a background thread, plus the operator as a subprocess. ``mmop dev``, the tests and the
benchmarks all use it.

    with DevCluster(state_dir=tmp, gpus=1) as cluster:
        cluster.apply(objects)            # server-side apply of any kinds
        cluster.start_operator()          # python -m mmop.operator --kubeconfig ...
        httpx.get(cluster.router_url + "/v2/models/clip/ready")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import yaml

from mmop.devcluster import manifests
from mmop.devcluster import prometheus as prom
from mmop.devcluster.apiserver import ApiServer, write_kubeconfig
from mmop.devcluster.informer import Cache
from mmop.devcluster.kubelet.agent import KINDS as KUBELET_KINDS
from mmop.devcluster.kubelet.agent import Kubelet, KubeletConfig
from mmop.devcluster.kubelet.podworker import die_with_parent
from mmop.devcluster.router import meshcrds
from mmop.devcluster.router.proxy import KINDS as ROUTER_KINDS
from mmop.devcluster.router.proxy import Router
from mmop.operator import crd, kube

log = logging.getLogger(__name__)
T = TypeVar("T")
START_TIMEOUT: Final = 60.0
CALL_TIMEOUT: Final = 120.0
OPERATOR_STOP_TIMEOUT: Final = 30.0
PROMETHEUS_START_TIMEOUT: Final = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def platform_crds() -> list[dict[str, Any]]:
    """The CRDs every dev cluster has: MultimodalModel and the routing kinds."""
    return [crd.build_crd(), *meshcrds.routing_crds()]


class DevCluster:
    """A local control plane. ``start()`` (or ``with``) returns once it serves."""

    def __init__(
        self,
        state_dir: str | Path = ".mmop-dev",
        *,
        api_port: int = 0,
        router_port: int = 0,
        gpus: int = 0,
        host: str = "127.0.0.1",
        namespace: str = "default",
        router_seed: int | None = None,
        kubelet: Mapping[str, Any] | None = None,
    ) -> None:
        """``kubelet``: extra :class:`KubeletConfig` fields (``probe_period_cap``,
        ``backoff_initial``, ``shutdown_grace``, ...)."""
        self.state_dir = Path(state_dir).resolve()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.namespace = namespace
        self._host = host
        self._api_port = api_port
        self._router_port = router_port
        self._kubelet_config = KubeletConfig(
            state_dir=self.state_dir, gpus=gpus, kubeconfig=self.kubeconfig, **dict(kubelet or {})
        )
        self._rng = random.Random(router_seed)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: ApiServer | None = None
        self._client: kube.KubeClient | None = None
        self._cache: Cache | None = None
        self._kubelet: Kubelet | None = None
        self._router: Router | None = None
        self._operator: subprocess.Popen[bytes] | None = None
        self.operator_health_port: int | None = None
        self._prometheus: subprocess.Popen[bytes] | None = None
        self._prometheus_url: str | None = None
        self._pod_discovery: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> DevCluster:
        if self._thread is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._main, name="mmop-devcluster", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"the dev cluster did not start within {START_TIMEOUT:.0f}s")
        if self._error is not None:
            self._thread.join(10)
            raise RuntimeError(f"the dev cluster did not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Stop the operator, every pod process, the router and the API server."""
        if self._thread is None:
            return
        with contextlib.suppress(Exception):
            self.stop_operator()
        with contextlib.suppress(Exception):
            self.stop_prometheus()
        if self._thread.is_alive() and self._ready.is_set() and self._error is None:
            future = asyncio.run_coroutine_threadsafe(self._astop(), self._loop)
            try:
                future.result(self._kubelet_config.shutdown_grace + 30)
            except Exception:
                log.exception("dev cluster shutdown failed")
                if self._kubelet is not None:
                    self._kubelet.kill_all()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._astart())
        except BaseException as error:  # reported to the starting thread
            self._error = error
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._astop())
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _astart(self) -> None:
        self._server = ApiServer(self._host, self._api_port)
        await self._server.start()
        write_kubeconfig(
            self.kubeconfig,
            self._server.url,
            self.namespace,
            token=self._server.token,
            ca_pem=self._server.ca_pem,
        )
        self._client = kube.KubeClient(self.api_connection, field_manager=manifests.FIELD_MANAGER)
        await manifests.apply(self._client, platform_crds())
        kinds = tuple(dict.fromkeys((*KUBELET_KINDS, *ROUTER_KINDS)))
        self._cache = Cache(self._client, kinds)
        # The router first: pods get its URL as their HTTP proxy (the stand-in for cluster DNS).
        self._router = Router(
            self._cache,
            host=self._host,
            port=self._router_port,
            rng=self._rng,
            default_namespace=self.namespace,
        )
        await self._router.start()
        config = dataclasses.replace(self._kubelet_config, cluster_proxy=self._router.url)
        self._kubelet = Kubelet(self._client, self._cache, config=config)
        await self._kubelet.start()
        await asyncio.wait_for(self._cache.wait_synced(), START_TIMEOUT)

    async def _astop(self) -> None:
        if self._kubelet is not None:
            await self._kubelet.stop()
        if self._router is not None:
            await self._router.stop()
        if self._cache is not None:
            await self._cache.stop()
        if self._client is not None:
            await self._client.close()
        if self._server is not None:
            await self._server.stop()

    # --- use -------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        """``https://127.0.0.1:PORT``: clients trust ``api_ca_pem`` and send ``api_token``."""
        assert self._server is not None, "not started"
        return self._server.url

    @property
    def api_ca_pem(self) -> str:
        """The API server's CA certificate (PEM; also in ``kubeconfig``)."""
        assert self._server is not None, "not started"
        return self._server.ca_pem

    @property
    def api_connection(self) -> kube.Connection:
        """The API server's URL, CA and token: ``kube.KubeClient(cluster.api_connection)``."""
        return kube.Connection(server=self.api_url, token=self.api_token, ca_data=self.api_ca_pem)

    def api_ssl_context(self) -> ssl.SSLContext:
        """A client ``ssl`` context trusting the API server's CA: ``httpx.Client(verify=...)``."""
        assert self._server is not None, "not started"
        return self._server.client_ssl_context()

    @property
    def api_token(self) -> str:
        """The bearer token the API server requires (also in ``kubeconfig``)."""
        assert self._server is not None, "not started"
        return self._server.token

    @property
    def api_headers(self) -> dict[str, str]:
        """``Authorization`` for HTTP clients of the API server."""
        return {"Authorization": f"Bearer {self.api_token}"}

    @property
    def router_url(self) -> str:
        assert self._router is not None, "not started"
        return self._router.url

    @property
    def kubelet(self) -> Kubelet:
        assert self._kubelet is not None, "not started"
        return self._kubelet

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float = CALL_TIMEOUT) -> T:
        """Run a coroutine on the cluster's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call_in_loop_thread(self, fn: Callable[[], T], *, timeout: float = CALL_TIMEOUT) -> T:
        """Call a plain function on the cluster's thread (where child processes must start)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the caller
                future.set_exception(error)

        self._loop.call_soon_threadsafe(call)
        return future.result(timeout)

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Server-side apply of manifests of any kinds; returns the stored objects."""
        assert self._client is not None, "not started"
        return self.run(
            manifests.apply(self._client, list(objects), default_namespace=self.namespace)
        )

    def apply_file(self, path: str | Path) -> list[dict[str, Any]]:
        return self.apply(manifests.load_documents(str(path)))

    def pids(self) -> dict[str, int]:
        """``namespace/pod`` -> pid of each pod process alive now."""

        async def read() -> dict[str, int]:
            return self.kubelet.pids()

        return self.run(read())

    # --- the operator ----------------------------------------------------------------------------
    @property
    def operator_log(self) -> Path:
        return self.logs_dir / "operator.log"

    @property
    def operator(self) -> subprocess.Popen[bytes] | None:
        return self._operator

    def start_operator(self, *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``python -m mmop.operator --kubeconfig KUBECONFIG`` (output: ``operator_log``)."""
        if self._operator is not None and self._operator.poll() is None:
            return self._operator
        self.operator_health_port = free_port()
        # Only --kubeconfig says where the cluster is: no KUBECONFIG or in-cluster settings.
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        child_env["MMOP_OPERATOR_HEALTH_PORT"] = str(self.operator_health_port)
        # A development cluster: MMOP_FAULT_* in a model's env is how one tries a rollback.
        child_env.setdefault("MMOP_OPERATOR_ALLOW_FAULT_ENV", "true")
        child_env.update(env or {})
        command = [sys.executable, "-m", "mmop.operator", "--kubeconfig", str(self.kubeconfig)]

        def spawn() -> subprocess.Popen[bytes]:
            # Forked from the cluster's thread: it dies with that thread (PR_SET_PDEATHSIG).
            self.operator_log.parent.mkdir(parents=True, exist_ok=True)
            with self.operator_log.open("ab") as out:
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )

        self._operator = self._call_in_loop_thread(spawn)
        log.info("operator started (pid %s)", self._operator.pid)
        return self._operator

    def stop_operator(self, *, timeout: float = OPERATOR_STOP_TIMEOUT) -> int | None:
        """SIGTERM the operator and wait (SIGKILL after ``timeout``); its exit status."""
        process = self._operator
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill_operator()
        self._operator = None
        return process.returncode

    def kill_operator(self) -> int | None:
        """SIGKILL the operator (a crash, for restart tests); its exit status."""
        process = self._operator
        if process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        self._operator = None
        return process.returncode

    # --- Prometheus ------------------------------------------------------------------------------
    @property
    def prometheus_dir(self) -> Path:
        return self.state_dir / "prometheus"

    @property
    def prometheus_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the Prometheus started by :meth:`start_prometheus`."""
        return self._prometheus_url

    @property
    def prometheus_log(self) -> Path:
        return self.logs_dir / "prometheus.log"

    def start_prometheus(
        self,
        *,
        scrape_interval: str = prom.DEFAULT_SCRAPE_INTERVAL,
        pod_monitor: Mapping[str, Any] | None = None,
        port: int = 0,
        binary: str | None = None,
    ) -> str:
        """Run the distribution's ``prometheus`` scraping the pods that ``pod_monitor`` (default:
        the chart's runtime PodMonitor) selects, every ``scrape_interval``; returns its URL once
        it is ready. Its queries are logged to ``prometheus_dir/queries.log``."""
        if self._prometheus is not None and self._prometheus.poll() is None:
            assert self._prometheus_url is not None
            return self._prometheus_url
        found = binary or prom.find_binary()
        if found is None:
            raise RuntimeError(f"prometheus not found: {prom.INSTALL_HINT}")
        monitor = prom.with_interval(pod_monitor or prom.runtime_pod_monitor(), scrape_interval)
        configs, discoveries = prom.use_file_discovery(
            prom.scrape_configs_from_pod_monitor(monitor, kubeconfig=self.kubeconfig),
            directory=self.prometheus_dir / "targets",
        )
        config = prom.prometheus_config(configs, query_log=self.prometheus_dir / "queries.log")
        # Each start begins with empty storage, as the API server begins with an empty cluster.
        shutil.rmtree(self.prometheus_dir / "data", ignore_errors=True)
        (self.prometheus_dir / "targets").mkdir(parents=True, exist_ok=True)
        self.run(self._start_pod_discovery(discoveries))
        config_file = self.prometheus_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        listen = f"{self._host}:{port or free_port(self._host)}"
        command = prom.command(
            found, config_file=config_file, data_dir=self.prometheus_dir / "data", listen=listen
        )

        def spawn() -> subprocess.Popen[bytes]:
            self.prometheus_log.parent.mkdir(parents=True, exist_ok=True)
            with self.prometheus_log.open("ab") as out:
                return subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.prometheus_dir,
                    start_new_session=True,
                    preexec_fn=die_with_parent,
                )

        self._prometheus = self._call_in_loop_thread(spawn)
        self._prometheus_url = f"http://{listen}"
        self._wait_prometheus_ready(self._prometheus, self._prometheus_url)
        log.info("prometheus started (pid %s) at %s", self._prometheus.pid, self._prometheus_url)
        return self._prometheus_url

    async def _start_pod_discovery(self, discoveries: list[prom.PodDiscovery]) -> None:
        """Write the target files now, then whenever the watched pods change."""
        assert self._cache is not None, "not started"
        if self._pod_discovery is not None:
            self._pod_discovery.cancel()
        changed = self._cache.subscribe()
        written: dict[Path, str] = {}

        def write() -> None:
            pods = list(self._cache[kube.POD]) if self._cache is not None else []
            for discovery in discoveries:
                groups = prom.pod_target_groups(pods, namespaces=discovery.namespaces)
                text = json.dumps(groups, indent=1, sort_keys=True)
                if written.get(discovery.file) != text:
                    partial = discovery.file.with_name(discovery.file.name + ".partial")
                    partial.write_text(text)
                    partial.replace(discovery.file)  # atomic: Prometheus never reads half a file
                    written[discovery.file] = text

        async def follow() -> None:
            while True:
                await changed.wait()
                changed.clear()
                write()

        changed.clear()
        write()
        self._pod_discovery = asyncio.create_task(follow(), name="prometheus-pod-discovery")

    async def _stop_pod_discovery(self) -> None:
        task, self._pod_discovery = self._pod_discovery, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _wait_prometheus_ready(self, process: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + PROMETHEUS_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.stop_prometheus()
                raise RuntimeError(
                    f"prometheus exited with status {process.returncode}; see {self.prometheus_log}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop_prometheus()
        raise RuntimeError(
            f"prometheus was not ready within {PROMETHEUS_START_TIMEOUT:.0f}s; "
            f"see {self.prometheus_log}"
        )

    def stop_prometheus(self, *, timeout: float = OPERATOR_STOP_TIMEOUT) -> int | None:
        """SIGTERM Prometheus and wait (SIGKILL after ``timeout``); its exit status."""
        process, self._prometheus, self._prometheus_url = self._prometheus, None, None
        if self._pod_discovery is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                self.run(self._stop_pod_discovery(), timeout=10)
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        return process.returncode
