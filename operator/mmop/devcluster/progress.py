"""One line per change of a MultimodalModel, for ``mmop dev`` to print: its phase, Ready
condition, versions, canary weight and ready replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mmop.devcluster.informer import Informer
from mmop.operator import kube


@dataclass(frozen=True)
class ModelSummary:
    namespace: str
    name: str
    phase: str
    ready: str
    stable: str
    canary: str
    weight: int
    ready_replicas: int
    replicas: int
    reason: str

    def line(self) -> str:
        canary = f" canary={self.canary} weight={self.weight}%" if self.canary else ""
        why = f" ({self.reason})" if self.reason and self.ready != "True" else ""
        return (
            f"{self.namespace}/{self.name}: phase={self.phase or '-'} ready={self.ready}{why} "
            f"stable={self.stable or '-'}{canary} replicas={self.ready_replicas}/{self.replicas}"
        )


def summarize(obj: Mapping[str, Any]) -> ModelSummary:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ready = (
        next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None) or {}
    )
    return ModelSummary(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        phase=str(status.get("phase") or ""),
        ready=str(ready.get("status") or "Unknown"),
        stable=str(status.get("stableVersion") or ""),
        canary=str(status.get("canaryVersion") or ""),
        weight=int(status.get("canaryWeight") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        replicas=int(status.get("replicas") or 0),
        reason=str(ready.get("reason") or ""),
    )


async def follow_models(client: kube.KubeClient, emit: Callable[[str], None]) -> None:
    """Call ``emit`` with a line whenever a model's summary changes (until cancelled)."""
    changed = asyncio.Event()
    informer = Informer(client, kube.MULTIMODAL_MODEL, notify=changed)
    task = asyncio.create_task(informer.run())
    seen: dict[tuple[str, str], ModelSummary] = {}
    try:
        while True:
            await changed.wait()
            changed.clear()
            current = {(s.namespace, s.name): s for s in map(summarize, informer)}
            for key, summary in sorted(current.items()):
                if seen.get(key) != summary:
                    emit(summary.line())
            for key in sorted(set(seen) - set(current)):
                emit(f"{key[0]}/{key[1]}: deleted")
            seen = current
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
