"""Pin an ``hf://`` source's revision (a branch such as ``main``, or a tag) to a commit.

Each runtime pod downloads its weights itself; with a branch, a pod started later (a restart,
a scale-up, a node drain) could get newer weights than its siblings without any rollout. The
operator therefore resolves the branch once, when a revision is first deployed, records the
commit in ``status.hubCommits`` and passes the commit to the pods.

The resolution is one call to the hub's model API (``GET /api/models/REPO/revision/REV``, what
``huggingface_hub.HfApi().model_info(repo, revision=...).sha`` calls), bounded like every
other call to a server the operator does not control.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import httpx

from mmop.operator import models
from mmop.operator.reconcile import bounded

COMMIT = re.compile(r"^[0-9a-f]{40}$")

# (repo, revision) -> the commit; raises HubError. Tests pass their own.
Resolver = Callable[[str, str], Awaitable[str]]


class HubError(Exception):
    """The revision could not be resolved (the message says why)."""


def hub_repo(source: models.ModelSource) -> str | None:
    """``ORG/NAME`` of an hf:// source whose revision is not a commit yet; None otherwise."""
    if not source.source.startswith("hf://") or COMMIT.match(source.revision):
        return None
    return source.source.removeprefix("hf://")


def http_resolver(
    http: httpx.AsyncClient,
    *,
    endpoint: str,
    token: str | None = None,
    limits: bounded.Limits | None = None,
) -> Resolver:
    """A resolver that asks the hub at ``endpoint`` (huggingface.co or a mirror)."""

    async def resolve(repo: str, revision: str) -> str:
        url = (
            f"{endpoint.rstrip('/')}/api/models/{quote(repo, safe='/')}"
            f"/revision/{quote(revision, safe='')}"
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            answer = await bounded.get(http, url, headers=headers, limits=limits)
        except httpx.HTTPError as error:
            raise HubError(f"{type(error).__name__}: {error}") from None
        if answer.status_code != 200:
            raise HubError(f"the hub answered HTTP {answer.status_code}")
        try:
            sha = answer.json().get("sha")
        except (ValueError, AttributeError):
            sha = None
        if not isinstance(sha, str) or not COMMIT.match(sha):
            raise HubError("the hub's answer names no commit")
        return sha

    return resolve
