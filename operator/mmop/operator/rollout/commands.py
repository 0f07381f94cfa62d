"""Rollout commands (promote, abort, retry): requests the operator consumes exactly once.

`mmop rollout promote NAME` writes the annotation ``mmop.io/rollout-command: promote/NONCE`` on
the MultimodalModel. The driver reads it into the observations, the state machine decides, and
``status.lastCommand.id`` acknowledges the nonce, so a request is applied once, survives an
operator restart until it is handled, and is never replayed. Pause and resume are not requests:
they set ``spec.rollout.paused``, which holds for as long as it says so.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

ANNOTATION: Final = "mmop.io/rollout-command"
_NONCE = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$")


class Command(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class CommandRequest:
    """One request as found in the annotation; ``command`` may be anything a user wrote."""

    command: str
    nonce: str


def new_nonce() -> str:
    return uuid.uuid4().hex[:16]


def format_request(command: Command, nonce: str) -> str:
    return f"{command.value}/{nonce}"


def parse_request(annotations: Mapping[str, str] | None) -> CommandRequest | None:
    """The request in the annotations, or None. A value without a usable nonce is ignored
    (there is nothing to acknowledge it by); an unknown command is kept so it can be refused."""
    value = (annotations or {}).get(ANNOTATION)
    if not value:
        return None
    command, _, nonce = value.strip().partition("/")
    if not _NONCE.match(nonce):
        return None
    return CommandRequest(command=command.strip().lower(), nonce=nonce)


def is_pending(metadata: Mapping[str, Any], status: Mapping[str, Any] | None) -> bool:
    """A request the status has not acknowledged yet (raw object dicts: used by watch handlers)."""
    request = parse_request(metadata.get("annotations"))
    if request is None:
        return False
    last = (status or {}).get("lastCommand") or {}
    return bool(last.get("id") != request.nonce)
