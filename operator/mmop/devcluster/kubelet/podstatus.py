"""Pod status as a real kubelet reports it, computed from what the local kubelet knows about a
pod's one process: phase, conditions, container statuses (state, lastState, restarts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mmop.devcluster.kubelet.ipam import NODE_IP

StateKind = Literal["waiting", "running", "terminated"]
CONTAINER_ID_SCHEME = "mmop"


@dataclass
class ContainerView:
    """What the kubelet knows about one container (its process), at one moment."""

    name: str
    image: str = ""
    state: StateKind = "waiting"
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    last_terminated: dict[str, Any] | None = field(default=None)


def terminated_state(
    *, exit_code: int, message: str, started_at: str | None, finished_at: str, pid: int | None
) -> dict[str, Any]:
    """A ``terminated`` container state (also used as ``lastState``)."""
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if message:
        state["message"] = message
    if pid is not None:
        state["containerID"] = f"{CONTAINER_ID_SCHEME}://{pid}"
    return state


def container_status(view: ContainerView) -> dict[str, Any]:
    if view.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": view.started_at}}
    elif view.state == "terminated":
        state = {
            "terminated": terminated_state(
                exit_code=view.exit_code or 0,
                message=view.message,
                started_at=view.started_at,
                finished_at=view.finished_at or "",
                pid=view.pid,
            )
        }
    else:
        waiting: dict[str, Any] = {"reason": view.reason}
        if view.message:
            waiting["message"] = view.message
        state = {"waiting": waiting}
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "ready": view.ready,
        "started": view.started,
        "restartCount": view.restart_count,
        "state": state,
        "lastState": {"terminated": view.last_terminated} if view.last_terminated else {},
    }
    if view.pid is not None and view.state == "running":
        status["containerID"] = f"{CONTAINER_ID_SCHEME}://{view.pid}"
    return status


def condition(
    kind: str,
    ok: bool,
    *,
    now: str,
    previous: Sequence[Mapping[str, Any]],
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    """A pod condition whose lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    out: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or now,
    }
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def unschedulable_status(
    *, message: str, now: str, previous: Mapping[str, Any], qos_class: str
) -> dict[str, Any]:
    """A pod no node can take yet."""
    prior = previous.get("conditions") or []
    return {
        "phase": "Pending",
        "conditions": [
            condition(
                "PodScheduled",
                False,
                now=now,
                previous=prior,
                reason="Unschedulable",
                message=message,
            )
        ],
        "qosClass": qos_class,
    }


def pod_status(
    *,
    containers: Sequence[ContainerView],
    pod_ip: str | None,
    start_time: str,
    now: str,
    previous: Mapping[str, Any],
    qos_class: str,
) -> dict[str, Any]:
    """A pod bound to the local node, from its containers' views."""
    prior = previous.get("conditions") or []
    unready = [c.name for c in containers if not c.ready]
    ready = not unready
    not_ready_message = f"containers with unready status: [{' '.join(unready)}]"
    reason = "" if ready else "ContainersNotReady"
    message = "" if ready else not_ready_message
    ever_started = any(c.started_at or c.restart_count for c in containers)
    status: dict[str, Any] = {
        "phase": "Running" if ever_started else "Pending",
        "conditions": [
            condition("Initialized", True, now=now, previous=prior),
            condition("Ready", ready, now=now, previous=prior, reason=reason, message=message),
            condition(
                "ContainersReady", ready, now=now, previous=prior, reason=reason, message=message
            ),
            condition("PodScheduled", True, now=now, previous=prior),
        ],
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "startTime": start_time,
        "qosClass": qos_class,
        "containerStatuses": [container_status(c) for c in containers],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Whether a pod object says it is Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False
