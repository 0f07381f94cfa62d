"""The scheduler's arithmetic for the one local node: what a pod asks for, whether it fits, and
the message a real scheduler gives when it does not. Pure functions; the kubelet holds state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

from mmop.devcluster.kubelet.quantity import format_quantity, parse_quantity

GPU_RESOURCE: Final = "nvidia.com/gpu"
# Requests sized for real GPU nodes (4 CPUs, 16Gi per replica) must fit on a laptop: the node
# reports more CPU and memory than it has. Only extended resources (GPUs) are counted for real.
NODE_CPU: Final = "1000"
NODE_MEMORY: Final = "4Ti"
NODE_PODS: Final = "110"

Resources = dict[str, Decimal]


def node_capacity(*, gpus: int) -> dict[str, str]:
    """The node's capacity (and allocatable) as a Node object's status shows it."""
    return {
        "cpu": NODE_CPU,
        "memory": NODE_MEMORY,
        "pods": NODE_PODS,
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(gpus),
    }


def _container_requests(container: Mapping[str, Any]) -> Resources:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    # A missing request defaults to the limit (extended resources can only be set as limits).
    merged = {**limits, **requests}
    return {name: parse_quantity(value) for name, value in merged.items()}


def pod_requests(pod_spec: Mapping[str, Any]) -> Resources:
    """What a pod needs from a node: its containers' sum, or its largest init container if more,
    plus one pod slot."""
    total: Resources = {}
    for container in pod_spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + value
    for container in pod_spec.get("initContainers") or []:
        for name, value in _container_requests(container).items():
            total[name] = max(total.get(name, Decimal(0)), value)
    total["pods"] = Decimal(1)
    return total


def add(totals: Iterable[Resources]) -> Resources:
    out: Resources = {}
    for item in totals:
        for name, value in item.items():
            out[name] = out.get(name, Decimal(0)) + value
    return out


def insufficient(
    requests: Mapping[str, Decimal], *, allocatable: Mapping[str, str], used: Mapping[str, Decimal]
) -> list[str]:
    """The resource names the node cannot give, sorted (empty: the pod fits)."""
    short = []
    for name, wanted in requests.items():
        if wanted <= 0:
            continue
        have = parse_quantity(allocatable[name]) if name in allocatable else Decimal(0)
        if wanted > have - used.get(name, Decimal(0)):
            short.append(name)
    return sorted(short)


def unschedulable_message(short: list[str], *, nodes: int = 1) -> str:
    """A real scheduler's FailedScheduling message for resources that do not fit."""
    reasons = ", ".join(f"{nodes} Insufficient {name}" for name in short)
    return f"0/{nodes} nodes are available: {reasons}."


def gpu_count(requests: Mapping[str, Decimal]) -> int:
    return int(requests.get(GPU_RESOURCE, Decimal(0)))


def qos_class(pod_spec: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, by the rules of the real API server."""
    containers = list(pod_spec.get("containers") or [])
    requests_seen = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        if requests or limits:
            requests_seen = True
        for name in ("cpu", "memory"):
            same = name in limits and name in requests
            if not same or parse_quantity(limits[name]) != parse_quantity(requests[name]):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def describe(resources: Mapping[str, Decimal]) -> str:
    return ", ".join(f"{k}={format_quantity(v)}" for k, v in sorted(resources.items()))


def pick_devices(count: int, *, total: int, in_use: Iterable[int]) -> list[int] | None:
    """The lowest free GPU indices for a pod that asks for ``count``; None if too few are free."""
    busy = set(in_use)
    free = [index for index in range(total) if index not in busy]
    return free[:count] if len(free) >= count else None
