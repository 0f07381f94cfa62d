"""reconcile/model.py: the auth Secret for the canary's test inference, where the operator may
not read Secrets (rbac.secretNamespaces does not list the namespace)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mmop.operator import kube, models
from mmop.operator.metrics import OperatorMetrics
from mmop.operator.reconcile import model
from mmop.operator.settings import OperatorSettings


class ForbiddenSecrets:
    async def get_or_none(self, kind: kube.Kind, *, name: str, namespace: str) -> Any:
        assert kind is kube.SECRET
        raise kube.ApiError(
            403,
            {"reason": "Forbidden", "message": "secrets is forbidden"},
            method="GET",
            path=f"/api/v1/namespaces/{namespace}/secrets/{name}",
        )


async def test_a_forbidden_secret_fails_the_check_and_says_which_grant_is_missing(
    clip: models.MultimodalModel,
) -> None:
    runtime = clip.spec.runtime.model_copy(
        update={"auth_secret_ref": models.SecretKeyRef(name="clip-token")}
    )
    mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"runtime": runtime})})
    async with httpx.AsyncClient() as http:
        ctx = model.Context(
            client=ForbiddenSecrets(),  # type: ignore[arg-type]
            http=http,
            settings=OperatorSettings(),
            metrics=OperatorMetrics(),
        )
        with pytest.raises(model._SecretUnreadable) as info:
            await model._auth_token(ctx, mm)
    message = str(info.value)
    assert "Secret ml/clip-token" in message and "HTTP 403" in message
    assert "rbac.secretNamespaces" in message
