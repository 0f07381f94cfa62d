"""`mmop get NAME`: a MultimodalModel as a tree of versions, Deployments and pods, with weights,
the last check and the history (what `kubectl argo rollouts get rollout` shows). Pure: objects
in, text out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mmop.operator import conditions, naming

_ICONS = {
    "Ready": "✔",
    "Progressing": "◌",
    "Promoting": "◌",
    "Deploying": "◌",
    "Pending": "◌",
    "RollingBack": "↺",
    "Failed": "✖",
    "Degraded": "⚠",
    "Paused": "॥",
}


def _age(stamp: str | None, now: datetime) -> str:
    moment = conditions.parse_time(stamp)
    if moment is None:
        return "-"
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_state(pod: dict[str, Any]) -> tuple[str, str]:
    """(icon + phase, info) of a pod, the way `kubectl get pods` summarises it."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    waiting = next(
        (
            c["state"]["waiting"].get("reason", "")
            for c in status.get("containerStatuses") or []
            if (c.get("state") or {}).get("waiting")
        ),
        "",
    )
    if pod["metadata"].get("deletionTimestamp"):
        return "◌ Terminating", ""
    label = waiting or phase
    icon = "✔" if ready else ("✖" if waiting or phase == "Failed" else "◌")
    info = "ready" if ready else "not ready"
    if restarts:
        info += f", restarts:{restarts}"
    return f"{icon} {label}", info


def _header(body: dict[str, Any], status: dict[str, Any], now: datetime) -> list[str]:
    md, spec = body["metadata"], body.get("spec") or {}
    rollout_spec = spec.get("rollout") or {}
    steps = rollout_spec.get("steps") or [10, 25, 50, 100]
    phase = status.get("phase") or "Pending"
    paused = bool(rollout_spec.get("paused"))
    shown = "Paused" if paused and status.get("canaryVersion") else phase
    rows: list[tuple[str, str]] = [
        ("Name", md["name"]),
        ("Namespace", md.get("namespace", "default")),
        ("Status", f"{_ICONS.get(shown, '?')} {shown}"),
        ("Message", status.get("message") or ""),
        ("Strategy", rollout_spec.get("strategy") or "Canary"),
    ]
    rollout = status.get("rollout") or {}
    if status.get("canaryVersion"):
        rows.append(("  Step", f"{int(rollout.get('step') or 0) + 1}/{len(steps)}"))
        rows.append(("  Steps", ", ".join(f"{w}%" for w in steps)))
        rows.append(("  Failed checks", f"{rollout.get('failedChecks', 0)}"))
    rows.append(("  Paused", "true" if paused else "false"))
    stable, canary = status.get("stableVersion"), status.get("canaryVersion")
    weight = int(status.get("canaryWeight") or 0)
    split = f"stable {stable} {100 - weight}%" if stable else "-"
    if canary:
        split += f", canary {canary} {weight}%"
    rows.append(("Weights", split))
    rows.append(("Replicas", f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)} ready"))
    if status.get("url"):
        rows.append(("URL", status["url"]))
    gpus = rollout.get("capacity")
    if gpus and status.get("canaryVersion"):
        rows.append(("GPUs", str(gpus.get("message") or "")))
    check = rollout.get("lastCheck")
    if check:
        parts = [f"{check.get('result')} {_age(check.get('time'), now)} ago"]
        parts.append(f"requests {check.get('requests', 0)}")
        if check.get("errorRate") is not None:
            parts.append(f"errors {100 * float(check['errorRate']):.2f}%")
        if check.get("latencyP99Ms") is not None:
            parts.append(f"p99 {float(check['latencyP99Ms']):.0f} ms")
        text = ", ".join(parts)
        if check.get("message"):
            text += f": {check['message']}"
        rows.append(("Last check", text))
    command = status.get("lastCommand")
    if command:
        rows.append(
            (
                "Last command",
                f"{command.get('command')} {command.get('result')} "
                f"{_age(command.get('time'), now)} ago: {command.get('message', '')}",
            )
        )
    width = max(len(k) for k, _ in rows) + 2
    return [f"{k + ':':<{width}}{v}".rstrip() for k, v in rows]


def _tree(
    body: dict[str, Any],
    status: dict[str, Any],
    *,
    deployments: Sequence[dict[str, Any]],
    pods: Sequence[dict[str, Any]],
    now: datetime,
) -> list[str]:
    name = body["metadata"]["name"]
    by_name = {d["metadata"]["name"]: d for d in deployments}
    pods_by_version: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        version = (pod["metadata"].get("labels") or {}).get(naming.LABEL_VERSION, "")
        pods_by_version.setdefault(version, []).append(pod)

    rows: list[tuple[str, str, str, str, str]] = []  # (tree name, kind, status, age, info)
    phase = status.get("phase") or "Pending"
    rows.append(
        (
            f"⟳ {name}",
            "MultimodalModel",
            f"{_ICONS.get(phase, '?')} {phase}",
            _age(body["metadata"].get("creationTimestamp"), now),
            "",
        )
    )
    versions = status.get("versions") or []
    for vi, version in enumerate(versions):
        last_v = vi == len(versions) - 1
        branch, cont = ("└──", "   ") if last_v else ("├──", "│  ")
        role = str(version.get("role", "")).lower()
        info = (
            f"weight {version.get('weight', 0)}%, revision {version.get('revision', '')}, "
            f"{version.get('readyReplicas', 0)}/{version.get('replicas', 0)} ready"
        )
        rows.append((f"{branch}# {version['name']} ({role})", "Version", "", "", info))
        deployment = by_name.get(naming.versioned_name(name, version["name"]))
        if deployment is None:
            continue
        dstatus = deployment.get("status") or {}
        available = int(dstatus.get("availableReplicas") or 0)
        wanted = (deployment.get("spec") or {}).get("replicas")
        healthy = available > 0 and (wanted is None or available >= int(wanted))
        rows.append(
            (
                f"{cont}└──⧉ {deployment['metadata']['name']}",
                "Deployment",
                "✔ Healthy" if healthy else "◌ Progressing",
                _age(deployment["metadata"].get("creationTimestamp"), now),
                f"{dstatus.get('readyReplicas', 0)}/{dstatus.get('replicas', 0)} ready",
            )
        )
        vpods = sorted(
            pods_by_version.get(version["name"], []), key=lambda p: p["metadata"]["name"]
        )
        for pi, pod in enumerate(vpods):
            pbranch = "└──" if pi == len(vpods) - 1 else "├──"
            state, pinfo = _pod_state(pod)
            rows.append(
                (
                    f"{cont}   {pbranch}□ {pod['metadata']['name']}",
                    "Pod",
                    state,
                    _age(pod["metadata"].get("creationTimestamp"), now),
                    pinfo,
                )
            )
    header = ("NAME", "KIND", "STATUS", "AGE", "INFO")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


def _history(status: dict[str, Any], now: datetime) -> list[str]:
    entries = status.get("history") or []
    if not entries:
        return []
    rows = [("VERSION", "REVISION", "RESULT", "FINISHED", "REASON")]
    for entry in reversed(entries):
        rows.append(
            (
                str(entry.get("version", "")),
                str(entry.get("revision", "")),
                str(entry.get("result", "")),
                f"{_age(entry.get('finishedAt'), now)} ago",
                str(entry.get("reason", "")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["History (newest first):"]
    for row in rows:
        lines.append(
            "  " + "  ".join(c.ljust(widths[i]) if i < 4 else c for i, c in enumerate(row)).rstrip()
        )
    return lines


def render_tree(
    body: dict[str, Any],
    *,
    deployments: Sequence[dict[str, Any]] = (),
    pods: Sequence[dict[str, Any]] = (),
    now: datetime,
) -> str:
    """The whole `mmop get` view of one MultimodalModel object (as read from the API)."""
    status = body.get("status") or {}
    sections = [
        _header(body, status, now),
        _tree(body, status, deployments=deployments, pods=pods, now=now),
        _history(status, now),
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
