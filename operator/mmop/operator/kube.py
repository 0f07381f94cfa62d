"""The one Kubernetes client wrapper: typed resource kinds, async CRUD, patch, watch, error policy.

Kopf-free on purpose: the operator's reconcilers, the embedded control plane's kubelet and
router, the CLI and the tests all talk to an API server through this module. Connection
settings come from the official ``kubernetes`` library's kubeconfig / in-cluster loaders;
HTTP is ``httpx``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import anyio
import httpcore
import httpx

PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclass(frozen=True)
class Kind:
    """A resource type: where it lives in the API and what it is called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
        return base


NAMESPACE = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
NODE = Kind("", "v1", "nodes", "Node", namespaced=False)
POD = Kind("", "v1", "pods", "Pod")
SERVICE = Kind("", "v1", "services", "Service")
ENDPOINTS = Kind("", "v1", "endpoints", "Endpoints")
EVENT = Kind("", "v1", "events", "Event")
SECRET = Kind("", "v1", "secrets", "Secret")
CONFIGMAP = Kind("", "v1", "configmaps", "ConfigMap")
SERVICE_ACCOUNT = Kind("", "v1", "serviceaccounts", "ServiceAccount")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
REPLICASET = Kind("apps", "v1", "replicasets", "ReplicaSet")
HPA = Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDB = Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
LEASE = Kind("coordination.k8s.io", "v1", "leases", "Lease")
CRD = Kind(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)
VIRTUAL_SERVICE = Kind("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULE = Kind("networking.istio.io", "v1", "destinationrules", "DestinationRule")
HTTP_ROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
MULTIMODAL_MODEL = Kind("mmop.io", "v1alpha1", "multimodalmodels", "MultimodalModel")

KNOWN_KINDS: tuple[Kind, ...] = (
    NAMESPACE,
    POD,
    SERVICE,
    ENDPOINTS,
    EVENT,
    SECRET,
    CONFIGMAP,
    SERVICE_ACCOUNT,
    DEPLOYMENT,
    REPLICASET,
    HPA,
    PDB,
    LEASE,
    CRD,
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    HTTP_ROUTE,
    MULTIMODAL_MODEL,
)


def kind_of(obj: Mapping[str, Any]) -> Kind:
    """The known Kind of a manifest, by its apiVersion and kind."""
    for k in KNOWN_KINDS:
        if k.api_version == obj.get("apiVersion") and k.kind == obj.get("kind"):
            return k
    raise KeyError(f"unknown resource kind {obj.get('apiVersion')}/{obj.get('kind')}")


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status body when there is one."""

    def __init__(self, status: int, body: Mapping[str, Any] | None, *, method: str, path: str):
        self.status = status
        self.body = dict(body or {})
        self.reason = str(self.body.get("reason", ""))
        message = self.body.get("message") or f"HTTP {status}"
        super().__init__(f"{method} {path}: {status} {self.reason}: {message}")


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    """409: a stale resourceVersion (reason Conflict) or an existing name (AlreadyExists)."""


class GoneError(ApiError):
    """410: a watch or list from a compacted resourceVersion."""


def _error_for(status: int) -> type[ApiError]:
    return {404: NotFoundError, 409: ConflictError, 410: GoneError}.get(status, ApiError)


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    ca_data: str | None = None  # PEM, where the CA is not in a file (the dev cluster's own)

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> Connection:
        from kubernetes import config as kconfig  # the official loader understands every variant
        from kubernetes.client import Configuration

        cfg = Configuration()
        kconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg
        )
        return cls._from_configuration(cfg)

    @classmethod
    def in_cluster(cls) -> Connection:
        from kubernetes import config as kconfig
        from kubernetes.client import Configuration

        cfg = Configuration()
        kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return cls._from_configuration(cfg)

    @classmethod
    def auto(cls, kubeconfig: str | None = None) -> Connection:
        """In-cluster when running in a pod and no kubeconfig is named; the kubeconfig otherwise."""
        if (
            kubeconfig is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
            and not os.environ.get("KUBECONFIG")
        ):
            return cls.in_cluster()
        return cls.from_kubeconfig(kubeconfig)

    @classmethod
    def _from_configuration(cls, cfg: Any) -> Connection:
        auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        token = auth.split(" ", 1)[1] if auth and auth.lower().startswith("bearer ") else auth
        return cls(
            server=cfg.host.rstrip("/"),
            token=token,
            ca_file=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            verify=bool(cfg.verify_ssl),
        )

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if not self.verify:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass
class WriteCounter:
    """Counts the writes a client made; the no-op-resync test and the benchmark read it."""

    total: int = 0
    by_verb: dict[str, int] = field(default_factory=dict)

    def add(self, verb: str) -> None:
        self.total += 1
        self.by_verb[verb] = self.by_verb.get(verb, 0) + 1


# The ``timeout`` parameters below are httpcore's network interface (ASYNC109 waived).
class _TLSClosingStream(httpcore.AsyncNetworkStream):
    """A TCP stream whose TLS upgrade closes it when the handshake fails or is cancelled.

    httpcore leaves the TCP stream open then (encode/httpcore#443): a request cancelled during
    the handshake (a reconcile or pod worker stopped, a timeout around it) left its socket to
    the garbage collector, an unclosed transport per cancellation."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await self._inner.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._inner.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TLSClosingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, with :class:`_TLSClosingStream` streams."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _TLSClosingStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        return _TLSClosingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def async_transport(
    verify: ssl.SSLContext | bool, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """httpx's transport over a connection pool that closes a socket whose TLS handshake did
    not finish (:class:`_TLSClosingStream`). httpx does not take a network backend, so its pool
    is replaced by an equal one that uses it (``handle_async_request`` only calls the pool)."""
    ssl_context = httpx.create_ssl_context(verify=verify)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_TLSClosingBackend(),
    )
    return transport


DEFAULT_USER_AGENT = "mmop/0.1"
DEFAULT_MAX_IN_FLIGHT: Final = 8  # concurrent requests (not watches) per client
_WATCH_HEADROOM: Final = 16  # connections for watch streams (opened only when used)


class KubeClient:
    """Async access to one API server. Raises :class:`ApiError` subclasses on failures.

    ``user_agent`` names the component in the API server's audit log (the operator says
    ``mmop-operator/...``, so its requests can be told from the dev cluster's own).
    """

    def __init__(
        self,
        connection: Connection,
        *,
        timeout: float = 30.0,
        field_manager: str = "mmop",
        user_agent: str = DEFAULT_USER_AGENT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.connection = connection
        self.field_manager = field_manager
        self.writes = WriteCounter()
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        # Requests beyond ``max_in_flight`` wait here, not in httpcore's pool: the pool matches
        # every queued request against every connection each time one is freed: at 32 in flight that
        # cost 2x the CPU of 8 at 100 models, a core at 300 (docs/benchmarks.md). Watches hold their
        # own, hence the headroom.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        verify = connection._ssl()
        limits = httpx.Limits(
            max_connections=max_in_flight + _WATCH_HEADROOM,
            max_keepalive_connections=max_in_flight,
        )
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=limits,
            transport=async_transport(verify, limits),
        )

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- raw -----------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        content = None
        headers = {}
        if body is not None:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if method not in ("GET", "HEAD"):
            self.writes.add(method.lower())
        async with self._in_flight:
            response = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {"message": response.text[:500]}
            raise _error_for(response.status_code)(
                response.status_code, payload, method=method, path=path
            )
        if not response.content:
            return {}
        result: dict[str, Any] = response.json()
        return result

    # --- verbs ---------------------------------------------------------------------------
    async def get(self, kind: Kind, *, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", kind.path(namespace=namespace, name=name))

    async def get_or_none(
        self, kind: Kind, *, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.get(kind, name=name, namespace=namespace)
        except NotFoundError:
            return None

    async def list(
        self,
        kind: Kind,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        """The whole List object (``items`` and ``metadata.resourceVersion``)."""
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return await self.request("GET", kind.path(namespace=namespace), params=params)

    async def list_items(
        self,
        kind: Kind,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        listing = await self.list(
            kind, namespace=namespace, label_selector=label_selector, field_selector=field_selector
        )
        items: builtins.list[dict[str, Any]] = listing.get("items") or []
        return items

    async def create(
        self, kind: Kind, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        ns = namespace if namespace is not None else body.get("metadata", {}).get("namespace")
        return await self.request("POST", kind.path(namespace=ns), body=dict(body))

    async def replace(
        self, kind: Kind, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        meta = body.get("metadata", {})
        ns = namespace if namespace is not None else meta.get("namespace")
        return await self.request(
            "PUT", kind.path(namespace=ns, name=meta["name"]), body=dict(body)
        )

    async def patch(
        self,
        kind: Kind,
        *,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        path = kind.path(namespace=namespace, name=name)
        if subresource:
            path += f"/{subresource}"
        params: dict[str, str] = {}
        if patch_type == "apply":
            params["fieldManager"] = self.field_manager
            if force:
                params["force"] = "true"
        return await self.request(
            "PATCH", path, params=params, body=patch, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )

    async def patch_status(
        self, kind: Kind, *, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.patch(
            kind,
            name=name,
            namespace=namespace,
            patch={"status": dict(status)},
            subresource="status",
        )

    async def delete(
        self,
        kind: Kind,
        *,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
        missing_ok: bool = True,
    ) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            await self.request("DELETE", kind.path(namespace=namespace, name=name), body=body)
        except NotFoundError:
            if not missing_ok:
                raise

    async def watch(
        self,
        kind: Kind,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (``{"type", "object"}``) until the server ends the stream.

        A 410 (compacted resourceVersion) raises :class:`GoneError`; callers re-list.
        """
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        path = kind.path(namespace=namespace)
        timeout = httpx.Timeout(timeout_seconds + 30, connect=10.0)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error_for(response.status_code)(
                    response.status_code, response.json(), method="GET", path=path
                )
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    code = int(status.get("code", 500))
                    raise _error_for(code)(code, status, method="WATCH", path=path)
                yield event
