"""reconcile/smoke.py: the per-model smoke-test token Secret."""

from __future__ import annotations

import base64
from typing import Any

from mmop.operator import kube, models
from mmop.operator.reconcile import smoke

MM = models.parse_model(
    {
        "apiVersion": "mmop.io/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "clip", "namespace": "ml", "uid": "uid-clip"},
        "spec": {
            "version": "v1",
            "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
            "resources": {"gpu": 0},
        },
    }
)


class Secrets:
    def __init__(
        self, existing: dict[str, Any] | None = None, create_code: int = 0, get_code: int = 0
    ) -> None:
        self.existing = existing
        self.create_code = create_code
        self.get_code = get_code
        self.created: list[dict[str, Any]] = []

    async def get_or_none(self, kind: kube.Kind, *, name: str, namespace: str) -> Any:
        assert (kind, name, namespace) == (kube.SECRET, "clip-mmop-smoke-test", "ml")
        if self.get_code:
            raise kube.ApiError(self.get_code, {}, method="GET", path="secrets")
        return self.existing

    async def create(self, kind: kube.Kind, obj: dict[str, Any], *, namespace: str) -> Any:
        if self.create_code:
            raise kube.ApiError(self.create_code, {}, method="POST", path="secrets")
        self.created.append(obj)
        self.existing = obj
        return obj


async def test_created_once_owned_by_the_model_and_reused() -> None:
    client = Secrets()
    assert await smoke.smoke_token(client, MM, create=False) is None  # type: ignore[arg-type]
    token = await smoke.smoke_token(client, MM, create=True)  # type: ignore[arg-type]
    assert token and len(token) >= 32
    (secret,) = client.created
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-clip"
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    again = await smoke.smoke_token(client, MM, create=True)  # type: ignore[arg-type]
    assert again == token and len(client.created) == 1


async def test_a_secret_the_model_does_not_own_is_never_used() -> None:
    foreign = smoke.build_secret(MM, "planted")
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    client = Secrets(existing=foreign)
    assert await smoke.smoke_token(client, MM, create=True) is None  # type: ignore[arg-type]


async def test_no_permission_to_create_leaves_tests_unmarked() -> None:
    client = Secrets(create_code=403)
    assert await smoke.smoke_token(client, MM, create=True) is None  # type: ignore[arg-type]


async def test_no_permission_to_read_secrets_leaves_tests_unmarked() -> None:
    # A namespace outside rbac.secretNamespaces: the pass goes on, the tests go unmarked.
    client = Secrets(get_code=403)
    assert await smoke.smoke_token(client, MM, create=True) is None  # type: ignore[arg-type]
    assert client.created == []
