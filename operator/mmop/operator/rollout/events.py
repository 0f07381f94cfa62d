"""Events of a MultimodalModel: what the state machine and the reports decide to say, and the
core/v1 Event object that says it (what `kubectl describe` shows). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from mmop.operator import conditions

COMPONENT: Final = "mmop-operator"
MAX_MESSAGE_CHARS: Final = 1024


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def event_object(body: dict[str, Any], event: Event, *, now: datetime) -> dict[str, Any]:
    """The core/v1 Event about the object ``body`` (a MultimodalModel as read)."""
    md = body["metadata"]
    stamp = conditions.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": md["name"],
            "namespace": md["namespace"],
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
        },
        "reason": event.reason,
        "message": event.message[:MAX_MESSAGE_CHARS],
        "type": event.type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
