"""The one place that maps domain errors to HTTP: status code, JSON body, headers.

It also counts refused requests in ``mmop_rejected_requests_total{reason}``.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.responses import Response

from mmop.runtime import protocol
from mmop.runtime.errors import (
    BodyTimeout,
    Draining,
    FaultInjected,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    QueueTimeout,
    RuntimeFailure,
    Unauthorized,
    one_line,
)
from mmop.runtime.metrics import Metrics

log = logging.getLogger(__name__)

JSON: Final = "application/json"
STATUS: Final[dict[type[RuntimeFailure], int]] = {
    InvalidInput: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    PayloadTooLarge: 413,
    QueueFull: 429,
    NotReady: 503,
    Draining: 503,
    QueueTimeout: 504,
    BodyTimeout: 408,
    InferenceFailed: 500,
    FaultInjected: 500,
}


def status_of(error: RuntimeFailure) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def error_response(error: BaseException, *, metrics: Metrics | None = None) -> Response:
    """``{"error": "..."}`` with the status the error stands for."""
    if not isinstance(error, RuntimeFailure):
        log.error("unexpected error: %s: %s", type(error).__name__, one_line(error))
        error = InferenceFailed("internal error")
    status = status_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="mmop-runtime"'
    elif isinstance(error, NotReady | Draining):
        headers["Retry-After"] = "1"
    if metrics is not None and error.reason is not None:
        metrics.observe_rejected(error.reason)
    return json_response({"error": error.message}, status=status, headers=headers)


def json_response(
    document: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(protocol.dumps(document), status_code=status, headers=headers, media_type=JSON)
