"""The scheduler of the dev cluster: binds pending pods to the one node when their requests
fit (GPUs counted for real, by device index) and marks the others Unschedulable with the
message a real scheduler gives. The arithmetic is in :mod:`.resources`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from mmop.devcluster.controllers.deployment import terminating, uid_of
from mmop.devcluster.informer import Cache
from mmop.devcluster.kubelet import podstatus, resources
from mmop.devcluster.kubelet.podworker import now_stamp
from mmop.operator import kube

log = logging.getLogger(__name__)
DEFAULT_SCHEDULER = "default-scheduler"
Held = Callable[[], tuple[dict[str, Decimal], set[int]]]


class Scheduler:
    """Binds pods to ``node_name``. ``held()`` says what the node's pods use right now."""

    def __init__(
        self, client: kube.KubeClient, cache: Cache, *, node_name: str, gpus: int, held: Held
    ) -> None:
        self._client = client
        self._cache = cache
        self._node_name = node_name
        self._gpus = gpus
        self._held = held
        self._devices: dict[str, list[int]] = {}  # GPU indices of pods bound, not yet started

    def take_devices(self, uid: str) -> list[int] | None:
        """The GPU indices chosen for a pod when it was bound (once), or None."""
        return self._devices.pop(uid, None)

    def reserved_devices(self, uid: str) -> list[int]:
        return self._devices.get(uid, [])

    def _pending(self) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self._cache[kube.POD]
            if not (p.get("spec") or {}).get("nodeName")
            and (p.get("spec") or {}).get("schedulerName", DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
            and not terminating(p)
        ]
        return sorted(
            pods, key=lambda p: (str(p["metadata"].get("creationTimestamp")), p["metadata"]["name"])
        )

    async def sync(self) -> None:
        """Bind what fits, oldest first; report the rest as Unschedulable."""
        pending = self._pending()
        if not pending:
            return
        used, devices = self._held()
        allocatable = resources.node_capacity(gpus=self._gpus)
        for pod in pending:
            requests = resources.pod_requests(pod.get("spec") or {})
            short = resources.insufficient(requests, allocatable=allocatable, used=used)
            picked = resources.pick_devices(
                resources.gpu_count(requests), total=self._gpus, in_use=devices
            )
            if picked is None and resources.GPU_RESOURCE not in short:
                short = sorted([*short, resources.GPU_RESOURCE])
            if short:
                await self._mark_unschedulable(pod, resources.unschedulable_message(short))
                continue
            meta = pod["metadata"]
            bound = await self._client.patch(
                kube.POD,
                name=meta["name"],
                namespace=meta["namespace"],
                patch={"spec": {"nodeName": self._node_name}},
            )
            self._cache[kube.POD].remember(bound)
            self._devices[uid_of(pod)] = picked or []
            used = resources.add([used, requests])
            devices.update(picked or [])
            log.info(
                "scheduled pod %s/%s (%s)",
                meta["namespace"],
                meta["name"],
                resources.describe(requests),
            )

    async def _mark_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        previous = pod.get("status") or {}
        status = podstatus.unschedulable_status(
            message=message,
            now=now_stamp(),
            previous=previous,
            qos_class=resources.qos_class(pod.get("spec") or {}),
        )
        if all(previous.get(k) == v for k, v in status.items()):
            return
        meta = pod["metadata"]
        with contextlib.suppress(kube.NotFoundError):
            updated = await self._client.patch_status(
                kube.POD, name=meta["name"], namespace=meta["namespace"], status=status
            )
            self._cache[kube.POD].remember(updated)
            log.info("pod %s/%s is unschedulable: %s", meta["namespace"], meta["name"], message)
