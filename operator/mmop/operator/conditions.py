"""metav1.Condition helpers: set a condition, keeping lastTransitionTime when status holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from mmop.operator import models

READY = "Ready"
PROGRESSING = "Progressing"

Status = Literal["True", "False", "Unknown"]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def get(conditions: list[models.Condition], type_: str) -> models.Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: list[models.Condition],
    *,
    type_: str,
    status: Status,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[models.Condition]:
    """A new list with ``type_`` set; lastTransitionTime moves only when status changes."""
    current = get(conditions, type_)
    since = rfc3339(now)
    if current is not None and current.status == status:
        since = current.last_transition_time
    updated = models.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    others = [c for c in conditions if c.type != type_]
    return sorted([*others, updated], key=lambda c: (c.type != READY, c.type))
