"""The reports beside the rollout decision (pure): conditions set, Warning Events only when a
condition turns or stays False with something new to say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mmop.operator import conditions, models
from mmop.operator.rollout import recovery, reports
from mmop.operator.rollout.events import Event, event_object

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=1)


def _condition(status: models.MultimodalModelStatus, type_: str) -> models.Condition:
    found = conditions.get(status.conditions, type_)
    assert found is not None
    return found


def test_routes_ready_warns_once_then_recovers_silently() -> None:
    status = models.MultimodalModelStatus()
    unserved = ["VirtualService", "DestinationRule", "VirtualService"]
    first = reports.routes_ready(
        status, unserved=unserved, router=models.Router.ISTIO, now=NOW, generation=3
    )
    assert [(e.type, e.reason) for e in first] == [("Warning", "RouterUnavailable")]
    assert "DestinationRule, VirtualService" in first[0].message
    cond = _condition(status, reports.ROUTES_READY)
    assert (cond.status, cond.reason, cond.observed_generation) == ("False", "RouterUnavailable", 3)
    again = reports.routes_ready(
        status, unserved=unserved, router=models.Router.ISTIO, now=LATER, generation=3
    )
    assert again == []
    assert _condition(status, reports.ROUTES_READY).last_transition_time == conditions.rfc3339(NOW)
    fixed = reports.routes_ready(
        status, unserved=[], router=models.Router.SERVICE, now=LATER, generation=4
    )
    assert fixed == []
    cond = _condition(status, reports.ROUTES_READY)
    assert (cond.status, cond.reason) == ("True", "Routed")
    assert "replica ratio" in cond.message


def test_children_synced_names_the_conflict_before_a_refusal() -> None:
    status = models.MultimodalModelStatus()
    events = reports.children_synced(
        status,
        conflicts=["Service a-v1 belongs to another model"],
        refused=["Deployment a-v1: 422"],
        now=NOW,
        generation=1,
    )
    assert [e.reason for e in events] == ["NameConflict"]
    assert "Rename the model" in events[0].message
    events = reports.children_synced(
        status, conflicts=[], refused=["Deployment a-v1: 422"], now=NOW, generation=1
    )
    assert [e.reason for e in events] == ["WriteRefused"]
    assert reports.children_synced(status, conflicts=[], refused=[], now=NOW, generation=1) == []
    assert _condition(status, reports.CHILDREN_SYNCED).status == "True"


def test_a_long_refusal_is_capped_and_not_repeated() -> None:
    status = models.MultimodalModelStatus()
    refused = ["x" * 5000]
    first = reports.children_synced(status, conflicts=[], refused=refused, now=NOW, generation=1)
    assert len(first) == 1
    assert len(_condition(status, reports.CHILDREN_SYNCED).message) == reports.MAX_CONDITION_MESSAGE
    assert (
        reports.children_synced(status, conflicts=[], refused=refused, now=NOW, generation=1) == []
    )


def test_invalid_spec_is_reported_once() -> None:
    status = models.MultimodalModelStatus()
    events = reports.invalid_spec(status, message="spec.rollout.steps: bad", now=NOW, generation=2)
    assert events == [Event("Warning", "InvalidSpec", "spec.rollout.steps: bad")]
    ready = _condition(status, conditions.READY)
    assert (ready.status, ready.reason) == ("False", "InvalidSpec")
    assert status.message == "invalid spec: spec.rollout.steps: bad"
    assert status.observed_generation == 2
    assert (
        reports.invalid_spec(status, message="spec.rollout.steps: bad", now=LATER, generation=2)
        is None
    )
    assert reports.invalid_spec(status, message="spec.version: bad", now=LATER, generation=3)


def test_a_lost_stable_record_holds_degraded() -> None:
    status = models.MultimodalModelStatus(phase=models.Phase.PROGRESSING)
    events = reports.stable_record_missing(
        status, message="holding: no record", now=NOW, generation=5
    )
    assert [e.reason for e in events] == [recovery.HOLD_REASON]
    assert status.phase == models.Phase.DEGRADED
    progressing = _condition(status, conditions.PROGRESSING)
    assert (progressing.status, progressing.reason) == ("False", recovery.HOLD_REASON)
    assert (
        reports.stable_record_missing(status, message="holding: no record", now=LATER, generation=5)
        == []
    )


def test_revision_pinning_conditions() -> None:
    status = models.MultimodalModelStatus()
    warned = reports.revision_unresolved(status, message="waiting: 404", now=NOW, generation=1)
    assert [e.reason for e in warned] == [reports.HUB_REVISION_UNRESOLVED]
    assert status.message == "waiting: 404; nothing changes until it is resolved"
    assert reports.revision_unresolved(status, message="waiting: 404", now=NOW, generation=1) == []
    pinned = reports.revision_pinned(status, message="pinned to abc", now=LATER, generation=1)
    assert pinned == [Event("Normal", "RevisionPinned", "pinned to abc")]
    assert _condition(status, reports.REVISION_PINNED).status == "True"


def test_event_object_is_a_core_v1_event_about_the_model() -> None:
    body = {
        "apiVersion": "mmop.io/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "clip", "namespace": "ml", "uid": "u-1", "resourceVersion": "7"},
    }
    obj = event_object(body, Event("Warning", "Why", "m" * 2000), now=NOW)
    assert obj["metadata"] == {"generateName": "clip.", "namespace": "ml"}
    assert obj["involvedObject"]["uid"] == "u-1"
    assert obj["involvedObject"]["kind"] == "MultimodalModel"
    assert (obj["type"], obj["reason"]) == ("Warning", "Why")
    assert len(obj["message"]) == 1024
    assert obj["firstTimestamp"] == obj["lastTimestamp"] == "2026-01-02T03:04:05Z"
