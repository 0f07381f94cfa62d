"""What a reconcile pass reports beside the rollout decision, as pure functions of the status:
the RoutesReady, ChildrenSynced and RevisionPinned conditions, and the two states in which no
decision is made at all (an invalid spec, a lost stable record). Each sets its condition on
the status it is given and returns the Events to post: a Warning when a condition turns (or
stays, with another message) False. ``reconcile.model`` writes both."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from mmop.operator import conditions, models
from mmop.operator.rollout import recovery
from mmop.operator.rollout.events import Event

ROUTES_READY: Final = "RoutesReady"
CHILDREN_SYNCED: Final = "ChildrenSynced"
REVISION_PINNED: Final = "RevisionPinned"
INVALID_SPEC: Final = "InvalidSpec"
HUB_REVISION_UNRESOLVED: Final = "HubRevisionUnresolved"
MAX_CONDITION_MESSAGE: Final = 4000

Condition = tuple[conditions.Status, str, str]  # status, reason, message


def _report(
    status: models.MultimodalModelStatus,
    type_: str,
    condition: Condition,
    *,
    now: datetime,
    generation: int | None,
) -> list[Event]:
    """Set ``type_``; a Warning Event when it is False and was not False for the same reason
    and message before."""
    previous = conditions.get(status.conditions, type_)
    state, reason, message = condition
    message = message[:MAX_CONDITION_MESSAGE]
    changed = previous is None or (previous.status, previous.reason, previous.message) != (
        state,
        reason,
        message,
    )
    status.conditions = conditions.set_condition(
        status.conditions,
        type_=type_,
        status=state,
        reason=reason,
        message=message,
        now=now,
        generation=generation,
    )
    return [Event("Warning", reason, message)] if changed and state == "False" else []


def routes_ready(
    status: models.MultimodalModelStatus,
    *,
    unserved: list[str],
    router: models.Router,
    now: datetime,
    generation: int | None,
) -> list[Event]:
    """RoutesReady: False/RouterUnavailable when the cluster does not serve the route kinds."""
    if unserved:
        kinds = ", ".join(sorted(set(unserved)))
        message = (
            f"the cluster does not serve {kinds}: install its CRDs or set "
            f"spec.traffic.router to Service"
        )
        condition: Condition = ("False", "RouterUnavailable", message)
    else:
        note = (
            " (no mesh: the split follows the replica ratio, approximately)"
            if router == models.Router.SERVICE
            else ""
        )
        condition = ("True", "Routed", f"{router.value} routes in place{note}")
    return _report(status, ROUTES_READY, condition, now=now, generation=generation)


def children_synced(
    status: models.MultimodalModelStatus,
    *,
    conflicts: list[str],
    refused: list[str],
    now: datetime,
    generation: int | None,
) -> list[Event]:
    """ChildrenSynced: False with NameConflict or WriteRefused when a child could not be
    written as built."""
    condition: Condition
    if conflicts:
        condition = (
            "False",
            "NameConflict",
            "; ".join(conflicts) + ". Rename the model or spec.version so NAME-VERSION is free",
        )
    elif refused:
        condition = ("False", "WriteRefused", "the API server refused: " + "; ".join(refused))
    else:
        condition = ("True", "Synced", "every child is written as built")
    return _report(status, CHILDREN_SYNCED, condition, now=now, generation=generation)


def revision_unresolved(
    status: models.MultimodalModelStatus, *, message: str, now: datetime, generation: int | None
) -> list[Event]:
    """RevisionPinned=False: the hub cannot say which weights to deploy, so nothing changes."""
    status.message = f"{message}; nothing changes until it is resolved"
    condition: Condition = ("False", HUB_REVISION_UNRESOLVED, message)
    return _report(status, REVISION_PINNED, condition, now=now, generation=generation)


def revision_pinned(
    status: models.MultimodalModelStatus, *, message: str, now: datetime, generation: int | None
) -> list[Event]:
    """RevisionPinned=True, with a Normal Event for the newly pinned revision."""
    _report(status, REVISION_PINNED, ("True", "Pinned", message), now=now, generation=generation)
    return [Event("Normal", "RevisionPinned", message)]


def stable_record_missing(
    status: models.MultimodalModelStatus, *, message: str, now: datetime, generation: int | None
) -> list[Event]:
    """No stable record and no safe way to rebuild it: Degraded, Progressing=False, holding."""
    status.phase = models.Phase.DEGRADED
    status.message = message
    status.observed_generation = generation
    condition: Condition = ("False", recovery.HOLD_REASON, message)
    return _report(status, conditions.PROGRESSING, condition, now=now, generation=generation)


def invalid_spec(
    status: models.MultimodalModelStatus, *, message: str, now: datetime, generation: int | None
) -> list[Event] | None:
    """Ready=False/InvalidSpec naming the field; None when exactly that is reported already
    (nothing to write: an invalid spec is reported once, not retried)."""
    ready = conditions.get(status.conditions, conditions.READY)
    if ready is not None and ready.reason == INVALID_SPEC and ready.message == message:
        return None
    status.observed_generation = generation
    status.message = f"invalid spec: {message}"
    _report(
        status, conditions.READY, ("False", INVALID_SPEC, message), now=now, generation=generation
    )
    return [Event("Warning", INVALID_SPEC, message)]
