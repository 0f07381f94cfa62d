"""Fault injection for rollout tests (``MMOP_FAULT_*``): added latency, a share of failed
requests and wrong answers, each optionally sparing the operator's smoke test."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from mmop.runtime import contract
from mmop.runtime.errors import FaultInjected
from mmop.runtime.protocol import OutputTensor
from mmop.runtime.settings import RuntimeSettings


class Faults:
    """The faults ``settings`` ask for; ``rng`` decides which requests fail."""

    def __init__(self, settings: RuntimeSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()

    async def before_request(self, *, smoke_test: bool = False) -> None:
        """Wait the injected latency, then fail the request at the injected error rate."""
        settings = self.settings
        if settings.fault_latency_ms > 0:
            await asyncio.sleep(settings.fault_latency_ms / 1000.0)
        if smoke_test and settings.fault_spare_smoke_test:
            return
        if settings.fault_error_rate > 0 and self._rng.random() < settings.fault_error_rate:
            raise FaultInjected(
                f"injected fault ({contract.ENV_FAULT_ERROR_RATE}={settings.fault_error_rate:g})"
            )

    def answers(
        self, outputs: list[OutputTensor], *, smoke_test: bool = False
    ) -> list[OutputTensor]:
        """The outputs to send: wrong ones when MMOP_FAULT_WRONG_ANSWERS is set."""
        settings = self.settings
        if settings.fault_wrong_answers and not (smoke_test and settings.fault_spare_smoke_test):
            return [wrong_answer(output) for output in outputs]
        return outputs


def wrong_answer(output: OutputTensor) -> OutputTensor:
    """The fault MMOP_FAULT_WRONG_ANSWERS: the same shape and type, another answer."""
    if isinstance(output.data, list):
        data: Any = [contract.FAULT_WRONG_TEXT] * len(output.data)
    else:
        data = -output.data
    return dataclasses.replace(output, data=data)
