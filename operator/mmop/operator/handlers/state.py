"""What the handlers share inside one operator process: the reconcile context and the
per-model wake-up events that child events use to trigger a pass early."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from mmop.operator.reconcile.model import Context

MEMO_KEY = "mmop"


@dataclass
class OperatorState:
    context: Context
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    health_runner: web.AppRunner | None = None

    def wakeup_for(self, namespace: str, name: str) -> asyncio.Event:
        return self.wakeups.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str) -> None:
        event = self.wakeups.get((namespace, name))
        if event is not None:
            event.set()

    def forget(self, namespace: str, name: str) -> None:
        self.wakeups.pop((namespace, name), None)
