"""Golden YAML: the whole desired state of the CLIP example, as a reader sees it: mid-rollout
behind each router (Istio, Gateway API, plain Services) and stable only.

Regenerate after an intended change with MMOP_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.operator import models
from mmop.operator.builders.children import build_children
from mmop.operator.settings import BuildOptions
from tests.support.models import WithCanary

GOLDEN = Path(__file__).parent / "golden"


def _render(mm: models.MultimodalModel) -> str:
    return yaml.safe_dump_all(build_children(mm, options=BuildOptions()), sort_keys=False)


def _matches(rendered: str, name: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("MMOP_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def _clip(doc: dict[str, Any], router: str) -> models.MultimodalModel:
    doc["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    doc["spec"]["traffic"]["router"] = router
    return models.parse_model(doc)


def test_clip_canary_at_25_matches_golden(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    _matches(_render(with_canary(clip, weight=25)), "clip-canary-25.yaml")


@pytest.mark.parametrize(
    ("router", "golden"),
    [
        (models.Router.GATEWAY_API, "clip-gatewayapi-canary-25.yaml"),
        (models.Router.SERVICE, "clip-service-canary-25.yaml"),
    ],
)
def test_other_routers_at_25_match_golden(
    clip_doc: dict[str, Any], with_canary: WithCanary, router: models.Router, golden: str
) -> None:
    _matches(_render(with_canary(_clip(clip_doc, router), weight=25)), golden)


def test_clip_stable_only_matches_golden(clip: models.MultimodalModel) -> None:
    _matches(_render(clip), "clip-stable.yaml")
