"""The Deployment controller's decisions, as pure functions: the pod-template hash and pod
names, which pods to create or delete (rolling update with surge, or recreate), and the
Deployment status (counts and the Available / Progressing conditions of a real controller, so
``kubectl rollout status`` works).

There are no ReplicaSets: pods belong to their Deployment directly; the would-be ReplicaSet
name (``DEPLOY-HASH``) still appears in pod names and condition messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

# k8s.io/apimachinery/pkg/util/rand: no vowels, no look-alike digits.
SAFE_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH: Final = "pod-template-hash"

AVAILABLE = "Available"
PROGRESSING = "Progressing"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_CREATED = "NewReplicaSetCreated"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"


def _safe_encode(text: str) -> str:
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in text.encode())


def template_hash(template: Mapping[str, Any]) -> str:
    """A short stable hash of a pod template (the ``pod-template-hash`` label's value)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    digest = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big")
    return _safe_encode(str(digest))


def pod_name(deployment: str, hash_: str, rng: random.Random) -> str:
    suffix = "".join(rng.choice(SAFE_ALPHABET) for _ in range(5))
    return f"{deployment}-{hash_}-{suffix}"


def desired_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


@dataclass(frozen=True)
class Strategy:
    recreate: bool = False
    max_surge: int = 1
    max_unavailable: int = 0


def _scaled(value: Any, total: int, *, round_up: bool) -> int:
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def strategy(deployment: Mapping[str, Any]) -> Strategy:
    """The rollout strategy with percentages resolved against the desired replicas."""
    spec = deployment.get("spec") or {}
    raw = spec.get("strategy") or {}
    if raw.get("type") == "Recreate":
        return Strategy(recreate=True, max_surge=0, max_unavailable=0)
    rolling = raw.get("rollingUpdate") or {}
    desired = desired_replicas(deployment)
    surge = _scaled(rolling.get("maxSurge"), desired, round_up=True)
    unavailable = _scaled(rolling.get("maxUnavailable"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # what the real controller does to make progress possible
    return Strategy(max_surge=surge, max_unavailable=min(unavailable, desired))


@dataclass(frozen=True)
class PodView:
    """What the controller needs to know about one pod of a Deployment."""

    name: str
    current: bool  # runs the current template
    created: str = ""
    scheduled: bool = True
    running: bool = False
    ready: bool = False
    available: bool = False
    restarts: int = 0


def deletion_order(pods: Sequence[PodView]) -> list[PodView]:
    """Pods in the order a ReplicaSet deletes them: unscheduled, then not running, not ready,
    most restarted, newest first."""
    by_age = sorted(pods, key=lambda p: p.created, reverse=True)
    return sorted(by_age, key=lambda p: (p.scheduled, p.running, p.ready, -p.restarts))


@dataclass(frozen=True)
class PodPlan:
    create: int = 0
    delete: tuple[str, ...] = ()


def plan_pods(
    *, desired: int, strategy: Strategy, new: Sequence[PodView], old: Sequence[PodView]
) -> PodPlan:
    """Pods to create (of the current template) and to delete, toward ``desired`` new pods."""
    if strategy.recreate and old:
        return PodPlan(delete=tuple(p.name for p in old))
    if not old:
        if len(new) < desired:
            return PodPlan(create=desired - len(new))
        extra = deletion_order(new)[: len(new) - desired]
        return PodPlan(delete=tuple(p.name for p in extra))
    # Rolling update: surge new pods, then retire old ones while enough pods stay available.
    total = len(new) + len(old)
    create = max(0, min(desired - len(new), desired + strategy.max_surge - total))
    deletes: list[str] = []
    if len(new) > desired:
        deletes += [p.name for p in deletion_order(new)[: len(new) - desired]]
    min_available = desired - strategy.max_unavailable
    new_unavailable = sum(1 for p in new if not p.available)
    budget = total - min_available - new_unavailable
    if budget > 0:
        unhealthy = [p for p in deletion_order(old) if not p.available][:budget]
        deletes += [p.name for p in unhealthy]
        remaining = [p for p in old if p.name not in set(deletes)]
        available = sum(1 for p in new if p.available) + sum(1 for p in remaining if p.available)
        scale_down = max(0, available - min_available)
        deletes += [p.name for p in deletion_order(remaining)[:scale_down]]
    return PodPlan(create=create, delete=tuple(deletes))


def _find(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def _condition(
    kind: str,
    ok: bool,
    *,
    reason: str,
    message: str,
    now: str,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A Deployment condition; lastUpdateTime moves when anything changes, lastTransitionTime
    only when the status does."""
    status = "True" if ok else "False"
    if previous and (previous.get("status"), previous.get("reason"), previous.get("message")) == (
        status,
        reason,
        message,
    ):
        return dict(previous)
    same_status = previous is not None and previous.get("status") == status
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": previous.get("lastTransitionTime", now)
        if previous and same_status
        else now,
        "reason": reason,
        "message": message,
    }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def deployment_status(
    deployment: Mapping[str, Any],
    pods: Sequence[PodView],
    *,
    now: datetime,
    replica_set: str,
) -> dict[str, Any]:
    """The status a Deployment controller would write, given the deployment's live pods."""
    old_status = deployment.get("status") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    desired = desired_replicas(deployment)
    replicas = len(pods)
    updated = sum(1 for p in pods if p.current)
    ready = sum(1 for p in pods if p.ready)
    available = sum(1 for p in pods if p.available)
    conditions = list(old_status.get("conditions") or [])
    min_available = desired - strategy(deployment).max_unavailable
    enough = available >= min_available
    available_condition = _condition(
        AVAILABLE,
        enough,
        reason=MIN_AVAILABLE if enough else MIN_UNAVAILABLE,
        message="Deployment has minimum availability."
        if enough
        else "Deployment does not have minimum availability.",
        now=stamp,
        previous=_find(conditions, AVAILABLE),
    )
    progressing = _progressing(
        deployment,
        previous=_find(conditions, PROGRESSING),
        counts=(replicas, updated, ready, available),
        desired=desired,
        replica_set=replica_set,
        now=now,
    )
    new_conditions = [available_condition]
    if progressing is not None:
        new_conditions.append(progressing)
    status: dict[str, Any] = {
        "observedGeneration": int((deployment.get("metadata") or {}).get("generation") or 1),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": max(0, max(desired, replicas) - available),
        "conditions": new_conditions,
    }
    if "collisionCount" in old_status:
        status["collisionCount"] = old_status["collisionCount"]
    return status


def _progressing(
    deployment: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None,
    counts: tuple[int, int, int, int],
    desired: int,
    replica_set: str,
    now: datetime,
) -> dict[str, Any] | None:
    spec = deployment.get("spec") or {}
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is None:
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    replicas, updated, ready, available = counts
    old = deployment.get("status") or {}
    quoted = f'"{replica_set}"'
    if updated == desired and replicas == desired and available == desired:
        message = f"ReplicaSet {quoted} has successfully progressed."
        return _condition(
            PROGRESSING,
            True,
            reason=NEW_RS_AVAILABLE,
            message=message,
            now=stamp,
            previous=previous,
        )
    if previous is None or quoted not in str(previous.get("message", "")):
        return _condition(
            PROGRESSING,
            True,
            reason=NEW_RS_CREATED,
            message=f"Created new replica set {quoted}",
            now=stamp,
            previous=previous,
        )
    old_old = int(old.get("replicas") or 0) - int(old.get("updatedReplicas") or 0)
    rolling_out = replicas > updated or old_old > 0
    if previous.get("reason") == NEW_RS_AVAILABLE and not rolling_out:
        return dict(previous)  # a pure scale never times out (real controller behaviour)
    advanced = (
        updated > int(old.get("updatedReplicas") or 0)
        or replicas - updated < old_old
        or ready > int(old.get("readyReplicas") or 0)
        or available > int(old.get("availableReplicas") or 0)
    )
    if advanced:
        progressed = _condition(
            PROGRESSING,
            True,
            reason=RS_UPDATED,
            message=f"ReplicaSet {quoted} is progressing.",
            now=stamp,
            previous=previous,
        )
        progressed["lastUpdateTime"] = stamp  # progress restarts the deadline clock
        return progressed
    if previous.get("reason") == TIMED_OUT:
        return dict(previous)
    since = _parse_time(str(previous.get("lastUpdateTime") or stamp))
    if now - since > timedelta(seconds=int(deadline)):
        return _condition(
            PROGRESSING,
            False,
            reason=TIMED_OUT,
            message=f"ReplicaSet {quoted} has timed out progressing.",
            now=stamp,
            previous=previous,
        )
    return dict(previous)


def pod_view(
    pod: Mapping[str, Any], *, current_hash: str, now: datetime, min_ready_seconds: int = 0
) -> PodView:
    """The controller's view of one pod object."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    ready_condition = _find(conditions, "Ready")
    ready = bool(ready_condition and ready_condition.get("status") == "True")
    available = ready
    if ready and min_ready_seconds > 0 and ready_condition is not None:
        since = _parse_time(str(ready_condition.get("lastTransitionTime") or ""))
        available = now - since >= timedelta(seconds=min_ready_seconds)
    scheduled = _find(conditions, "PodScheduled")
    return PodView(
        name=str(meta.get("name", "")),
        current=(meta.get("labels") or {}).get(POD_TEMPLATE_HASH) == current_hash,
        created=str(meta.get("creationTimestamp") or ""),
        scheduled=bool((pod.get("spec") or {}).get("nodeName"))
        or bool(scheduled and scheduled.get("status") == "True"),
        running=status.get("phase") == "Running",
        ready=ready,
        available=available,
        restarts=sum(
            int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []
        ),
    )


def build_pod(deployment: Mapping[str, Any], *, hash_: str, name: str) -> dict[str, Any]:
    """A pod of ``deployment``'s current template (unscheduled: the scheduler binds it)."""
    meta = deployment.get("metadata") or {}
    template = json.loads(json.dumps((deployment.get("spec") or {}).get("template") or {}))
    template_meta = template.get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), POD_TEMPLATE_HASH: hash_}
    pod_meta: dict[str, Any] = {
        "name": name,
        "namespace": meta.get("namespace") or "default",
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": template.get("spec") or {},
    }


def controller_uid(pod: Mapping[str, Any], kind: str = "Deployment") -> str | None:
    """The uid of the pod's controlling owner of ``kind``, if any."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None
