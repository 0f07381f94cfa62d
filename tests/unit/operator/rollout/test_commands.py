"""rollout/commands.py and the machine's handling of rollout commands and pause/resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mmop.operator import models
from mmop.operator.rollout import commands, machine
from mmop.operator.rollout.commands import CommandRequest
from mmop.operator.rollout.machine import Decision
from mmop.operator.rollout.observations import Observations, SmokeResult, VersionObservation

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
UP = VersionObservation(exists=True, replicas=1, ready=1, available=True)
DOWN = VersionObservation(exists=True, replicas=1, ready=0, available=False)
OK = SmokeResult(True, "answered")
BOTH = {"v1": UP, "v2": UP}


def spec(version: str = "v1", **rollout: Any) -> models.MultimodalModelSpec:
    return models.parse_spec(
        {
            "version": version,
            "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
            "resources": {"gpu": 0},
            "rollout": {
                "steps": [10, 50, 100],
                "stepInterval": "60s",
                "maxFailedChecks": 2,
                "progressDeadlineSeconds": 300,
                "analysis": {"minRequests": 10},
                **rollout,
            },
        }
    )


def snap(requests: float, errors: float = 0) -> models.MetricsSnapshot:
    return models.MetricsSnapshot(
        requests=requests, errors=errors, pods=["p1"], buckets={"0.1": requests, "+Inf": requests}
    )


def decide(
    s: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    *,
    at: float = 0,
    versions: dict[str, VersionObservation] | None = None,
    smoke: SmokeResult | None = None,
    metrics: models.MetricsSnapshot | None = None,
    command: CommandRequest | None = None,
) -> Decision:
    obs = Observations(
        now=T0 + timedelta(seconds=at),
        versions=versions or {},
        smoke=smoke,
        canary_metrics=metrics,
        command=command,
    )
    return machine.next_rollout_decision(spec=s, status=status, generation=1, obs=obs)


def reasons(d: Decision) -> list[str]:
    return [e.reason for e in d.events]


def ready_v1() -> models.MultimodalModelStatus:
    d1 = decide(spec(), models.MultimodalModelStatus())
    return decide(spec(), d1.status, versions={"v1": UP}).status


def created_v2() -> models.MultimodalModelStatus:
    return decide(spec("v2"), ready_v1(), versions={"v1": UP}).status


def verified_v2() -> models.MultimodalModelStatus:
    """v1 stable, canary v2 verified and at the first step (10%)."""
    return decide(spec("v2"), created_v2(), at=5, versions=BOTH, smoke=OK, metrics=snap(0)).status


def rolled_back_v2() -> models.MultimodalModelStatus:
    status = verified_v2()
    for at in (70, 140):
        bad = snap(100 * at, errors=50 * at)
        status = decide(spec("v2"), status, at=at, versions=BOTH, metrics=bad).status
    assert status.phase == models.Phase.ROLLING_BACK
    done = decide(spec("v2"), status, at=141, versions=BOTH).status
    assert done.phase == models.Phase.FAILED and done.failed_revision == spec("v2").revision()
    return done


def req(command: str, nonce: str = "n1") -> CommandRequest:
    return CommandRequest(command=command, nonce=nonce)


class TestAnnotation:
    def test_round_trip(self) -> None:
        value = commands.format_request(commands.Command.PROMOTE, "abc123")
        parsed = commands.parse_request({commands.ANNOTATION: value})
        assert parsed == CommandRequest("promote", "abc123")

    def test_without_nonce_is_ignored(self) -> None:
        assert commands.parse_request({commands.ANNOTATION: "promote"}) is None
        assert commands.parse_request({commands.ANNOTATION: "promote/"}) is None
        assert commands.parse_request({}) is None

    def test_pending_until_acknowledged(self) -> None:
        md = {"annotations": {commands.ANNOTATION: "abort/x1"}}
        assert commands.is_pending(md, {})
        assert commands.is_pending(md, {"lastCommand": {"id": "x0"}})
        assert not commands.is_pending(md, {"lastCommand": {"id": "x1"}})


class TestPromote:
    def test_promotes_a_verified_canary_skipping_steps(self) -> None:
        d = decide(spec("v2"), verified_v2(), at=10, versions=BOTH, command=req("promote"))
        s = d.status
        assert (s.stable_version, s.canary_version, s.canary_weight) == ("v2", None, 0)
        assert s.stable_revision == spec("v2").revision()
        assert s.history[-1].result == models.HistoryResult.PROMOTED
        assert "rollout command" in s.history[-1].reason
        assert s.last_command is not None
        assert (s.last_command.id, s.last_command.result) == ("n1", models.CommandResult.ACCEPTED)
        assert "Promoted" in reasons(d)
        assert [v.role for v in s.versions] == [
            models.VersionRole.STABLE,
            models.VersionRole.RETIRING,
        ]

    def test_refused_before_verification(self) -> None:
        created = created_v2()
        d = decide(spec("v2"), created, at=5, versions=BOTH, command=req("promote"))
        s = d.status
        assert (s.stable_version, s.canary_version, s.canary_weight) == ("v1", "v2", 0)
        assert s.last_command is not None
        assert s.last_command.result == models.CommandResult.REFUSED
        assert "not verified" in s.last_command.message
        assert "CommandRefused" in reasons(d)
        assert s.history == created.history

    def test_refused_when_the_canary_has_no_ready_pods(self) -> None:
        d = decide(
            spec("v2"),
            verified_v2(),
            at=10,
            versions={"v1": UP, "v2": DOWN},
            command=req("promote"),
        )
        assert d.status.stable_version == "v1"
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.REFUSED
        assert "no ready pods" in d.status.last_command.message

    def test_refused_without_a_canary(self) -> None:
        d = decide(spec(), ready_v1(), at=10, versions={"v1": UP}, command=req("promote"))
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.REFUSED
        assert d.status.stable_version == "v1"

    def test_applied_exactly_once(self) -> None:
        promoted = decide(spec("v2"), verified_v2(), at=10, versions=BOTH, command=req("promote"))
        # Same request seen again (the annotation stays): nothing new happens.
        again = decide(spec("v2"), promoted.status, at=11, versions=BOTH, command=req("promote"))
        assert again.status.history == promoted.status.history
        assert "Promoted" not in reasons(again) and "CommandRefused" not in reasons(again)

    def test_unknown_command_is_refused(self) -> None:
        d = decide(spec("v2"), verified_v2(), at=10, versions=BOTH, command=req("yolo"))
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.REFUSED
        assert d.status.canary_version == "v2"


class TestAbort:
    def test_rolls_back_now(self) -> None:
        d = decide(spec("v2"), verified_v2(), at=10, versions=BOTH, command=req("abort"))
        assert d.status.phase == models.Phase.ROLLING_BACK
        assert d.status.canary_weight == 0
        assert "Aborted" in reasons(d)
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.ACCEPTED
        done = decide(spec("v2"), d.status, at=11, versions=BOTH, command=req("abort"))
        s = done.status
        assert (s.phase, s.canary_version, s.stable_version) == (models.Phase.FAILED, None, "v1")
        assert s.history[-1].result == models.HistoryResult.ROLLED_BACK
        assert "Aborted" in s.history[-1].reason
        assert s.failed_revision == spec("v2").revision()

    def test_refused_without_a_rollout(self) -> None:
        d = decide(spec(), ready_v1(), at=10, versions={"v1": UP}, command=req("abort"))
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.REFUSED
        assert d.status.phase == models.Phase.READY


class TestRetry:
    def test_reruns_the_rolled_back_revision(self) -> None:
        failed = rolled_back_v2()
        held = decide(spec("v2"), failed, at=200, versions={"v1": UP})
        assert held.status.phase == models.Phase.FAILED  # no retry without the command
        d = decide(spec("v2"), failed, at=200, versions={"v1": UP}, command=req("retry"))
        s = d.status
        assert (s.canary_version, s.canary_weight, s.failed_revision) == ("v2", 0, None)
        assert s.phase == models.Phase.PROGRESSING
        assert s.rollout is not None and s.rollout.verified_at is None
        assert reasons(d)[:2] == ["RolloutRetried", "CanaryCreated"]

    def test_refused_when_nothing_was_rolled_back(self) -> None:
        d = decide(spec("v2"), verified_v2(), at=10, versions=BOTH, command=req("retry"))
        assert d.status.last_command is not None
        assert d.status.last_command.result == models.CommandResult.REFUSED
        assert d.status.canary_weight == 10


class TestPauseResume:
    def test_pause_and_resume_are_events(self) -> None:
        status = verified_v2()
        paused = decide(spec("v2", paused=True), status, at=70, versions=BOTH, metrics=snap(50))
        assert "RolloutPaused" in reasons(paused)
        assert paused.status.canary_weight == 10
        resumed = decide(spec("v2"), paused.status, at=80, versions=BOTH, metrics=snap(50))
        assert "RolloutResumed" in reasons(resumed)

    def test_verified_while_paused_gets_the_first_step_on_resume(self) -> None:
        paused = spec("v2", paused=True)
        created = decide(paused, ready_v1(), versions={"v1": UP}).status
        verified = decide(paused, created, at=5, versions=BOTH, smoke=OK, metrics=snap(0)).status
        assert verified.canary_weight == 0
        resumed = decide(spec("v2"), verified, at=300, versions=BOTH, metrics=snap(0))
        assert resumed.status.canary_weight == 10
