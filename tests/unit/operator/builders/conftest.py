"""Builder fixtures: models in each state (stable only, canary at a weight)."""

from __future__ import annotations

import pytest

from mmop.operator.settings import BuildOptions
from tests.support import models as support


@pytest.fixture
def options() -> BuildOptions:
    return BuildOptions()


@pytest.fixture
def with_canary() -> support.WithCanary:
    """with_canary(mm, weight=25) -> the model mid-rollout to v2 at that weight."""
    return support.with_canary
