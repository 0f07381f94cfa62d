"""The server object: wiring (registry, store, watch hub, API, HTTP), lifecycle (async context
manager or a background thread), bootstrap namespaces, and kubeconfig files."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import secrets
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from mmop.devcluster.apiserver import builtins, tls
from mmop.devcluster.apiserver.audit import AuditLog
from mmop.devcluster.apiserver.handlers import Handler, WatchSettings
from mmop.devcluster.apiserver.operations import Api, Target, WriteOptions
from mmop.devcluster.apiserver.resources import Registry
from mmop.devcluster.apiserver.store import Store
from mmop.devcluster.apiserver.watch import WatchHub

logger = logging.getLogger(__name__)
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiServer:
    """An in-memory Kubernetes API server on HTTPS.

    ``watch_history``: events kept per resource type for watches that resume from a
    resourceVersion (older ones get 410 Gone). ``bookmark_interval``: the most seconds a watch
    that asked for bookmarks goes without one. ``watch_timeout``: the default length of a watch
    without ``timeoutSeconds``. ``token``: the bearer token (a random one when not given) that
    ``write_kubeconfig`` puts in a file only its owner can read, with the server's CA
    (``ca_pem``). Every request must carry the token (401 otherwise), except ``/healthz``,
    ``/livez`` and ``/readyz``: loopback is shared by every local user. The server's certificate
    comes from a CA made for this server alone (``tls.generate``); ``require_token=False`` is
    for a caller that guards the port itself.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        watch_history: int = 10_000,
        bookmark_interval: float = 10.0,
        watch_timeout: float = 1800.0,
        token: str | None = None,
        require_token: bool = True,
    ) -> None:
        self.host = host
        self.token = token or secrets.token_urlsafe(32)
        self._certificate = tls.generate((*tls.DEFAULT_HOSTS, host))
        self.port = port
        self.audit = AuditLog()
        self.registry = Registry(builtins.BUILTIN_TYPES)
        self.hub = WatchHub(history_size=watch_history)
        self.store = Store(self.hub)
        self.api = Api(registry=self.registry, store=self.store)
        self._handler = Handler(
            api=self.api,
            audit=self.audit,
            watch=WatchSettings(bookmark_interval=bookmark_interval, default_timeout=watch_timeout),
            address=lambda: f"{self.host}:{self.port}",
            token=self.token if require_token else None,
        )
        self.reads = self._handler.reads  # distinct reads, for RBAC checks
        self._runner: web.AppRunner | None = None
        self._bootstrap()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> str:
        """The PEM certificate of the CA that signed this server's certificate (public)."""
        return self._certificate.ca_pem

    def client_ssl_context(self) -> ssl.SSLContext:
        """An ``ssl`` context that trusts this server's CA only (``httpx``'s ``verify=``)."""
        return tls.client_context(self.ca_pem)

    @property
    def internal_errors(self) -> list[str]:
        """Requests that failed with 500 (server bugs), as "METHOD PATH: error"."""
        return list(self._handler.internal_errors)

    def _bootstrap(self) -> None:
        ns_type = self.registry.get(builtins.NAMESPACE_KEY)
        assert ns_type is not None
        target = Target(ns_type, ns_type.preferred)
        for name in INITIAL_NAMESPACES:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            self.api.create(target, body, WriteOptions(field_manager="kube-apiserver"))

    def compact(self) -> int:
        """Forget the watch history up to now (watches from older versions get 410 Gone).

        Call it from the server's loop, or through ``POST /debug/compact`` from elsewhere.
        """
        rv = self.store.resource_version
        self.hub.compact(rv)
        return rv

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handler.handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            reuse_address=True,
            ssl_context=tls.server_context(self._certificate),
        )
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        logger.info("devcluster API server listening on %s", self.url)

    async def stop(self) -> None:
        self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    def start_in_thread(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> ServerHandle:
        """Run a server on its own event loop in a daemon thread; returns once it listens."""
        return ServerHandle(cls(host, port, **kwargs))


class ServerHandle:
    """A server running in a background thread: ``url``, ``server``, ``audit``, ``stop()``."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mmop-apiserver", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the API server did not start: {self._error}") from self._error
        if not self._started.is_set():
            raise RuntimeError("the API server did not start within 30 seconds")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._loop.close()
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def audit(self) -> AuditLog:
        return self.server.audit

    @property
    def token(self) -> str:
        """The bearer token the server requires (``Authorization: Bearer TOKEN``)."""
        return self.server.token

    @property
    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer TOKEN"}``, for HTTP clients of the server."""
        return {"Authorization": f"Bearer {self.server.token}"}

    @property
    def ca_pem(self) -> str:
        """The server's CA certificate (PEM): what clients trust."""
        return self.server.ca_pem

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """A client ``ssl`` context trusting the server's CA: ``httpx.Client(verify=...)``."""
        return self.server.client_ssl_context()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (e.g. ``handle.call(handle.server.compact)``)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_kubeconfig(
    path: str | Path,
    url: str,
    namespace: str = "default",
    *,
    token: str,
    ca_pem: str,
    name: str = "mmop-dev",
) -> Path:
    """Write a kubeconfig for ``url`` with the server's ``token`` and CA certificate ``ca_pem``
    (kubectl, helm, kopf and the kubernetes client read it), readable by its owner only:
    created with mode 0600, never through a symbolic link."""
    cluster = {
        "server": url,
        "certificate-authority-data": base64.b64encode(ca_pem.encode()).decode(),
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
        "preferences": {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)
        out.truncate(0)
        out.write(yaml.safe_dump(config, sort_keys=False))
    return target
