"""The HTTP adapter: OIP v2 and OpenAI routes over the data plane (FastAPI/Starlette).

Handlers receive whole raw bodies (bounded in size and time, counted against the data plane's
receive budget) before they take a queue slot, and hand them to the data plane; every error
goes through ``server.errors``. Nothing here knows about models or batching.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

from mmop.runtime import contract
from mmop.runtime.admission import Admission, Receipt
from mmop.runtime.dataplane import DataPlane
from mmop.runtime.errors import BodyTimeout, InvalidInput, ModelNotFound, PayloadTooLarge, echo
from mmop.runtime.metrics import CONTENT_TYPE
from mmop.runtime.mirror import Mirror
from mmop.runtime.server import openapi
from mmop.runtime.server.errors import error_response, json_response
from mmop.runtime.server.middleware import BearerAuthMiddleware, MetricsMiddleware

BINARY_HEADER: Final = "inference-header-content-length"
_DECOMPRESSORS: Final[dict[str, Callable[[], Any]]] = {
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "deflate": lambda: zlib.decompressobj(zlib.MAX_WBITS),
}


async def read_body(request: Request, *, limit: int, receipt: Receipt | None = None) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes.

    Each chunk (and the decompressed body) is counted on ``receipt`` as it arrives.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(
                f"the request body has {size} bytes; at most {limit} are accepted"
            )
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
            if receipt is not None:
                receipt.add(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidInput("the client disconnected while sending the body") from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in _DECOMPRESSORS:
        raise InvalidInput(f"Content-Encoding {echo(encoding)} is not supported (gzip, deflate)")
    decompressor = _DECOMPRESSORS[encoding]()
    try:
        # Bounded output: a small compressed body must not expand past the limit (zip bomb).
        plain: bytes = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding} data ({exc})") from None
    if len(plain) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is over the limit of {limit} bytes")
    if receipt is not None:
        receipt.add(len(plain))
    return plain


async def read_body_within(
    request: Request, *, limit: int, seconds: float, receipt: Receipt | None = None
) -> bytes:
    """``read_body``, refused (408) when the body takes longer than ``seconds`` to arrive:
    a slow client must not hold a connection and its buffered bytes for ever."""
    try:
        async with asyncio.timeout(seconds):
            return await read_body(request, limit=limit, receipt=receipt)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {seconds:g} s") from None


def _binary_header_length(request: Request) -> int | None:
    raw = request.headers.get(BINARY_HEADER)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput("Inference-Header-Content-Length is not a number") from None


# FastAPI >= 0.165 looks up the OpenTelemetry providers (reading the environment) on every
# request; the runtime exports Prometheus metrics and configures no OpenTelemetry, so its hooks
# are off (measured: 3 % of the serving process's GIL time at concurrency 64).
_NO_TELEMETRY: Final[dict[str, Any]] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(
    plane: DataPlane, *, lifespan: Lifespan[FastAPI] | None = None, mirror: Mirror | None = None
) -> FastAPI:
    """The ASGI app of one data plane (``lifespan`` loads and stops it, see ``server.process``);
    with ``mirror``, a sample of answered OIP infer requests is mirrored (``mmop.runtime.mirror``).
    """
    app = FastAPI(
        title="mmop-runtime",
        summary="Model server: Open Inference Protocol v2 and OpenAI embeddings",
        version=plane.server_metadata()["version"],
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    handlers = _Handlers(plane, mirror=mirror)
    _add_health_routes(app, handlers)
    _add_model_routes(app, handlers)
    _add_openai_routes(app, handlers)
    infer_paths = [
        route.path_regex
        for route in app.router.routes
        if isinstance(route, APIRoute)
        and route.endpoint in (handlers.plain_infer, handlers.versioned_infer)
    ]
    # innermost: inside auth and the request metrics, so both still see every infer request
    app.add_middleware(InferFastPath, handlers=handlers, paths=infer_paths)
    _add_middleware(app, plane)
    return app


class InferFastPath:
    """OIP infer requests go straight to their handler, past FastAPI's router.

    The router matches the path against every route in turn, resolves the handler's
    parameters and wraps it in its exception middleware; FastAPI's and Starlette's layers took
    about 30 % of the event loop's GIL time per request in a profile of the tiny CLIP, on the
    one thread every request passes through (docs/benchmarks.md, item 3). The handler is the
    route's own (``_Handlers.infer``), it answers every error itself, and the routes stay
    registered for the OpenAPI document; any other path or method (a 405, a redirect for a
    trailing slash, a mounted ``root_path``) goes on to the router. ``paths`` are the infer
    routes' own compiled paths (``path_regex``), so both match the same requests.
    """

    def __init__(
        self, app: ASGIApp, *, handlers: _Handlers, paths: Sequence[re.Pattern[str]]
    ) -> None:
        self.app = app
        self.handlers = handlers
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            for path in self.paths:
                match = path.match(scope["path"])
                if match is not None:
                    params = match.groupdict()
                    request = Request(scope, receive, send)
                    response = await self.handlers.infer(
                        params["name"], request, params.get("version")
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    # exc.headers carries Allow on a 405 (RFC 9110 requires it).
    return json_response(
        {"error": str(exc.detail)}, status=exc.status_code, headers=dict(exc.headers or {})
    )


class _Handlers:
    """The route handlers of one data plane: each turns a request into a data plane call and
    the answer (or the error, through ``server.errors``) into a response. The method names are
    the routes' names (and OpenAPI operation ids)."""

    def __init__(self, plane: DataPlane, *, mirror: Mirror | None) -> None:
        self.plane = plane
        self.mirror = mirror
        self.metrics = plane.metrics
        self.limit = plane.settings.max_request_bytes
        self.body_seconds = plane.settings.body_timeout_seconds

    def fail(self, error: BaseException) -> Response:
        return error_response(error, metrics=self.metrics)

    async def receive(self, request: Request) -> tuple[bytes, Admission]:
        """The whole body, then a queue slot: a body that trickles in never holds a slot.

        A full queue is refused before the body is read, and again (the body read for nothing)
        when it filled up meanwhile.
        """
        admission = self.plane.admission
        admission.check_capacity()
        with admission.receiving() as receipt:
            body = await read_body_within(
                request, limit=self.limit, seconds=self.body_seconds, receipt=receipt
            )
            return body, admission.admit(body_bytes=len(body))

    # --- health -------------------------------------------------------------------------------

    async def live(self) -> Response:
        if self.plane.live():
            return json_response({"live": True})
        return json_response({"live": False, "error": "the batcher is dead or stuck"}, status=503)

    async def ready(self) -> Response:
        reason = self.plane.not_ready_reason()
        if reason is None:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": reason}, status=503)

    # --- metadata -----------------------------------------------------------------------------

    async def server_metadata(self) -> Response:
        return json_response(self.plane.server_metadata())

    async def model_metadata(self, name: str, version: str | None = None) -> Response:
        try:
            return json_response(self.plane.model_metadata(name, version))
        except Exception as exc:
            return self.fail(exc)

    async def model_ready(self, name: str, version: str | None = None) -> Response:
        try:
            is_ready = self.plane.model_ready(name, version)
        except Exception as exc:
            return self.fail(exc)
        if is_ready:
            return json_response({"name": name, "ready": True})
        reason = self.plane.not_ready_reason() or "not ready"
        return json_response({"name": name, "ready": False, "error": reason}, status=503)

    # --- inference ----------------------------------------------------------------------------

    async def infer(self, name: str, request: Request, version: str | None = None) -> Response:
        try:
            self.plane.check_model(name, version)
            smoke_test = bool(request.scope.get(contract.SMOKE_TEST_SCOPE_KEY))
            body, admission = await self.receive(request)
            with admission:
                document = await self.plane.infer(
                    name,
                    body,
                    admission=admission,
                    header_length=_binary_header_length(request),
                    version=version,
                    smoke_test=smoke_test,
                )
            response = json_response(document)
        except Exception as exc:
            return self.fail(exc)
        self._mirror(request, body=body, response=response, smoke_test=smoke_test)
        return response

    def _mirror(
        self, request: Request, *, body: bytes, response: Response, smoke_test: bool
    ) -> None:
        # Mirror user traffic only: not the operator's own requests, not requests mirrored here.
        mirror = self.mirror
        if (
            mirror is not None
            and not smoke_test
            and contract.MIRROR_HEADER not in request.headers
            and mirror.sample()
        ):
            response.background = BackgroundTask(
                mirror.submit, body=body, headers=request.headers, answer=bytes(response.body)
            )

    # Versioned twins of the model routes (KServe and Triton clients may use either form).
    async def versioned_metadata(self, name: str, version: str) -> Response:
        return await self.model_metadata(name, version)

    async def versioned_ready(self, name: str, version: str) -> Response:
        return await self.model_ready(name, version)

    async def versioned_infer(self, name: str, version: str, request: Request) -> Response:
        return await self.infer(name, request, version)

    async def plain_metadata(self, name: str) -> Response:
        return await self.model_metadata(name)

    async def plain_ready(self, name: str) -> Response:
        return await self.model_ready(name)

    async def plain_infer(self, name: str, request: Request) -> Response:
        return await self.infer(name, request)

    async def embeddings(self, request: Request) -> Response:
        try:
            if not self.plane.serves_embeddings:
                raise ModelNotFound(
                    f"{contract.EMBEDDINGS_PATH} is served for task "
                    f"{contract.TASK_IMAGE_TEXT_EMBEDDING}; this model's task is "
                    f"{self.plane.settings.task}"
                )
            body, admission = await self.receive(request)
            with admission:
                document = await self.plane.embeddings(body, admission=admission)
            return json_response(document)
        except Exception as exc:
            return self.fail(exc)

    async def prometheus_metrics(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def _add_health_routes(app: FastAPI, handlers: _Handlers) -> None:
    """Liveness, readiness and server metadata."""
    health = openapi.responses({"type": "object"}, 503)
    app.add_api_route(
        contract.LIVE_PATH, handlers.live, methods=["GET"], tags=["health"], responses=health
    )
    app.add_api_route(
        contract.READY_PATH, handlers.ready, methods=["GET"], tags=["health"], responses=health
    )
    app.add_api_route(
        contract.SERVER_METADATA_PATH,
        handlers.server_metadata,
        methods=["GET"],
        tags=["metadata"],
        responses=openapi.responses({"type": "object"}),
    )


def _add_model_routes(app: FastAPI, handlers: _Handlers) -> None:
    """OIP v2 model metadata, readiness and infer, with and without a version in the path."""
    meta_responses = openapi.responses({"type": "object"}, 401, 404)
    ready_responses = openapi.responses({"type": "object"}, 401, 404, 503)
    infer_responses = openapi.responses(
        openapi.INFER_RESPONSE, 400, 401, 404, 408, 413, 429, 500, 503, 504
    )
    infer_body = openapi.json_body(openapi.INFER_REQUEST)
    routes: list[tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = [
        ("/v2/models/{name}", handlers.plain_metadata, handlers.plain_ready, handlers.plain_infer),
        (
            "/v2/models/{name}/versions/{version}",
            handlers.versioned_metadata,
            handlers.versioned_ready,
            handlers.versioned_infer,
        ),
    ]
    for prefix, metadata_route, ready_route, infer_route in routes:
        app.add_api_route(
            prefix, metadata_route, methods=["GET"], tags=["metadata"], responses=meta_responses
        )
        app.add_api_route(
            prefix + "/ready",
            ready_route,
            methods=["GET"],
            tags=["health"],
            responses=ready_responses,
        )
        app.add_api_route(
            prefix + "/infer",
            infer_route,
            methods=["POST"],
            tags=["inference"],
            responses=infer_responses,
            openapi_extra=infer_body,
        )


def _add_openai_routes(app: FastAPI, handlers: _Handlers) -> None:
    """OpenAI ``/v1/embeddings`` and the Prometheus ``/metrics``."""
    app.add_api_route(
        contract.EMBEDDINGS_PATH,
        handlers.embeddings,
        methods=["POST"],
        tags=["inference"],
        responses=openapi.responses(
            openapi.EMBEDDINGS_RESPONSE, 400, 401, 404, 408, 413, 429, 500, 503, 504
        ),
        openapi_extra=openapi.json_body(openapi.EMBEDDINGS_REQUEST),
    )
    app.add_api_route(
        contract.METRICS_PATH,
        handlers.prometheus_metrics,
        methods=["GET"],
        tags=["metrics"],
        response_class=Response,
    )


def _add_middleware(app: FastAPI, plane: DataPlane) -> None:
    """Bearer-token auth when a token is set, and the request metrics outermost."""
    settings, metrics = plane.settings, plane.metrics
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if token:
        app.add_middleware(BearerAuthMiddleware, token=token, metrics=metrics)
    smoke = settings.smoke_test_token.get_secret_value() if settings.smoke_test_token else ""
    # outermost: sees every answer
    app.add_middleware(MetricsMiddleware, metrics=metrics, smoke_token=smoke)
