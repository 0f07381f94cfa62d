"""What the reconcile pass observed, as the state machine reads it: each version's Deployment
and pods, the test inference, the canary's and the stable's counters, the golden-set
comparison, a rollout command and the free GPUs. Plain data; gathered by ``reconcile``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mmop.operator import models
from mmop.operator.rollout import capacity, commands, quality


@dataclass(frozen=True)
class VersionObservation:
    """What the cluster says about one version's Deployment."""

    exists: bool = False
    replicas: int = 0
    ready: int = 0
    available: bool = False
    """Its pods of the expected revision are up and at least one is ready."""
    problem: str | None = None
    """Why pods do not come up (Unschedulable, CrashLoopBackOff ...), if known."""
    pods: int = 0
    """Its pods that exist, terminating ones included (they hold their GPUs until gone)."""


@dataclass(frozen=True)
class SmokeResult:
    """The outcome of the operator's test inference against a canary pod."""

    ok: bool
    message: str


@dataclass(frozen=True)
class Observations:
    now: datetime
    versions: Mapping[str, VersionObservation] = field(default_factory=dict)
    smoke: SmokeResult | None = None
    canary_metrics: models.MetricsSnapshot | None = None
    golden: quality.GoldenResult | None = None
    """The golden-set comparison, gathered when :func:`wants_golden_check` says so."""
    stable_metrics: models.MetricsSnapshot | None = None
    """The stable version's counters, read at the same moment as the canary's."""
    command: commands.CommandRequest | None = None
    """A rollout command from the mmop.io/rollout-command annotation, handled or not."""
    gpus: capacity.GpuCapacity | None = None
    """Free GPUs of the model's resource on the nodes its pods may use, gathered when
    :func:`wants_capacity` says so (None: not gathered or not readable)."""
