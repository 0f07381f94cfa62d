"""GPU capacity for a canary: the free GPUs it could use, computed from listed Nodes and Pods,
and the plan that says where its pods find theirs (spec.rollout.capacity).

Pure: the reconciler lists Nodes and Pods, :func:`free_gpus` turns them into a
:class:`GpuCapacity`, and the state machine calls :func:`plan_capacity` with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmop.operator import models

INSUFFICIENT_GPU = "InsufficientGPU"
_TERMINAL_PHASES = ("Succeeded", "Failed")
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class GpuCapacity:
    """What the nodes a model's pods may run on have of one GPU resource."""

    resource: str
    free_by_node: Mapping[str, int]
    """Allocatable minus the requests of the pods bound there, per matching node."""
    largest: int = 0
    """The most a matching node has allocatable (a pod asking for more never fits)."""
    pending: int = 0
    """GPUs asked for by pods not bound to a node yet (they will take free GPUs first)."""

    @property
    def free(self) -> int:
        return max(0, sum(self.free_by_node.values()) - self.pending)

    def fitting(self, per_replica: int) -> int:
        """How many more pods of ``per_replica`` GPUs fit (each on one node)."""
        if per_replica <= 0:
            return 0
        slots = sum(f // per_replica for f in self.free_by_node.values())
        return max(0, slots - math.ceil(self.pending / per_replica))


def _quantity(value: Any) -> int:
    """GPU counts are whole numbers (extended resources allow no fractions)."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_gpus(pod_spec: Mapping[str, Any], resource: str) -> int:
    """What a pod asks of ``resource``: its containers' sum, or its largest init container."""

    def asked(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        # Extended resources are set as limits; a request, when given, must equal it.
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return _quantity(merged.get(resource, 0))

    main = sum(asked(c) for c in pod_spec.get("containers") or [])
    init = max((asked(c) for c in pod_spec.get("initContainers") or []), default=0)
    return max(main, init)


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """The rules of the real scheduler for one taint."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def node_matches(
    node: Mapping[str, Any],
    *,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> bool:
    """Could the model's pods be scheduled there: Ready, schedulable, labels and taints."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if spec.get("unschedulable"):
        return False
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if not ready:
        return False
    if any(labels.get(k) != v for k, v in node_selector.items()):
        return False
    return all(
        tolerates(tolerations, taint)
        for taint in spec.get("taints") or []
        if taint.get("effect") in _BLOCKING_EFFECTS
    )


def free_gpus(
    *,
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    resource: str,
    node_selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> GpuCapacity:
    """The free ``resource`` on the nodes matching the selector and tolerations. Pods count
    until they are gone (a terminating pod holds its GPUs); unbound pods count as pending."""
    allocatable: dict[str, int] = {}
    for node in nodes:
        if not node_matches(node, node_selector=node_selector, tolerations=tolerations):
            continue
        name = (node.get("metadata") or {}).get("name", "")
        have = ((node.get("status") or {}).get("allocatable") or {}).get(resource, 0)
        allocatable[name] = _quantity(have)
    used: dict[str, int] = {}
    pending = 0
    for pod in pods:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        if status.get("phase") in _TERMINAL_PHASES:
            continue
        gpus = pod_gpus(spec, resource)
        if gpus == 0:
            continue
        bound = str(spec.get("nodeName") or "")
        if not bound:
            pending += gpus
        elif bound in allocatable:
            used[bound] = used.get(bound, 0) + gpus
    free = {name: max(0, have - used.get(name, 0)) for name, have in allocatable.items()}
    return GpuCapacity(
        resource=resource,
        free_by_node=free,
        largest=max(allocatable.values(), default=0),
        pending=pending,
    )


# --- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CapacityInput:
    """What :func:`plan_capacity` looks at, besides the previous plan."""

    mode: models.CapacityMode
    """spec.rollout.capacity."""
    gpus_per_replica: int
    """The canary's GPUs per pod."""
    wanted: int
    """Canary pods its current weight calls for."""
    peak: int
    """Canary pods its last step (weight 100) calls for: what Surge must fit in Auto."""
    canary_pods: int
    """Canary pods that exist now."""
    stable_replicas: int
    """The stable's replicas with nothing lent (its spec replicas, or the HPA's count)."""
    stable_gpus_per_replica: int
    """GPUs of the canary's resource one stable pod holds (0: lending frees none it can use)."""
    stable_pods: int
    """Stable pods that exist now (a lent replica holds its GPUs until its pod is gone)."""
    stable_ready: int
    observed: GpuCapacity | None
    """None: the operator could not list Nodes and Pods."""


MIN_STABLE_READY = 1
"""Swap never takes the stable below this many ready replicas: it serves until promotion and
is what a rollback returns traffic to."""


def plan_capacity(
    previous: models.CapacityStatus | None, given: CapacityInput
) -> models.CapacityStatus:
    """The next plan. One replica at a time, and only once the previous move has landed (its
    pods exist, the lent stable pod is gone): a free GPU goes to the canary; without one, Swap
    takes a replica from a fully ready stable that keeps :data:`MIN_STABLE_READY`. ``held``
    when the canary has no GPU and none can be found or lent now."""
    g = given.gpus_per_replica
    cap = (previous or models.CapacityStatus()).model_copy(deep=True)
    cap.gpus_per_replica = g
    if cap.lent_replicas == 0:
        cap.stable_replicas = given.stable_replicas
    obs = given.observed
    if obs is not None and not obs.free_by_node:
        # No node matches (or none is listed): a node pool scaled to zero, a virtual node.
        # Nothing is known to plan with: take nothing from the stable, let the scheduler (and
        # a cluster autoscaler) decide, as without capacity planning.
        obs = None
    cap.gpus_free = None if obs is None else obs.free
    fits = 0 if obs is None else obs.fitting(g)
    if cap.mode is None:
        cap.mode = _choose_mode(given, fits)

    allowed = cap.canary_replicas
    landed = given.canary_pods >= allowed
    stable_left = cap.stable_replicas - cap.lent_replicas
    stable_settled = given.stable_pods <= stable_left
    if cap.lent_replicas > allowed:
        # A lent replica: its GPUs are the canary's once the stable's pod is gone.
        if landed and stable_settled and fits >= 1:
            allowed += 1
    elif allowed < given.wanted and landed:
        if obs is None and cap.mode == models.CapacityMode.SURGE:
            allowed = given.wanted  # nothing known: today's behaviour, the scheduler decides
        elif fits >= 1:
            step = given.wanted - allowed if cap.mode == models.CapacityMode.SURGE else 1
            allowed += min(fits, step)
        elif cap.mode == models.CapacityMode.SWAP and _can_lend(given, stable_left, obs):
            cap.lent_replicas += 1  # the stable gives one replica up; the canary gets it next
    cap.canary_replicas = allowed
    owed = max(0, cap.lent_replicas - allowed)
    cap.gpus_needed = max(0, given.wanted - allowed - owed) * g
    cap.held = allowed == 0 and cap.lent_replicas == 0
    cap.message = _message(cap, given, obs)
    return cap


def _can_lend(given: CapacityInput, stable_left: int, obs: GpuCapacity | None) -> bool:
    return (
        obs is not None
        and given.stable_gpus_per_replica >= given.gpus_per_replica
        and given.stable_pods <= stable_left
        and given.stable_ready >= stable_left
        and stable_left - 1 >= MIN_STABLE_READY
    )


def _choose_mode(given: CapacityInput, fits: int) -> models.CapacityMode | None:
    """Auto: Surge when the whole canary fits, else Swap when a GPU is free or the stable can
    lend one, else nothing yet (held)."""
    if given.mode != models.CapacityMode.AUTO:
        return given.mode
    if given.observed is None or not given.observed.free_by_node:
        return models.CapacityMode.SURGE  # unknown: take nothing from the stable
    if fits >= given.peak:
        return models.CapacityMode.SURGE
    lendable = (
        given.stable_gpus_per_replica >= given.gpus_per_replica
        and given.stable_replicas - 1 >= MIN_STABLE_READY
    )
    if fits >= 1 or lendable:
        return models.CapacityMode.SWAP
    return None


def _message(cap: models.CapacityStatus, given: CapacityInput, obs: GpuCapacity | None) -> str:
    g = given.gpus_per_replica
    resource = obs.resource if obs is not None else "GPUs"
    free = "unknown" if obs is None else str(obs.free)
    if given.observed is not None and obs is None:
        free = "unknown (no node matches the model's nodeSelector and tolerations)"
    if cap.held:
        if obs is not None and obs.largest < g:
            why = f"no matching node has {g} allocatable (the largest has {obs.largest})"
        elif cap.mode == models.CapacityMode.SURGE:
            why = "spec.rollout.capacity is Surge: the stable keeps its replicas"
        elif given.stable_gpus_per_replica < g:
            why = f"a stable pod holds {given.stable_gpus_per_replica}: lending frees too few"
        else:
            why = (
                f"the stable cannot lend a replica: it keeps at least {MIN_STABLE_READY} "
                f"ready and has {given.stable_ready} ready of {given.stable_replicas}"
            )
        return (
            f"waiting for GPUs: the canary needs {g} {resource} per pod, {free} free on "
            f"the nodes it may use; {why}"
        )
    mode = cap.mode.value if cap.mode is not None else "Auto"
    lent = f", {cap.lent_replicas} replica(s) lent by the stable" if cap.lent_replicas else ""
    return (
        f"{mode}: canary {cap.canary_replicas}/{given.wanted} pod(s) of {g} {resource}, "
        f"{free} free{lent}"
    )
