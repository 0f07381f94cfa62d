"""Turn Deployments and Pods into the state machine's per-version observations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmop.operator import naming
from mmop.operator.rollout.observations import VersionObservation

_WAITING_PROBLEMS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
}
RESTARTS_PROBLEM = 3


@dataclass(frozen=True)
class PodInfo:
    name: str
    version: str
    revision: str
    ip: str | None
    ready: bool


def pod_infos(pods: list[dict[str, Any]]) -> list[PodInfo]:
    out = []
    for pod in pods:
        md = pod.get("metadata") or {}
        if md.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        out.append(
            PodInfo(
                name=md.get("name", ""),
                version=(md.get("labels") or {}).get(naming.LABEL_VERSION, ""),
                revision=(md.get("annotations") or {}).get(naming.ANNOTATION_REVISION, ""),
                ip=status.get("podIP"),
                ready=ready and status.get("phase") == "Running",
            )
        )
    return out


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod does not come up, in one line, or None."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return f"pod {name} {cond.get('reason', 'unschedulable')}: {cond.get('message', '')}"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_PROBLEMS:
            return f"pod {name} {waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
        if cs.get("restartCount", 0) >= RESTARTS_PROBLEM:
            detail = terminated.get("message") or terminated.get("reason") or ""
            return f"pod {name} restarted {cs['restartCount']} times {detail}".strip()
    return None


def observe_version(
    deployment: dict[str, Any] | None, pods: list[dict[str, Any]], *, revision: str
) -> VersionObservation:
    """One version: available means its pods run the expected revision and one is ready."""
    if deployment is None:
        return VersionObservation()
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    md = deployment.get("metadata") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    current_revision = (md.get("annotations") or {}).get(naming.ANNOTATION_REVISION) == revision
    caught_up = int(status.get("observedGeneration") or 0) >= int(md.get("generation") or 0)
    ready_pods = [p for p in pod_infos(pods) if p.ready and p.revision == revision]
    problem = next((pr for pr in (pod_problem(p) for p in pods) if pr), None)
    available = current_revision and caught_up and ready >= 1 and bool(ready_pods or not pods)
    return VersionObservation(
        exists=True,
        replicas=desired,
        ready=ready,
        available=available,
        problem=problem,
        pods=len(pods),
    )
