"""Which versions should exist, with which weights and pod counts: derived from spec + status.

The rollout state machine decides (and records in status) which version is stable, which is
the canary and at what weight; this module turns that record into one ``VersionPlan`` per
version for the object builders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mmop.operator import models

Role = Literal["stable", "canary"]


@dataclass(frozen=True)
class VersionPlan:
    """One version to run."""

    name: str
    revision: str
    serving: models.ServingSpec
    role: Role
    weight: int
    replicas: int | None
    """Deployment replicas; None when an HPA owns them."""
    min_replicas: int
    max_replicas: int
    mirror: models.Mirror | None = None
    """Where its pods mirror a share of their requests for the live quality comparison."""
    commit: str | None = None
    """The hub commit its hf:// revision was pinned to when first deployed (status.hubCommits);
    None: the revision as written in the spec."""


def canary_mirror(
    spec: models.MultimodalModelSpec, *, stable_version: str | None
) -> models.Mirror | None:
    """The mirror settings of a canary: the stable's Service, when a quality gate with live
    comparison is set. The state machine keeps them for the stable after a promotion."""
    gate = spec.rollout.quality
    if gate is None or gate.mirror_percent == 0 or stable_version is None:
        return None
    return models.Mirror(version=stable_version, percent=gate.mirror_percent)


def _scaled(count: int, weight: int) -> int:
    return max(1, math.ceil(count * weight / 100))


def canary_target(spec: models.MultimodalModelSpec, weight: int) -> int:
    """The canary pods a weight calls for (the HPA's floor when autoscaling is on)."""
    if spec.autoscaling is not None:
        return _scaled(spec.autoscaling.min_replicas, weight)
    return _scaled(max(spec.replicas, 1), weight)


def plan_versions(mm: models.MultimodalModel) -> list[VersionPlan]:
    """Stable first, then the canary if one is in flight. Retiring versions are not planned:
    the reconciler leaves their objects alone until they are due for deletion."""
    spec, status = mm.spec, mm.status
    if status.stable_spec is None or status.stable_version is None:
        stable_name, stable_rev, stable_serving = spec.version, spec.revision(), spec.serving()
    else:
        stable_name = status.stable_version
        stable_rev = status.stable_revision or status.stable_spec.revision()
        stable_serving = status.stable_spec
    canary = status.canary_version is not None and status.canary_version != stable_name
    weight = status.canary_weight if canary else 0
    service_router = spec.traffic.router == models.Router.SERVICE
    # GPU capacity plan: the canary runs only the pods whose GPUs are free or lent, and the
    # stable gives up the replicas it lent (spec.rollout.capacity).
    capacity = status.rollout.capacity if canary and status.rollout is not None else None
    lent = capacity.lent_replicas if capacity is not None else 0

    plans: list[VersionPlan] = []
    # Stable: full capacity throughout, so a rollback never finds it short of pods.
    if spec.autoscaling is not None:
        stable_replicas = None
        stable_min, stable_max = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas
        if lent and capacity is not None:
            # The operator owns these bounds: lowering the maximum makes the HPA give the
            # lent pods up, instead of fighting it over spec.replicas.
            stable_max = max(1, min(stable_max, capacity.stable_replicas - lent))
            stable_min = min(stable_min, stable_max)
    else:
        stable_replicas = spec.replicas
        if service_router and canary and 0 < weight < 100:
            # No mesh: the split is the replica ratio, so the stable gives up what the canary takes.
            stable_replicas = max(1, spec.replicas - _scaled(spec.replicas, weight))
        if lent:
            stable_replicas = max(1, min(stable_replicas, spec.replicas - lent))
        stable_min = stable_max = stable_replicas
    plans.append(
        VersionPlan(
            name=stable_name,
            revision=stable_rev,
            serving=stable_serving,
            role="stable",
            weight=100 - weight,
            replicas=stable_replicas,
            min_replicas=stable_min,
            max_replicas=stable_max,
            mirror=status.stable_mirror,
            commit=status.hub_commits.get(stable_rev),
        )
    )
    allowed = capacity.canary_replicas if capacity is not None else None
    # No GPU for the canary yet: no Deployment at all, so no pod waits Pending (and an HPA
    # never meets a Deployment scaled to zero, which it would not scale up).
    if canary and allowed != 0:
        assert status.canary_version is not None
        # The canary's capacity follows its weight; at weight 0 one pod answers the checks.
        if spec.autoscaling is not None:
            canary_replicas = None
            canary_min = _scaled(spec.autoscaling.min_replicas, weight)
            canary_max = _scaled(spec.autoscaling.max_replicas, weight)
            if allowed is not None:
                canary_min = min(canary_min, allowed)
                canary_max = max(canary_min, min(canary_max, allowed))
        else:
            canary_replicas = _scaled(max(spec.replicas, 1), weight)
            if allowed is not None:
                canary_replicas = min(canary_replicas, allowed)
            canary_min = canary_max = canary_replicas
        canary_rev = status.canary_revision or spec.revision()
        plans.append(
            VersionPlan(
                name=status.canary_version,
                revision=canary_rev,
                serving=spec.serving(),
                role="canary",
                weight=weight,
                replicas=canary_replicas,
                min_replicas=canary_min,
                max_replicas=canary_max,
                mirror=canary_mirror(spec, stable_version=stable_name),
                commit=status.hub_commits.get(canary_rev),
            )
        )
    return plans
