"""The rollout state machine: (spec, status, observations) -> (new status, events, next look).

Pure: no clock, no I/O. The driver observes the cluster (Deployments, a test inference to the
canary, the canary's metrics), calls :func:`next_rollout_decision`, writes the children the
builders derive from the new status, then the status itself. All progress lives in status,
so a restarted operator resumes where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mmop.operator import conditions, models
from mmop.operator.builders.plan import canary_mirror, canary_target
from mmop.operator.naming import version_name
from mmop.operator.rollout import analysis, capacity, commands, quality
from mmop.operator.rollout.events import Event
from mmop.operator.rollout.observations import Observations, VersionObservation

HISTORY_LIMIT = 10
QUALITY_CHECK_FAILED = "QualityCheckFailed"
TICK_SECONDS = 5.0  # how soon to look again while something is in flight


@dataclass(frozen=True)
class Decision:
    status: models.MultimodalModelStatus
    action: str
    """What was decided, for logs and metrics (deploy, create-canary, step, rollback ...)."""
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until something is due; None when only a change can move things."""


def wants_smoke_test(status: models.MultimodalModelStatus) -> bool:
    """A canary exists and has not been verified yet: the driver should test it."""
    return (
        status.canary_version is not None
        and status.phase != models.Phase.ROLLING_BACK
        and (status.rollout is None or status.rollout.verified_at is None)
    )


def wants_golden_check(
    spec: models.MultimodalModelSpec, status: models.MultimodalModelStatus
) -> bool:
    """A quality gate is set and the canary is not verified yet: once its test inference
    passes, the driver should compare its answers to the golden set with the stable's."""
    return spec.rollout.quality is not None and wants_smoke_test(status)


def wants_capacity(spec: models.MultimodalModelSpec, status: models.MultimodalModelStatus) -> bool:
    """A GPU model with a rollout running or about to start: the driver should list Nodes and
    Pods for the free GPUs (:func:`capacity.free_gpus`)."""
    return (
        spec.resources.gpu > 0
        and status.stable_revision is not None
        and status.phase not in (models.Phase.PENDING, models.Phase.DEPLOYING)
        and (
            status.canary_version is not None
            or spec.revision() not in (status.stable_revision, status.failed_revision)
        )
    )


def wants_canary_metrics(status: models.MultimodalModelStatus) -> bool:
    return status.canary_version is not None and status.phase != models.Phase.ROLLING_BACK


class _Step:
    """Mutable working copy of the status for one decision."""

    def __init__(
        self, status: models.MultimodalModelStatus, obs: Observations, *, tick: float
    ) -> None:
        self.tick = tick
        self.s = status.model_copy(deep=True)
        self.obs = obs
        self.now = obs.now
        self.events: list[Event] = []
        self.action = "none"
        self.requeue: list[float] = []

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def due_in(self, seconds: float) -> None:
        self.requeue.append(max(seconds, 0.5))

    def history(self, result: models.HistoryResult, reason: str) -> None:
        assert self.s.canary_version is not None
        entry = models.HistoryEntry(
            version=self.s.canary_version,
            revision=self.s.canary_revision or "",
            result=result,
            reason=reason,
            finished_at=conditions.rfc3339(self.now),
        )
        self.s.history = [*self.s.history, entry][-HISTORY_LIMIT:]

    def clear_canary(self) -> None:
        self.s.canary_version = None
        self.s.canary_revision = None
        self.s.canary_weight = 0
        self.s.rollout = None

    def obs_of(self, version: str | None) -> VersionObservation:
        return self.obs.versions.get(version or "", VersionObservation())


def _seconds_since(text: str | None, now: datetime) -> float:
    moment = conditions.parse_time(text)
    return float("inf") if moment is None else (now - moment).total_seconds()


def next_rollout_decision(
    *,
    spec: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    generation: int | None,
    obs: Observations,
    tick: float = TICK_SECONDS,
) -> Decision:
    """Decide the next status. Idempotent: the same inputs give the same decision. ``tick``:
    how soon to look again while waiting on something in flight."""
    step = _Step(status, obs, tick=tick)
    desired = spec.serving()
    desired_rev = desired.revision()
    s = step.s

    _retire_due_versions(step)
    if _apply_command(step, spec, desired, desired_rev):
        pass
    elif s.stable_revision is None or s.phase in (models.Phase.PENDING, models.Phase.DEPLOYING):
        _first_deploy(step, desired, desired_rev)
    elif s.phase == models.Phase.ROLLING_BACK and s.canary_version is not None:
        _finish_rollback(step)
    elif desired_rev == s.stable_revision:
        _back_to_stable(step)
    elif _revert_to_retiring(step, desired, desired_rev):
        pass
    elif desired_rev == s.failed_revision and s.canary_version is None:
        s.phase = models.Phase.FAILED
    elif s.canary_revision != desired_rev:
        _start_canary(step, spec, desired, desired_rev)
    else:
        _advance_canary(step, spec)

    _summarise(step, spec=spec, generation=generation)
    _pause_events(step, previous=status)
    requeue = min(step.requeue) if step.requeue else None
    return Decision(
        status=step.s, action=step.action, events=tuple(step.events), requeue_after=requeue
    )


def stop_canary(
    *,
    spec: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    generation: int | None,
    obs: Observations,
    reason: str,
    message: str,
) -> Decision:
    """Roll the canary back now, whatever its step (weight 0 first, like any rollback): for
    what the reconciler finds only while writing children (a name taken by another model)."""
    step = _Step(status, obs, tick=TICK_SECONDS)
    if step.s.canary_version is not None and step.s.phase != models.Phase.ROLLING_BACK:
        _start_rollback(step, reason, message)
        _summarise(step, spec=spec, generation=generation)
    requeue = min(step.requeue) if step.requeue else None
    return Decision(
        status=step.s, action=step.action, events=tuple(step.events), requeue_after=requeue
    )


# --- transitions -------------------------------------------------------------------------------
def _first_deploy(step: _Step, desired: models.ServingSpec, desired_rev: str) -> None:
    """No version has served yet: (re)deploy the spec in place, no canary needed."""
    s = step.s
    if s.stable_revision != desired_rev:
        s.stable_version = desired.version
        s.stable_revision = desired_rev
        s.stable_spec = desired
        step.action = "deploy"
        step.event("Deploying", f"deploying version {desired.version} (revision {desired_rev})")
    stable = step.obs_of(s.stable_version)
    if stable.available:
        s.phase = models.Phase.READY
        step.action = "deployed"
        step.event("Deployed", f"version {s.stable_version} is serving")
    else:
        s.phase = models.Phase.DEPLOYING
        step.due_in(step.tick)


def _back_to_stable(step: _Step) -> None:
    """The spec asks for what the stable already runs: drop any canary, no analysis."""
    s = step.s
    if s.canary_version is not None:
        step.history(models.HistoryResult.CANCELLED, "the spec went back to the stable revision")
        step.event(
            "CanaryCancelled",
            f"canary {s.canary_version} dropped: the spec is back at "
            f"stable version {s.stable_version}",
        )
        step.clear_canary()
        step.action = "cancel"
    s.failed_revision = None
    s.phase = models.Phase.READY


def _revert_to_retiring(step: _Step, desired: models.ServingSpec, desired_rev: str) -> bool:
    """The spec asks for the previous stable, still running while it retires: switch back at
    once. It served before, so no analysis is needed."""
    s = step.s
    previous = next(
        (
            v
            for v in s.versions
            if v.role == models.VersionRole.RETIRING and v.revision == desired_rev
        ),
        None,
    )
    if previous is None or not step.obs_of(previous.name).available:
        return False
    if s.canary_version is not None:
        step.history(models.HistoryResult.SUPERSEDED, "the spec went back to the previous stable")
        step.clear_canary()
    old_name, old_rev, old_mirror = s.stable_version, s.stable_revision, s.stable_mirror
    s.stable_version, s.stable_revision, s.stable_spec = previous.name, desired_rev, desired
    s.stable_mirror = previous.mirror  # its pods still run with it: no restart
    s.versions = [v for v in s.versions if v.name != previous.name]
    if old_name is not None and old_rev is not None:
        _retire(step, old_name, old_rev, mirror=old_mirror)
    s.failed_revision = None
    s.phase = models.Phase.READY
    step.action = "revert"
    step.event("Reverted", f"stable is version {previous.name} again (it was still running)")
    return True


def _start_canary(
    step: _Step, spec: models.MultimodalModelSpec, desired: models.ServingSpec, desired_rev: str
) -> None:
    s = step.s
    taken = {s.stable_version or ""} | {v.name for v in s.versions}
    if s.canary_version is not None:
        step.history(models.HistoryResult.SUPERSEDED, f"revision {desired_rev} replaced it")
        step.event("CanarySuperseded", f"canary {s.canary_version} replaced by a new revision")
        taken.add(s.canary_version)
    name = version_name(desired.version, desired_rev, taken=taken)
    s.canary_version, s.canary_revision, s.canary_weight = name, desired_rev, 0
    s.rollout = models.RolloutStatus(started_at=conditions.rfc3339(step.now))
    s.failed_revision = None
    s.phase = models.Phase.PROGRESSING
    step.action = "create-canary"
    step.event("CanaryCreated", f"canary {name} (revision {desired_rev}) created at weight 0")
    step.due_in(step.tick)
    _plan_gpus(step, spec)


def _plan_gpus(step: _Step, spec: models.MultimodalModelSpec) -> bool:
    """Where the canary's pods find their GPUs (spec.rollout.capacity); True when it holds for
    them. Not a failure: the progress deadline starts once it has a GPU."""
    s, rollout = step.s, step.s.rollout
    if spec.resources.gpu == 0 or rollout is None or s.canary_version is None:
        return False
    stable = step.obs_of(s.stable_version)
    stable_spec = s.stable_spec
    stable_gpus = 0
    if (
        stable_spec is not None
        and stable_spec.resources.gpu_resource == spec.resources.gpu_resource
    ):
        stable_gpus = stable_spec.resources.gpu
    before = rollout.capacity
    cap = capacity.plan_capacity(
        before,
        capacity.CapacityInput(
            mode=spec.rollout.capacity,
            gpus_per_replica=spec.resources.gpu,
            wanted=canary_target(spec, s.canary_weight),
            peak=canary_target(spec, 100),
            canary_pods=step.obs_of(s.canary_version).pods,
            stable_replicas=spec.replicas if spec.autoscaling is None else stable.replicas,
            stable_gpus_per_replica=stable_gpus,
            stable_pods=stable.pods,
            stable_ready=stable.ready,
            observed=step.obs.gpus,
        ),
    )
    rollout.capacity = cap
    if cap.held:
        rollout.started_at = conditions.rfc3339(step.now)
        if before is None or not before.held or before.message != cap.message:
            step.event(capacity.INSUFFICIENT_GPU, cap.message, warning=True)
        step.action = "wait-gpus"
        step.due_in(step.tick)
        return True
    if before is not None and before.held:
        step.event("GPUsAvailable", f"canary {s.canary_version}: {cap.message}")
    if cap.lent_replicas > (before.lent_replicas if before else 0):
        step.event(
            "ReplicaLent",
            f"stable {s.stable_version} lends a replica to canary {s.canary_version} "
            f"({cap.lent_replicas} lent)",
        )
    if cap.lent_replicas > cap.canary_replicas or cap.canary_replicas > (
        before.canary_replicas if before else 0
    ):
        step.due_in(step.tick)  # a move in flight: look again soon
    return False


def _gpu_move(step: _Step) -> str | None:
    """A replica on its way from the stable to the canary, or a canary pod planned and not
    ready yet: the weight waits for it (it follows the ready replicas)."""
    s, rollout = step.s, step.s.rollout
    cap = rollout.capacity if rollout is not None else None
    if cap is None:
        return None
    canary = step.obs_of(s.canary_version)
    if cap.lent_replicas > cap.canary_replicas:
        return f"waiting for a replica lent by stable {s.stable_version}: {cap.message}"
    if canary.ready < canary.replicas:
        return f"waiting for canary pods: {canary.ready}/{canary.replicas} ready"
    return None


def _advance_canary(step: _Step, spec: models.MultimodalModelSpec) -> None:
    s = step.s
    rollout = s.rollout = s.rollout or models.RolloutStatus(started_at=conditions.rfc3339(step.now))
    s.phase = models.Phase.PROGRESSING
    weight = s.canary_weight
    if _plan_gpus(step, spec):
        return
    if rollout.verified_at is None:
        _verify_canary(step, spec)
    elif _resume_first_step(step, spec):
        pass
    elif spec.rollout.strategy == models.Strategy.MANUAL:
        _manual_weight(step, spec)
    else:
        _analyse_step(step, spec)
    if s.canary_weight > weight and s.canary_version is not None and s.rollout is not None:
        _plan_gpus(step, spec)  # the new weight's pods: start moving them in this pass


def _verify_canary(step: _Step, spec: models.MultimodalModelSpec) -> None:
    """Weight 0 until the canary is available and answers a test inference."""
    s, rollout = step.s, step.s.rollout
    assert rollout is not None
    canary = step.obs_of(s.canary_version)
    elapsed = _seconds_since(rollout.started_at, step.now)
    deadline = spec.rollout.progress_deadline_seconds
    if elapsed > deadline:
        why = f"canary not verified within progressDeadlineSeconds ({deadline} s)"
        if canary.problem:
            why += f": {canary.problem}"
        elif not canary.available:
            why += f": {canary.ready}/{canary.replicas} pods ready"
        elif step.obs.smoke is not None and not step.obs.smoke.ok:
            why += f": test inference failed: {step.obs.smoke.message}"
        elif step.obs.golden is not None and step.obs.golden.problem:
            why += f": quality check incomplete: {step.obs.golden.problem}"
        _start_rollback(step, "ProgressDeadlineExceeded", why)
        return
    step.due_in(min(step.tick, deadline - elapsed + 0.5))
    if not canary.available or step.obs.smoke is None:
        step.action = "wait-canary"
        return
    interval = spec.rollout.step_interval_seconds()
    if not step.obs.smoke.ok:
        # Count a failing test inference as a failed check, at most once per interval.
        if _seconds_since(rollout.last_step_at, step.now) >= interval:
            rollout.failed_checks += 1
            rollout.last_step_at = conditions.rfc3339(step.now)
            rollout.last_check = models.LastCheck(
                time=rollout.last_step_at,
                result=models.CheckResult.FAILED,
                message=f"test inference failed: {step.obs.smoke.message}",
            )
            step.event("CanaryTestFailed", rollout.last_check.message, warning=True)
            step.action = "fail-check"
            if rollout.failed_checks >= spec.rollout.max_failed_checks:
                _start_rollback(step, "TestInferenceFailed", rollout.last_check.message)
        return
    if _retire_now(step):
        return
    if spec.rollout.quality is not None and not _golden_gate(step, spec.rollout.quality):
        return
    rollout.verified_at = rollout.last_step_at = conditions.rfc3339(step.now)
    rollout.baseline = step.obs.canary_metrics
    rollout.stable_baseline = step.obs.stable_metrics
    step.event(
        "CanaryVerified",
        f"canary {s.canary_version} is available and answered a "
        f"test inference: {step.obs.smoke.message}",
    )
    step.action = "verify"
    if spec.rollout.strategy == models.Strategy.MANUAL:
        _manual_weight(step, spec)
    elif not spec.rollout.paused:
        _set_weight(step, spec.rollout.steps[0], step_index=0)
        step.due_in(interval)


def _golden_gate(step: _Step, gate: models.Quality) -> bool:
    """Before any weight: the canary's answers to the golden set must match the stable's.
    Missing or incomplete results hold (never pass); a score past the threshold rolls the
    canary back at once."""
    rollout = step.s.rollout
    assert rollout is not None
    result = step.obs.golden
    if result is None:
        step.action = "wait-quality"
        return False
    check = quality.golden_check(gate, result)
    message = quality.golden_message(check, result)
    previous = rollout.last_check
    if check.result == models.CheckResult.PASSED:
        rollout.last_check = models.LastCheck(
            time=conditions.rfc3339(step.now), result=check.result, message=message, quality=check
        )
        step.event("QualityCheckPassed", message)
        return True
    if previous is None or previous.message != message:  # one write and Event per change
        rollout.last_check = models.LastCheck(
            time=conditions.rfc3339(step.now), result=check.result, message=message, quality=check
        )
        if check.result == models.CheckResult.INCONCLUSIVE:
            step.event("QualityCheckPending", message, warning=True)
    if check.result == models.CheckResult.FAILED:
        _start_rollback(step, QUALITY_CHECK_FAILED, message)
    else:
        step.action = "wait-quality"
    return False


def _retire_now(step: _Step) -> bool:
    """Scale down versions still retiring before a canary gets weight; True when it did.

    Service NAME can select the pods of one version or of all versions (label selectors have
    no "in"), so a weighted canary beside a retiring version would let clients outside the
    mesh reach the retiring one. It has had no traffic since the promotion (weight 0, not
    selected), so it goes now; the canary is verified on the next pass.
    """
    retiring = [v for v in step.s.versions if v.role == models.VersionRole.RETIRING]
    if not retiring:
        return False
    for v in retiring:
        step.event(
            "VersionRetired",
            f"version {v.name} scaled down early: canary {step.s.canary_version} is about to "
            f"get weight",
        )
    step.s.versions = [v for v in step.s.versions if v.role != models.VersionRole.RETIRING]
    step.action = "retire"
    step.due_in(step.tick)
    return True


def _set_weight(step: _Step, weight: int, *, step_index: int) -> None:
    s, rollout = step.s, step.s.rollout
    assert rollout is not None
    if s.canary_weight != weight:
        step.event(
            "CanaryWeight", f"canary {s.canary_version} weight {s.canary_weight}% -> {weight}%"
        )
    s.canary_weight = weight
    rollout.step = step_index
    if weight == 100:
        s.phase = models.Phase.PROMOTING


def _manual_weight(step: _Step, spec: models.MultimodalModelSpec) -> None:
    """Manual strategy: the user's weight, but never for a canary without ready pods."""
    s = step.s
    wanted = s.canary_weight if spec.rollout.paused else spec.rollout.canary_weight
    canary = step.obs_of(s.canary_version)
    if wanted > 0 and canary.ready == 0:
        if s.canary_weight != 0:
            step.event(
                "CanaryUnready",
                f"canary {s.canary_version} has no ready pods: weight held at 0",
                warning=True,
            )
        s.canary_weight = 0
        step.action = "refuse-weight"
        step.due_in(step.tick)
        return
    if wanted == 100 and not spec.rollout.paused:
        _promote(step, spec, "canaryWeight set to 100")
        return
    if wanted != s.canary_weight:
        step.action = "manual-weight"
        _set_weight(step, wanted, step_index=s.rollout.step if s.rollout else 0)
    s.phase = models.Phase.PROGRESSING
    step.due_in(step.tick)


def _analyse_step(step: _Step, spec: models.MultimodalModelSpec) -> None:
    s, rollout = step.s, step.s.rollout
    assert rollout is not None
    if s.canary_weight == 100:
        s.phase = models.Phase.PROMOTING
    if spec.rollout.paused:
        rollout.inconclusive_since = None  # paused time does not count against the deadline
        step.action = "paused"
        return
    interval = spec.rollout.step_interval_seconds()
    waited = _seconds_since(rollout.last_step_at, step.now)
    if waited < interval:
        step.due_in(interval - waited)
        return
    step.due_in(step.tick)
    moving = _gpu_move(step)
    if moving is not None:
        step.action = "wait-gpus"
        _inconclusive_deadline(step, spec, moving)
        return
    now = conditions.rfc3339(step.now)
    canary = step.obs_of(s.canary_version)
    stable_window = analysis.stable_window(
        baseline=rollout.stable_baseline,
        current=step.obs.stable_metrics,
        min_requests=spec.rollout.analysis.min_requests,
    )
    # The stable's rate in this interval, else the last one measured (at weight 100 the
    # stable gets no traffic), else none: the canary is then held to the absolute threshold.
    reference = stable_window.error_rate if stable_window is not None else None
    if reference is None and rollout.last_check is not None:
        reference = rollout.last_check.stable_error_rate
    if canary.ready == 0:
        verdict = analysis.Verdict(
            models.CheckResult.FAILED,
            0,
            None,
            None,
            f"canary has no ready pods ({canary.problem or 'not ready'})",
            reset=True,
        )
    elif step.obs.canary_metrics is None:
        verdict = analysis.Verdict(
            models.CheckResult.INCONCLUSIVE,
            0,
            None,
            None,
            "canary metrics unavailable",
            reset=False,
        )
    else:
        verdict = analysis.analyse(
            baseline=rollout.baseline,
            current=step.obs.canary_metrics,
            thresholds=spec.rollout.analysis,
            stable_error_rate=reference,
        )
    live = None
    if quality.live_enabled(spec.rollout.quality) and step.obs.canary_metrics is not None:
        assert spec.rollout.quality is not None
        live, live_message = quality.live_check(
            quality=spec.rollout.quality,
            metric=quality.metric_for(spec.model.task),
            baseline=rollout.baseline,
            current=step.obs.canary_metrics,
        )
        verdict = replace(
            verdict,
            result=quality.worst(verdict.result, live.result),
            message=f"{verdict.message}; {live_message}",
        )
    rollout.last_check = models.LastCheck(
        time=now,
        error_rate=verdict.error_rate,
        latency_p99_ms=verdict.latency_p99_ms,
        requests=verdict.requests,
        result=verdict.result,
        message=verdict.message,
        quality=live,
        stable_error_rate=verdict.stable_error_rate,
        stable_requests=None if stable_window is None else stable_window.requests,
    )
    if verdict.result == models.CheckResult.INCONCLUSIVE:
        # Hold: keep the baselines so traffic adds up until there is enough to judge.
        if verdict.reset:
            rollout.baseline = step.obs.canary_metrics
            rollout.stable_baseline = step.obs.stable_metrics
        step.action = "inconclusive"
        _inconclusive_deadline(step, spec, verdict.message)
        return
    rollout.inconclusive_since = None
    rollout.baseline = step.obs.canary_metrics
    rollout.stable_baseline = step.obs.stable_metrics
    rollout.last_step_at = now
    if verdict.result == models.CheckResult.FAILED:
        rollout.failed_checks += 1
        step.action = "fail-check"
        step.event(
            "CanaryCheckFailed",
            f"check {rollout.failed_checks}/"
            f"{spec.rollout.max_failed_checks} failed: {verdict.message}",
            warning=True,
        )
        if rollout.failed_checks >= spec.rollout.max_failed_checks:
            quality_failed = live is not None and live.result == models.CheckResult.FAILED
            reason = QUALITY_CHECK_FAILED if quality_failed else "AnalysisFailed"
            _start_rollback(step, reason, verdict.message)
        else:
            step.due_in(interval)
        return
    if s.canary_weight >= 100:
        _promote(step, spec, verdict.message)
        return
    next_index = min(rollout.step + 1, len(spec.rollout.steps) - 1)
    step.action = "step"
    _set_weight(step, spec.rollout.steps[next_index], step_index=next_index)
    step.due_in(interval)


def _inconclusive_deadline(step: _Step, spec: models.MultimodalModelSpec, why: str) -> None:
    """Roll back a canary whose checks stay inconclusive for progressDeadlineSeconds, counted
    from the first inconclusive check after the last conclusive one (or the verification)."""
    rollout = step.s.rollout
    assert rollout is not None
    rollout.inconclusive_since = rollout.inconclusive_since or conditions.rfc3339(step.now)
    deadline = spec.rollout.progress_deadline_seconds
    elapsed = _seconds_since(rollout.inconclusive_since, step.now)
    if elapsed >= deadline:
        _start_rollback(
            step,
            "AnalysisInconclusive",
            f"no conclusive check for progressDeadlineSeconds ({deadline} s): {why}",
        )
    else:
        step.due_in(min(step.tick, deadline - elapsed))


def _promote(step: _Step, spec: models.MultimodalModelSpec, why: str) -> None:
    """Repoint stable to the canary: same pods, no restarts; the old stable retires later."""
    s = step.s
    assert s.canary_version is not None and s.canary_revision is not None
    old_name, old_rev, old_mirror = s.stable_version, s.stable_revision, s.stable_mirror
    cap = s.rollout.capacity if s.rollout is not None else None
    swapped = cap is not None and cap.lent_replicas > 0
    step.history(models.HistoryResult.PROMOTED, why)
    step.event("Promoted", f"version {s.canary_version} promoted to stable ({why})")
    s.stable_version, s.stable_revision = s.canary_version, s.canary_revision
    s.stable_spec = spec.serving()
    # The canary's pods keep the mirror env they were created with: no restart on promotion.
    s.stable_mirror = canary_mirror(spec, stable_version=old_name)
    step.clear_canary()
    if swapped and old_name is not None:
        # Its GPUs are what the new stable's remaining replicas wait for: no delay.
        step.event(
            "VersionRetired", f"version {old_name} scaled down: its GPUs go to the new stable"
        )
    elif old_name is not None and old_rev is not None:
        _retire(
            step, old_name, old_rev, delay=spec.rollout.scale_down_delay_seconds, mirror=old_mirror
        )
    s.phase = models.Phase.READY
    step.action = "promote"


def _retire(
    step: _Step,
    name: str,
    revision: str,
    *,
    delay: float = 0,
    mirror: models.Mirror | None = None,
) -> None:
    after = conditions.rfc3339(step.now + timedelta(seconds=delay))
    step.s.versions = [v for v in step.s.versions if v.name != name] + [
        models.VersionStatus(
            name=name,
            revision=revision,
            role=models.VersionRole.RETIRING,
            retire_after=after,
            mirror=mirror,
        )
    ]
    step.due_in(delay)


def _retire_due_versions(step: _Step) -> None:
    keep = []
    for v in step.s.versions:
        if v.role != models.VersionRole.RETIRING:
            continue
        remaining = -_seconds_since(v.retire_after, step.now)
        if remaining > 0:
            keep.append(v)
            step.due_in(remaining)
        else:
            step.event("VersionRetired", f"version {v.name} scaled down after promotion")
    step.s.versions = keep  # stable and canary entries are rebuilt by _summarise


def _start_rollback(step: _Step, reason: str, message: str) -> None:
    """Weight 0 now (the route moves first); the canary's pods go on the next pass."""
    s = step.s
    s.canary_weight = 0
    s.phase = models.Phase.ROLLING_BACK
    if s.rollout is not None:
        s.rollout.last_check = s.rollout.last_check or models.LastCheck(
            time=conditions.rfc3339(step.now), result=models.CheckResult.FAILED, message=message
        )
    step.event(reason, f"rolling back canary {s.canary_version}: {message}", warning=True)
    step.action = "rollback"
    s.message = f"{reason}: {message}"
    step.due_in(1.0)


def _finish_rollback(step: _Step) -> None:
    s = step.s
    reason = s.message or "rolled back"
    s.failed_revision = s.canary_revision
    step.history(models.HistoryResult.ROLLED_BACK, reason)
    step.event(
        "RolledBack",
        f"canary {s.canary_version} removed; stable {s.stable_version} serves all traffic",
        warning=True,
    )
    step.clear_canary()
    s.phase = models.Phase.FAILED
    step.action = "rolled-back"


# --- rollout commands (mmop rollout promote|abort|retry) -------------------------------------
def _apply_command(
    step: _Step, spec: models.MultimodalModelSpec, desired: models.ServingSpec, desired_rev: str
) -> bool:
    """Handle a request not acknowledged yet: act on it or refuse it, and acknowledge it in
    status.lastCommand either way. True when it made this pass's transition."""
    request, s = step.obs.command, step.s
    if request is None or (s.last_command is not None and s.last_command.id == request.nonce):
        return False
    try:
        command = commands.Command(request.command)
    except ValueError:
        _refuse(step, request, f"unknown command {request.command!r}: use promote, abort or retry")
        return False
    refusal = {
        commands.Command.PROMOTE: _promote_refusal,
        commands.Command.ABORT: _abort_refusal,
        commands.Command.RETRY: _retry_refusal,
    }[command](step, desired_rev)
    if refusal is not None:
        _refuse(step, request, refusal)
        return False
    if command == commands.Command.PROMOTE:
        version = s.canary_version
        _promote(step, spec, "promoted by a rollout command; remaining steps skipped")
        message = f"version {version} promoted to stable"
    elif command == commands.Command.ABORT:
        version = s.canary_version
        _start_rollback(step, "Aborted", "aborted by a rollout command")
        message = f"canary {version} is being rolled back"
    else:
        step.event("RolloutRetried", f"retrying revision {desired_rev} after its rollback")
        _start_canary(step, spec, desired, desired_rev)
        message = f"revision {desired_rev} rolls out again as canary {s.canary_version}"
    _acknowledge(step, request, models.CommandResult.ACCEPTED, message)
    return True


def _promote_refusal(step: _Step, desired_rev: str) -> str | None:
    """Why a promote must not happen now: it skips steps, never the verification before weight."""
    s = step.s
    if s.canary_version is None or s.rollout is None:
        return "no canary to promote" + (
            f" (revision {s.failed_revision} was rolled back: retry it first)"
            if s.failed_revision
            else ""
        )
    if s.phase == models.Phase.ROLLING_BACK:
        return f"canary {s.canary_version} is being rolled back"
    if s.canary_revision != desired_rev:
        return f"canary {s.canary_version} is not the spec's revision {desired_rev}"
    if s.rollout.verified_at is None:
        return (
            f"canary {s.canary_version} is not verified yet: it must be available and pass its "
            "test inference (and, with spec.rollout.quality, the golden-set comparison) before "
            "it gets any weight"
        )
    if step.obs_of(s.canary_version).ready == 0:
        return f"canary {s.canary_version} has no ready pods"
    return None


def _abort_refusal(step: _Step, desired_rev: str) -> str | None:
    s = step.s
    if s.canary_version is None:
        return "no rollout in progress"
    if s.phase == models.Phase.ROLLING_BACK:
        return f"canary {s.canary_version} is already being rolled back"
    return None


def _retry_refusal(step: _Step, desired_rev: str) -> str | None:
    s = step.s
    if s.canary_version is not None:
        return f"a rollout is in progress (canary {s.canary_version})"
    if s.failed_revision is None:
        return "nothing to retry: no revision was rolled back"
    if s.failed_revision != desired_rev:
        return (
            f"the spec (revision {desired_rev}) is no longer the rolled-back revision "
            f"{s.failed_revision}"
        )
    return None


def _refuse(step: _Step, request: commands.CommandRequest, why: str) -> None:
    step.event("CommandRefused", f"{request.command} refused: {why}", warning=True)
    _acknowledge(step, request, models.CommandResult.REFUSED, why)


def _acknowledge(
    step: _Step, request: commands.CommandRequest, result: models.CommandResult, message: str
) -> None:
    step.s.last_command = models.CommandStatus(
        command=request.command,
        id=request.nonce,
        result=result,
        message=message,
        time=conditions.rfc3339(step.now),
    )
    if step.action == "none":
        step.action = f"command-{result.value.lower()}"


def _resume_first_step(step: _Step, spec: models.MultimodalModelSpec) -> bool:
    """A canary verified while paused has weight 0; on resume it gets the first step at once
    (analysing a canary without traffic would hold forever)."""
    s, rollout = step.s, step.s.rollout
    if (
        spec.rollout.paused
        or spec.rollout.strategy != models.Strategy.CANARY
        or rollout is None
        or s.canary_weight != 0
        or rollout.step != 0
    ):
        return False
    _set_weight(step, spec.rollout.steps[0], step_index=0)
    rollout.last_step_at = conditions.rfc3339(step.now)
    step.action = "resume"
    step.due_in(spec.rollout.step_interval_seconds())
    return True


def _pause_events(step: _Step, *, previous: models.MultimodalModelStatus) -> None:
    """Events for pause and resume (spec.rollout.paused), seen as the Progressing condition
    entering or leaving CanaryPaused."""
    before = conditions.get(previous.conditions, conditions.PROGRESSING)
    after = conditions.get(step.s.conditions, conditions.PROGRESSING)
    was = before is not None and before.reason == "CanaryPaused"
    now = after is not None and after.reason == "CanaryPaused"
    if now and not was:
        step.event("RolloutPaused", f"canary {step.s.canary_version} paused")
    elif was and not now and step.s.canary_version is not None:
        step.event("RolloutResumed", f"canary {step.s.canary_version} resumed")


# --- summary ---------------------------------------------------------------------------------
def _summarise(step: _Step, *, spec: models.MultimodalModelSpec, generation: int | None) -> None:
    """Versions, replica counts, phase refinements, conditions and the one-line message."""
    s = step.s
    s.versions = _version_entries(step)
    s.replicas = sum(v.replicas for v in s.versions)
    s.ready_replicas = sum(v.ready_replicas for v in s.versions)
    s.observed_generation = generation
    _refine_idle_phase(step)
    ready = _ready(step)
    progressing = _progressing(step, spec)
    for type_, (state, reason, message) in (
        (conditions.READY, ready),
        (conditions.PROGRESSING, progressing),
    ):
        s.conditions = conditions.set_condition(
            s.conditions,
            type_=type_,
            status=state,
            reason=reason,
            message=message,
            now=step.now,
            generation=generation,
        )
    s.message = (
        progressing[2]
        if progressing[0] == "True"
        or s.phase == models.Phase.FAILED
        or progressing[1] == capacity.INSUFFICIENT_GPU
        else ready[2]
    )


def _version_entries(step: _Step) -> list[models.VersionStatus]:
    """status.versions: stable and canary with their weights and pods, then the retiring."""
    s = step.s
    entries = []
    if s.stable_version is not None:
        stable = step.obs_of(s.stable_version)
        entries.append(
            models.VersionStatus(
                name=s.stable_version,
                revision=s.stable_revision or "",
                role=models.VersionRole.STABLE,
                weight=100 - s.canary_weight,
                replicas=stable.replicas,
                ready_replicas=stable.ready,
            )
        )
    if s.canary_version is not None:
        canary = step.obs_of(s.canary_version)
        entries.append(
            models.VersionStatus(
                name=s.canary_version,
                revision=s.canary_revision or "",
                role=models.VersionRole.CANARY,
                weight=s.canary_weight,
                replicas=canary.replicas,
                ready_replicas=canary.ready,
            )
        )
    for v in s.versions:
        if v.role == models.VersionRole.RETIRING:
            o = step.obs_of(v.name)
            entries.append(
                v.model_copy(
                    update={"replicas": o.replicas, "ready_replicas": o.ready, "weight": 0}
                )
            )
    return entries


def _refine_idle_phase(step: _Step) -> None:
    """With no rollout running: Ready while the stable serves, Degraded while it cannot."""
    s, stable = step.s, step.obs_of(step.s.stable_version)
    if s.canary_version is not None or s.phase not in (models.Phase.READY, models.Phase.DEGRADED):
        return
    if stable.ready == 0 or (stable.problem and stable.ready < stable.replicas):
        s.phase = models.Phase.DEGRADED
    else:
        s.phase = models.Phase.READY


def _ready(step: _Step) -> tuple[conditions.Status, str, str]:
    """The Ready condition: is anything serving?"""
    s, stable = step.s, step.obs_of(step.s.stable_version)
    if stable.ready > 0:
        return (
            "True",
            "StableServing",
            f"version {s.stable_version}: {stable.ready}/{stable.replicas} pods ready",
        )
    if s.phase == models.Phase.DEPLOYING:
        return (
            "False",
            "Deploying",
            f"version {s.stable_version}: "
            f"{stable.problem or f'{stable.ready}/{stable.replicas} pods ready'}",
        )
    return (
        "False",
        "StableUnavailable",
        f"version {s.stable_version} has no ready pods"
        + (f": {stable.problem}" if stable.problem else ""),
    )


def _progressing(
    step: _Step, spec: models.MultimodalModelSpec
) -> tuple[conditions.Status, str, str]:
    s = step.s
    if s.phase == models.Phase.DEPLOYING:
        return ("True", "Deploying", f"deploying version {s.stable_version}")
    if s.phase == models.Phase.ROLLING_BACK:
        return ("True", "RollingBack", s.message)
    if s.canary_version is not None and s.rollout is not None:
        check = s.rollout.last_check
        detail = f"; last check {check.result}: {check.message}" if check else ""
        cap = s.rollout.capacity
        if cap is not None and cap.held:
            return ("False", capacity.INSUFFICIENT_GPU, f"canary {s.canary_version}: {cap.message}")
        if s.rollout.verified_at is None:
            canary = step.obs_of(s.canary_version)
            waiting = canary.problem or f"{canary.ready}/{canary.replicas} pods ready"
            return (
                "True",
                "CanaryVerifying",
                f"canary {s.canary_version} at weight 0, waiting for it to become available "
                f"and pass a test inference ({waiting}){detail}",
            )
        if spec.rollout.paused:
            return (
                "True",
                "CanaryPaused",
                f"canary {s.canary_version} paused at weight {s.canary_weight}%",
            )
        reason = "Promoting" if s.phase == models.Phase.PROMOTING else "CanaryStep"
        if spec.rollout.strategy == models.Strategy.MANUAL:
            reason = "ManualWeight"
        return (
            "True",
            reason,
            f"canary {s.canary_version} at weight {s.canary_weight}% "
            f"(step {s.rollout.step + 1}/{len(spec.rollout.steps)}, failed checks "
            f"{s.rollout.failed_checks}/{spec.rollout.max_failed_checks}){detail}",
        )
    if s.phase == models.Phase.FAILED:
        last = s.history[-1] if s.history else None
        why = last.reason if last else "rolled back"
        return (
            "False",
            QUALITY_CHECK_FAILED if why.startswith(QUALITY_CHECK_FAILED) else "RolledBack",
            f"rollout of revision {s.failed_revision} rolled back: {why}; stable "
            f"{s.stable_version} serves all traffic",
        )
    last = s.history[-1] if s.history else None
    if last is not None and last.result == models.HistoryResult.PROMOTED:
        return ("False", "RolloutComplete", f"version {last.version} promoted")
    return ("False", "Stable", f"version {s.stable_version} serves all traffic")
