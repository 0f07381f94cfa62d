"""Talking to a dev cluster the way a user does, through real kubectl: apply a manifest, read a
MultimodalModel's status; and the operator settings the e2e session runs with."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import yaml

Kubectl = Callable[..., str]
"""``kubectl(*args, stdin=None, check=True) -> stdout`` against the session's cluster."""

OPERATOR_ENV: Final = {"MMOP_OPERATOR_RESYNC_SECONDS": "2"}


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


def status_of(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "multimodalmodel", name, "-o", "json"))
    status: dict[str, Any] = body.get("status") or {}
    return status
