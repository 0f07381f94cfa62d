"""Rebuild the stable record from the model's Deployments when its status is lost. Pure.

A status wipe, an operator downgrade whose status model rejects newer fields, or a hand edit
can clear ``stableRevision`` while the model's versions keep running. Treating that as a first
deploy would make the current spec stable at weight 100 with no check and delete the old
stable, so before the state machine runs the reconciler asks :func:`recover_status`: either the
record comes back from the annotations the builders put on each Deployment's metadata
(role, revision, serving spec), or the model holds (no child is written) with a condition that
says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from mmop.operator import conditions, models, naming

HOLD_REASON = "StableRecordMissing"


@dataclass(frozen=True)
class DeploymentRecord:
    """What one of the model's Deployments says about its version."""

    name: str
    version: str
    revision: str | None
    role: str | None
    serving: models.ServingSpec | None
    """None when the annotation is absent or unreadable."""
    commit: str | None = None
    """The hub commit its revision was pinned to (status.hubCommits)."""
    mirror: models.Mirror | None = None
    """Where its pods mirror requests (status.stableMirror, for the stable)."""


@dataclass(frozen=True)
class Recovery:
    status: models.MultimodalModelStatus | None
    """The recovered status; None: hold (write no child) and report ``message``."""
    message: str
    warning: bool


def records_from(
    deployments: Mapping[str, Mapping[str, Any]], *, owner_uid: str
) -> list[DeploymentRecord]:
    """The records of the Deployments this model owns (by ownerReference uid)."""
    out = []
    for name, obj in sorted(deployments.items()):
        md = obj.get("metadata") or {}
        owners = {o.get("uid") for o in md.get("ownerReferences") or []}
        if owner_uid not in owners or md.get("deletionTimestamp"):
            continue
        labels = md.get("labels") or {}
        annotations = md.get("annotations") or {}
        out.append(
            DeploymentRecord(
                name=name,
                version=str(labels.get(naming.LABEL_VERSION, "")),
                revision=annotations.get(naming.ANNOTATION_REVISION),
                role=annotations.get(naming.ANNOTATION_ROLE),
                serving=_serving(annotations.get(naming.ANNOTATION_SERVING_SPEC)),
                commit=annotations.get(naming.ANNOTATION_HUB_COMMIT) or None,
                mirror=_mirror(annotations.get(naming.ANNOTATION_MIRROR)),
            )
        )
    return out


def _serving(text: str | None) -> models.ServingSpec | None:
    if not text:
        return None
    try:
        return models.ServingSpec.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        return None


def _mirror(text: str | None) -> models.Mirror | None:
    if not text:
        return None
    try:
        return models.Mirror.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        return None


def needs_recovery(status: models.MultimodalModelStatus, records: Iterable[object]) -> bool:
    """No stable record, yet the model has Deployments: not a first deploy."""
    return status.stable_revision is None and any(True for _ in records)


def recover_status(
    *,
    spec: models.MultimodalModelSpec,
    status: models.MultimodalModelStatus,
    records: list[DeploymentRecord],
    now: datetime,
) -> Recovery:
    """The stable record rebuilt from ``records``, or a hold with the reason.

    Stable: the one Deployment annotated ``role: stable`` with a readable revision and serving
    spec; a model whose only Deployment predates these annotations is adopted when that
    Deployment runs exactly the spec's revision. A canary of the spec's revision comes back at
    weight 0 and is verified and analysed again from the start; a retiring version comes back
    retiring. Anything ambiguous (no stable, two stables, an unreadable record, a Deployment of
    unknown role) holds: nothing promoted, no weight given, nothing deleted.
    """
    desired_rev = spec.serving().revision()
    listing = ", ".join(f"{r.name} (revision {r.revision or '?'})" for r in records)
    stables = [r for r in records if r.role == "stable"]
    unknown = [r for r in records if r.role not in ("stable", "canary", naming.ROLE_RETIRING)]
    stable: DeploymentRecord | None = None
    serving: models.ServingSpec | None = None
    if len(records) == 1 and not stables and records[0].revision == desired_rev:
        # Written by an operator before these annotations: it runs exactly the spec.
        stable, serving = records[0], spec.serving()
    elif len(stables) == 1 and not unknown:
        stable, serving = stables[0], stables[0].serving
    if (
        stable is None
        or serving is None
        or not stable.version
        or stable.revision is None
        or serving.revision() != stable.revision
    ):
        why = (
            "several Deployments claim to be stable"
            if len(stables) > 1
            else "no Deployment carries a readable stable record"
        )
        return Recovery(
            None,
            f"status has no stable record but the model's Deployments exist ({listing}) and "
            f"{why}: holding (nothing is promoted, weighted or deleted). Set spec back to the "
            f"revision that runs, or delete the Deployments to deploy from scratch",
            warning=True,
        )

    recovered = status.model_copy(deep=True)
    recovered.stable_version = stable.version
    recovered.stable_revision = stable.revision
    recovered.stable_spec = serving
    recovered.canary_version = recovered.canary_revision = None
    recovered.canary_weight = 0
    recovered.rollout = None
    recovered.phase = models.Phase.READY  # never Deploying: that path replaces in place
    # What else shapes the pod templates: without it the running pods would be replaced.
    recovered.stable_mirror = stable.mirror
    recovered.hub_commits = {
        **{r.revision: r.commit for r in records if r.revision and r.commit},
        **recovered.hub_commits,
    }
    notes = [f"stable {stable.version} (revision {stable.revision})"]
    canary = next(
        (
            r
            for r in records
            if r.role == "canary" and r.revision == desired_rev and r.version != stable.version
        ),
        None,
    )
    if canary is not None and canary.revision is not None:
        recovered.canary_version = canary.version
        recovered.canary_revision = canary.revision
        recovered.rollout = models.RolloutStatus(started_at=conditions.rfc3339(now))
        recovered.phase = models.Phase.PROGRESSING
        notes.append(f"canary {canary.version} at weight 0, to be verified and analysed again")
    after = conditions.rfc3339(now + timedelta(seconds=spec.rollout.scale_down_delay_seconds))
    recovered.versions = [
        models.VersionStatus(
            name=r.version,
            revision=r.revision or "",
            role=models.VersionRole.RETIRING,
            retire_after=after,
        )
        for r in records
        if r.role == naming.ROLE_RETIRING and r.version and r.version != stable.version
    ]
    notes.extend(f"retiring {v.name}" for v in recovered.versions)
    return Recovery(
        recovered,
        "status had no stable record; recovered from the Deployments: " + ", ".join(notes),
        warning=True,
    )
