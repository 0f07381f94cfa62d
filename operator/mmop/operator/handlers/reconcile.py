"""The per-model reconcile loop (a kopf daemon): a pass, then sleep until something is due,
a change wakes it, or the resync period ends."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from mmop.operator import kube
from mmop.operator.handlers.state import MEMO_KEY, OperatorState
from mmop.operator.reconcile.model import reconcile_model

log = logging.getLogger(__name__)
DEBOUNCE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0
# A 409 means someone else wrote first: the next pass re-reads and usually succeeds, so it comes
# soon and does not grow the back-off meant for an API server that fails.
CONFLICT_RETRY_SECONDS = 1.0


async def handle_daemon(
    *, name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    state: OperatorState = memo[MEMO_KEY]
    ctx = state.context
    wakeup = state.wakeup_for(namespace, name)
    ctx.metrics.models.inc()
    failures = 0
    try:
        while not stopped:
            wakeup.clear()
            try:
                outcome = await reconcile_model(ctx, namespace=namespace, name=name)
            except asyncio.CancelledError:
                raise
            except kube.ConflictError as error:
                delay = CONFLICT_RETRY_SECONDS
                log.info("%s/%s: conflict (%s); retrying in %.0f s", namespace, name, error, delay)
            except Exception as error:  # kopf would restart us; keeping the loop keeps state
                failures += 1
                delay = min(2.0**failures, MAX_BACKOFF_SECONDS)
                log.warning(
                    "%s/%s: reconcile failed (%s: %s); retrying in %.0f s",
                    namespace,
                    name,
                    type(error).__name__,
                    error,
                    delay,
                )
            else:
                failures = 0
                if outcome.action == "gone":
                    return
                resync = ctx.settings.resync_seconds
                delay = (
                    resync
                    if outcome.requeue_after is None
                    else min(max(outcome.requeue_after, 0.5), resync)
                )
            ctx.metrics.last_loop.set(time.time())
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
                await asyncio.sleep(DEBOUNCE_SECONDS)  # let a burst of events settle
            except TimeoutError:
                pass
    finally:
        ctx.metrics.models.dec()
        state.forget(namespace, name)
