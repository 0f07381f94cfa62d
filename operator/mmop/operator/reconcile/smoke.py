"""The per-model smoke-test token: a Secret the operator creates once and the runtime pods read.

The runtime counts a request as the operator's own test inference (left out of the canary
analysis) only when its ``X-Mmop-Smoke-Test`` header carries this token, so clients cannot
hide their requests from the analysis by sending the header. The Secret is owned by the model
(garbage-collected with it); a Secret of that name that the model does not own is never used.
"""

from __future__ import annotations

import base64
import logging
import secrets
from typing import Any

from mmop.operator import kube, models
from mmop.operator.builders import meta
from mmop.runtime import contract

log = logging.getLogger(__name__)


def build_secret(mm: models.MultimodalModel, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.object_meta(mm, name=contract.smoke_test_secret_name(mm.metadata.name)),
        "type": "Opaque",
        "data": {contract.SMOKE_TEST_SECRET_KEY: base64.b64encode(token.encode()).decode()},
    }


def _token_of(mm: models.MultimodalModel, secret: dict[str, Any]) -> str | None:
    owners = {o.get("uid") for o in secret["metadata"].get("ownerReferences") or []}
    if mm.metadata.uid not in owners:
        log.warning(
            "%s/%s: Secret %s is not owned by the model; test inferences go unmarked",
            mm.metadata.namespace,
            mm.metadata.name,
            secret["metadata"].get("name"),
        )
        return None
    value = (secret.get("data") or {}).get(contract.SMOKE_TEST_SECRET_KEY)
    return base64.b64decode(value).decode() if value else None


async def smoke_token(
    client: kube.KubeClient, mm: models.MultimodalModel, *, create: bool
) -> str | None:
    """The model's token; with ``create``, make the Secret when it does not exist yet."""
    name = contract.smoke_test_secret_name(mm.metadata.name)
    namespace = mm.metadata.namespace
    try:
        secret = await client.get_or_none(kube.SECRET, name=name, namespace=namespace)
    except kube.ApiError as error:
        if error.status not in (401, 403):
            raise
        # No Secret access in this namespace (chart value rbac.secretNamespaces): the test
        # inferences go unmarked, so they count as canary traffic; nothing is unchecked.
        log.warning("%s/%s: cannot read Secret %s: %s", namespace, mm.metadata.name, name, error)
        return None
    if secret is not None:
        return _token_of(mm, secret)
    if not create:
        return None
    token = secrets.token_urlsafe(32)
    try:
        await client.create(kube.SECRET, build_secret(mm, token), namespace=namespace)
    except kube.ConflictError:
        again = await client.get_or_none(kube.SECRET, name=name, namespace=namespace)
        return None if again is None else _token_of(mm, again)
    except kube.ApiError as error:
        if error.status != 403:
            raise
        log.warning("%s/%s: cannot create Secret %s: %s", namespace, mm.metadata.name, name, error)
        return None
    return token
