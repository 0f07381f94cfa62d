"""The local router: one HTTP port in front of every model, standing in for the mesh / gateway.

For each request it finds the model (Host header, else the OIP path ``/v2/models/NAME/...``),
draws a version by the weights of the model's VirtualService or HTTPRoute (or takes any ready
pod behind its Service), picks a ready pod of that version round-robin and proxies the request
to it, streaming both ways. Responses carry ``X-Mmop-Version``, ``X-Mmop-Pod`` and
``X-Mmop-Route``. No ready pod: 503; unknown model: 404; both as JSON ``{"error": ...}``.
Like Istio's default retry policy, a refused connection is retried once on another pod of the
same version.

It is also the pods' HTTP proxy (their ``HTTP_PROXY``, the stand-in for cluster DNS): a request
in absolute form (``POST http://NAME.NS.svc.cluster.local:8080/...``) is routed by its host only,
a cluster name without a Service is a 404, and any other host (a pod IP, a host outside the
cluster) is passed straight on.

The routing decisions are in :mod:`.decisions`; the cluster view comes from watches.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Final

import aiohttp
from aiohttp import web

from mmop.devcluster.informer import Cache
from mmop.devcluster.router import decisions
from mmop.operator import kube

log = logging.getLogger(__name__)
KINDS: Final = (
    kube.SERVICE,
    kube.POD,
    kube.VIRTUAL_SERVICE,
    kube.DESTINATION_RULE,
    kube.HTTP_ROUTE,
)
VERSION_HEADER: Final = "X-Mmop-Version"
POD_HEADER: Final = "X-Mmop-Pod"
ROUTE_HEADER: Final = "X-Mmop-Route"
ATTEMPTS: Final = 2
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class Router:
    """The proxy. ``start()`` / ``stop()`` on the loop that runs ``cache``."""

    def __init__(
        self,
        cache: Cache,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rng: random.Random | None = None,
        default_namespace: str = "default",
    ) -> None:
        self.host = host
        self.port = port
        self._cache = cache
        self._rng = rng or random.Random()
        self._default_namespace = default_namespace
        self._turns = decisions.RoundRobin()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def view(self) -> decisions.ClusterView:
        cache = self._cache
        return decisions.ClusterView(
            services=cache[kube.SERVICE],
            pods=cache[kube.POD],
            virtual_services=cache[kube.VIRTUAL_SERVICE],
            destination_rules=cache[kube.DESTINATION_RULE],
            http_routes=cache[kube.HTTP_ROUTE],
        )

    async def start(self) -> None:
        self._cache.start()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            trust_env=False,
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("router listening on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        view = self.view()
        query = decisions.Request(
            host=request.host,
            path=request.path,
            method=request.method,
            headers=dict(request.headers),
        )
        proxied = not request.raw_path.startswith("/")  # absolute form: we are the proxy
        route = decisions.find_route(
            view, query, default_namespace=self._default_namespace, by_path=not proxied
        )
        if route is None and proxied and not decisions.is_cluster_host(request.host):
            return await self._pass_through(request)
        if route is None:
            host = decisions.strip_port(request.host)
            return _error(404, f"no model for host {host!r} or path {request.path!r}")
        model = f"{route.model.namespace}/{route.model.name}"
        if not route.backends:
            return _error(
                404,
                f"{route.via} has no route for {request.method} {request.path}",
                {ROUTE_HEADER: route.via},
            )
        backend = decisions.choose_backend(route.backends, self._rng)
        if backend is None:
            return _error(
                503,
                f"{route.via}: every destination of {model} has weight 0",
                {ROUTE_HEADER: route.via},
            )
        pods = decisions.ready_pods(view, backend)
        headers = {ROUTE_HEADER: route.via}
        if backend.version:
            headers[VERSION_HEADER] = backend.version
        if not pods:
            why = backend.problem or f"no ready pod for {model}" + (
                f" version {backend.version}" if backend.version else ""
            )
            return _error(503, why, headers)
        key = (route.model.namespace, route.model.name, backend.version)
        last_error = ""
        for _ in range(min(ATTEMPTS, len(pods))):
            pod = self._turns.pick(key, pods)
            try:
                return await self._proxy(
                    request, view=view, backend=backend, pod=pod, via=route.via
                )
            except aiohttp.ClientConnectorError as error:
                last_error = str(error)
                log.info("router: %s", error)
        return _error(503, f"upstream connect error: {last_error}", headers)

    async def _pass_through(self, request: web.Request) -> web.StreamResponse:
        """A proxied request for a host that is not a Service: sent on to that host as is."""
        try:
            return await self._stream(request, url=str(request.url), extra={})
        except aiohttp.ClientError as error:
            return _error(502, f"cannot reach {request.host}: {error}")

    async def _stream(
        self, request: web.Request, *, url: str, extra: dict[str, str]
    ) -> web.StreamResponse:
        """Send ``request`` to ``url`` and stream the answer back, with ``extra`` headers."""
        assert self._session is not None
        forward = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        forward["X-Forwarded-For"] = request.remote or ""
        body = request.content if request.body_exists else None
        async with self._session.request(
            request.method, url, headers=forward, data=body, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    response.headers.add(name, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            for name, value in extra.items():
                response.headers[name] = value
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            return response

    async def _proxy(
        self,
        request: web.Request,
        *,
        view: decisions.ClusterView,
        backend: decisions.Backend,
        pod: decisions.Obj,
        via: str,
    ) -> web.StreamResponse:
        ip = pod["status"]["podIP"]
        port = decisions.target_port(view, backend, pod)
        extra = {
            VERSION_HEADER: decisions.pod_version(pod, backend),
            POD_HEADER: str(pod["metadata"]["name"]),
            ROUTE_HEADER: via,
        }
        return await self._stream(request, url=f"http://{ip}:{port}{request.rel_url}", extra=extra)
