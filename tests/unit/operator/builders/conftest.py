"""Builder fixtures: models in each state (stable only, canary at a weight)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmop.operator import models
from mmop.operator.settings import BuildOptions

WithCanary = Callable[..., models.MultimodalModel]


@pytest.fixture
def options() -> BuildOptions:
    return BuildOptions()


def _with_canary(
    mm: models.MultimodalModel, *, weight: int, name: str = "v2", **spec_changes: Any
) -> models.MultimodalModel:
    stable = mm.spec.serving()
    spec = mm.spec.model_copy(update={"version": name, **spec_changes})
    out = mm.model_copy(update={"spec": spec})
    out.status = models.MultimodalModelStatus(
        stable_version=stable.version,
        stable_revision=stable.revision(),
        stable_spec=stable,
        canary_version=name,
        canary_revision=spec.revision(),
        canary_weight=weight,
    )
    return out


@pytest.fixture
def with_canary() -> WithCanary:
    """with_canary(mm, weight=25) -> the model mid-rollout to v2 at that weight."""
    return _with_canary
