"""Pure ASGI middleware: request metrics (every response, whoever produced it) and bearer auth.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds no task or stream per request.
"""

from __future__ import annotations

import hmac
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmop.runtime import contract
from mmop.runtime.errors import Unauthorized
from mmop.runtime.metrics import Metrics
from mmop.runtime.server.errors import error_response

_SMOKE_HEADER: Final = contract.SMOKE_TEST_HEADER.lower().encode("latin-1")
_MIRROR_HEADER: Final = contract.MIRROR_HEADER.lower().encode("latin-1")
_PROTECTED: Final = ("/v2/models/", "/v1/")


def endpoint_of(path: str) -> str | None:
    """The ``endpoint`` label of a request path; None for /metrics (scrapes are not traffic)."""
    if path == contract.METRICS_PATH:
        return None
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "infer"
        if path.endswith("/ready"):
            return contract.ENDPOINT_HEALTH
        return contract.ENDPOINT_METADATA
    if path.startswith("/v2/health/"):
        return contract.ENDPOINT_HEALTH
    if path in (contract.SERVER_METADATA_PATH, contract.SERVER_METADATA_PATH + "/"):
        return contract.ENDPOINT_METADATA
    if path == contract.EMBEDDINGS_PATH:
        return "embeddings"
    return contract.ENDPOINT_OTHER


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def is_genuine_smoke_test(given: bytes | None, token: bytes | None) -> bool:
    """The smoke-test header counts only with the pod's token, compared in constant time."""
    if given is None or not token:
        return False
    return hmac.compare_digest(given.strip(), token)


class MetricsMiddleware:
    """Counts ``mmop_requests_total`` and times ``mmop_request_duration_seconds``.

    Requests carrying the smoke-test header *with this pod's token* are labelled
    ``endpoint="smoke"`` (and marked in the ASGI scope), and requests a canary mirrors here
    (``X-Mmop-Mirror`` carrying the same per-model token) ``endpoint="mirror"``, so the
    operator's canary analysis takes neither for user traffic; either header with any other
    value is ordinary traffic, so clients cannot hide requests from the analysis.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, smoke_token: str = "") -> None:
        self.app = app
        self.metrics = metrics
        self._smoke_token = smoke_token.encode("utf-8") if smoke_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_of(scope["path"])
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        if is_genuine_smoke_test(_header(scope, _SMOKE_HEADER), self._smoke_token):
            endpoint = contract.ENDPOINT_SMOKE
            scope[contract.SMOKE_TEST_SCOPE_KEY] = True
        elif is_genuine_smoke_test(_header(scope, _MIRROR_HEADER), self._smoke_token):
            endpoint = contract.ENDPOINT_MIRROR
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe_request(
                endpoint=endpoint, code=status, seconds=time.perf_counter() - started
            )


class BearerAuthMiddleware:
    """With a token set, ``/v2/models/*`` and ``/v1/*`` need ``Authorization: Bearer <token>``.

    Probes, server metadata and ``/metrics`` stay open: the kubelet and Prometheus carry no token.
    """

    def __init__(self, app: ASGIApp, *, token: str, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Both sides are normalised: surrounding whitespace (a Secret file's newline) is not part
        # of a token, and the scheme is case-insensitive.
        self._expected = b"bearer " + token.strip().encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_PROTECTED):
            given = _header(scope, b"authorization")
            if given is None:
                error = Unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
            elif not self._matches(given):
                error = Unauthorized("the bearer token is not valid")
            else:
                await self.app(scope, receive, send)
                return
            response = error_response(error, metrics=self.metrics)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _matches(self, given: bytes) -> bool:
        scheme, _, token = given.strip().partition(b" ")
        candidate = scheme.lower() + b" " + token.strip()
        return hmac.compare_digest(candidate, self._expected)
