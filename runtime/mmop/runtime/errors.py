"""Domain errors of the runtime, transport-neutral; ``server.errors`` maps them to HTTP codes.

Each error's message is what the client reads, so it says what is wrong and, where it helps,
what is allowed. ``reason`` is the label of ``mmop_rejected_requests_total`` (None: the request
was not rejected but failed, so it is not counted there).
"""

from __future__ import annotations

from typing import ClassVar, Final

# What a client reads back of its own strings (names, keys, shapes) and of exception text: enough
# to recognise them, never the megabyte a hostile client sent (nor a log line that size).
MAX_ECHO_CHARS: Final = 64
MAX_DETAIL_CHARS: Final = 200
MAX_MESSAGE_CHARS: Final = 1024


def echo(value: object, *, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with the size left out.

    Strings are shortened before ``repr`` so a huge one costs no huge copy.
    """
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}… ({len(text)} characters)"
    return text


def detail(text: object, *, limit: int = MAX_DETAIL_CHARS) -> str:
    """Exception (or other) text on one line, cut to ``limit`` characters."""
    raw = str(text)[: limit * 4]
    line = " ".join(raw.split()) or type(text).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def one_line(exc: BaseException, *, limit: int = 500, typed: bool = False) -> str:
    """An exception's text on one line, cut to ``limit`` characters: for logs and load errors
    (``typed``: after the exception's class name)."""
    text = detail(exc, limit=limit)
    return f"{type(exc).__name__}: {text}" if typed else text


class RuntimeFailure(Exception):
    """Base class of every error the data plane raises on purpose."""

    reason: ClassVar[str | None] = None

    @property
    def message(self) -> str:
        """What the client reads; never over ``MAX_MESSAGE_CHARS`` whatever went into it."""
        text = str(self.args[0]) if self.args else type(self).__name__
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 1] + "…"
        return text


class InvalidInput(RuntimeFailure):
    """The request is malformed or breaks a limit (400)."""

    reason = "invalid_input"


class Unauthorized(RuntimeFailure):
    """A bearer token is required and missing or wrong (401)."""

    reason = "unauthorized"


class ModelNotFound(RuntimeFailure):
    """No model (or no endpoint for this model) of that name (404)."""

    reason = "model_not_found"


class PayloadTooLarge(RuntimeFailure):
    """The request body is over ``max_request_bytes`` (413)."""

    reason = "payload_too_large"


class QueueFull(RuntimeFailure):
    """The bounded queue is full (429 with Retry-After)."""

    reason = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(RuntimeFailure):
    """The model is loading, warming up, or its batcher is down (503)."""

    reason = "not_ready"


class Draining(RuntimeFailure):
    """The server received SIGTERM and finishes what it has (503)."""

    reason = "draining"


class BodyTimeout(RuntimeFailure):
    """The request body did not arrive within ``body_timeout_seconds`` (408): a slow client must
    not hold a connection for ever (it never holds a queue slot: bodies are read first)."""

    reason = "body_timeout"


class QueueTimeout(RuntimeFailure):
    """The request waited longer than ``queue_timeout_seconds`` (504)."""

    reason = "queue_timeout"


class InferenceFailed(RuntimeFailure):
    """The model raised while running a valid request (500)."""


class FaultInjected(RuntimeFailure):
    """An error answered on purpose (``MMOP_FAULT_ERROR_RATE``, 500)."""


class LoadError(RuntimeFailure):
    """The model cannot be loaded; the process exits with status 1."""
