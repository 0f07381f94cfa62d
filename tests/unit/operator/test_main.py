"""The kopf handler registrations of ``mmop.operator.main``."""

from __future__ import annotations

import inspect

import kopf


def test_watch_and_daemon_handlers_run_on_the_event_loop() -> None:
    # kopf runs sync handlers in a thread pool; ours set asyncio.Events (OperatorState.wake),
    # which is only safe on the loop, and a thread hop per watch event costs CPU at scale.
    from mmop.operator import main  # noqa: F401 - registers the handlers

    registry = kopf.get_default_registry()
    handlers = [
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
    ]
    ids = {handler.id for handler in handlers}
    assert {"multimodalmodel_event", "deployment_event", "multimodalmodel_reconcile"} <= ids
    sync = [handler.id for handler in handlers if not inspect.iscoroutinefunction(handler.fn)]
    assert sync == []
