"""The HTTP adapter: OIP v2 and OpenAI routes over the data plane (FastAPI/Starlette).

Handlers receive whole raw bodies (bounded in size and time, counted against the data plane's
receive budget) before they take a queue slot, and hand them to the data plane; every error
goes through ``server.errors``. Nothing here knows about models or batching.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI, Request
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Lifespan

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


def create_app(
    plane: DataPlane, *, lifespan: Lifespan[FastAPI] | None = None, mirror: Mirror | None = None
) -> FastAPI:
    """The ASGI app of one data plane (``lifespan`` loads and stops it, see ``server.process``);
    with ``mirror``, a sample of answered OIP infer requests is mirrored (``mmop.runtime.mirror``).
    """
    settings = plane.settings
    metrics = plane.metrics
    limit = settings.max_request_bytes
    body_seconds = settings.body_timeout_seconds
    app = FastAPI(
        title="mmop-runtime",
        summary="Model server: Open Inference Protocol v2 and OpenAI embeddings",
        version=plane.server_metadata()["version"],
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

    def fail(error: BaseException) -> Response:
        return error_response(error, metrics=metrics)

    async def receive(request: Request) -> tuple[bytes, Admission]:
        """The whole body, then a queue slot: a body that trickles in never holds a slot.

        A full queue is refused before the body is read, and again (the body read for nothing)
        when it filled up meanwhile.
        """
        plane.admission.check_capacity()
        with plane.admission.receiving() as receipt:
            body = await read_body_within(
                request, limit=limit, seconds=body_seconds, receipt=receipt
            )
            return body, plane.admission.admit(body_bytes=len(body))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # exc.headers carries Allow on a 405 (RFC 9110 requires it).
        return json_response(
            {"error": str(exc.detail)}, status=exc.status_code, headers=dict(exc.headers or {})
        )

    # --- health -------------------------------------------------------------------------------

    @app.get(
        contract.LIVE_PATH,
        tags=["health"],
        responses=openapi.responses({"type": "object"}, 503),
    )
    async def live() -> Response:
        if plane.live():
            return json_response({"live": True})
        return json_response({"live": False, "error": "the batcher is dead or stuck"}, status=503)

    @app.get(
        contract.READY_PATH,
        tags=["health"],
        responses=openapi.responses({"type": "object"}, 503),
    )
    async def ready() -> Response:
        reason = plane.not_ready_reason()
        if reason is None:
            return json_response({"ready": True})
        return json_response({"ready": False, "error": reason}, status=503)

    # --- metadata -----------------------------------------------------------------------------

    @app.get(
        contract.SERVER_METADATA_PATH,
        tags=["metadata"],
        responses=openapi.responses({"type": "object"}),
    )
    async def server_metadata() -> Response:
        return json_response(plane.server_metadata())

    async def model_metadata(name: str, version: str | None = None) -> Response:
        try:
            return json_response(plane.model_metadata(name, version))
        except Exception as exc:
            return fail(exc)

    async def model_ready(name: str, version: str | None = None) -> Response:
        try:
            is_ready = plane.model_ready(name, version)
        except Exception as exc:
            return fail(exc)
        if is_ready:
            return json_response({"name": name, "ready": True})
        reason = plane.not_ready_reason() or "not ready"
        return json_response({"name": name, "ready": False, "error": reason}, status=503)

    # --- inference ----------------------------------------------------------------------------

    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        try:
            plane.check_model(name, version)
            smoke_test = bool(request.scope.get(contract.SMOKE_TEST_SCOPE_KEY))
            body, admission = await receive(request)
            with admission:
                document = await plane.infer(
                    name,
                    body,
                    admission=admission,
                    header_length=_binary_header_length(request),
                    version=version,
                    smoke_test=smoke_test,
                )
            response = json_response(document)
        except Exception as exc:
            return fail(exc)
        # Mirror user traffic only: not the operator's own requests, not requests mirrored here.
        if (
            mirror is not None
            and not smoke_test
            and contract.MIRROR_HEADER not in request.headers
            and mirror.sample()
        ):
            response.background = BackgroundTask(
                mirror.submit, body=body, headers=request.headers, answer=bytes(response.body)
            )
        return response

    # Versioned twins of the model routes (KServe and Triton clients may use either form).
    async def versioned_metadata(name: str, version: str) -> Response:
        return await model_metadata(name, version)

    async def versioned_ready(name: str, version: str) -> Response:
        return await model_ready(name, version)

    async def versioned_infer(name: str, version: str, request: Request) -> Response:
        return await infer(name, request, version)

    async def plain_metadata(name: str) -> Response:
        return await model_metadata(name)

    async def plain_ready(name: str) -> Response:
        return await model_ready(name)

    async def plain_infer(name: str, request: Request) -> Response:
        return await infer(name, request)

    meta_responses = openapi.responses({"type": "object"}, 401, 404)
    ready_responses = openapi.responses({"type": "object"}, 401, 404, 503)
    infer_responses = openapi.responses(
        openapi.INFER_RESPONSE, 400, 401, 404, 408, 413, 429, 500, 503, 504
    )
    infer_body = openapi.json_body(openapi.INFER_REQUEST)
    routes: list[tuple[str, Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = [
        ("/v2/models/{name}", plain_metadata, plain_ready, plain_infer),
        (
            "/v2/models/{name}/versions/{version}",
            versioned_metadata,
            versioned_ready,
            versioned_infer,
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

    @app.post(
        contract.EMBEDDINGS_PATH,
        tags=["inference"],
        responses=openapi.responses(
            openapi.EMBEDDINGS_RESPONSE, 400, 401, 404, 408, 413, 429, 500, 503, 504
        ),
        openapi_extra=openapi.json_body(openapi.EMBEDDINGS_REQUEST),
    )
    async def embeddings(request: Request) -> Response:
        try:
            if not plane.serves_embeddings:
                raise ModelNotFound(
                    f"{contract.EMBEDDINGS_PATH} is served for task "
                    f"{contract.TASK_IMAGE_TEXT_EMBEDDING}; this model's task is "
                    f"{settings.task}"
                )
            body, admission = await receive(request)
            with admission:
                document = await plane.embeddings(body, admission=admission)
            return json_response(document)
        except Exception as exc:
            return fail(exc)

    @app.get(contract.METRICS_PATH, tags=["metrics"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if token:
        app.add_middleware(BearerAuthMiddleware, token=token, metrics=metrics)
    smoke = settings.smoke_test_token.get_secret_value() if settings.smoke_test_token else ""
    # outermost: sees every answer
    app.add_middleware(MetricsMiddleware, metrics=metrics, smoke_token=smoke)
    return app
