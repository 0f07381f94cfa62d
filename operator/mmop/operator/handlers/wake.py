"""Watch events that should trigger a reconcile pass early."""

from __future__ import annotations

from typing import Any

import kopf

from mmop.operator import naming
from mmop.operator.handlers.state import MEMO_KEY, OperatorState
from mmop.operator.rollout import commands


def handle_model_event(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A spec change (generation moved past what status has seen), a rollout command not yet
    acknowledged or a deletion wakes the model's loop; our own status writes do not."""
    state: OperatorState | None = memo.get(MEMO_KEY)
    if state is None:
        return
    md = body.get("metadata", {})
    observed = (body.get("status") or {}).get("observedGeneration")
    if (
        observed != md.get("generation")
        or md.get("deletionTimestamp")
        or commands.is_pending(md, body.get("status"))
    ):
        state.wake(md.get("namespace", ""), md.get("name", ""))


def handle_child_event(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed (a Deployment became ready, someone edited or deleted a child)."""
    state: OperatorState | None = memo.get(MEMO_KEY)
    if state is None:
        return
    md = body.get("metadata", {})
    model = (md.get("labels") or {}).get(naming.LABEL_MODEL)
    if model:
        state.wake(md.get("namespace", ""), model)
