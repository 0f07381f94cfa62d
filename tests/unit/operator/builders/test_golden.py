"""Golden YAML: the whole desired state of the CLIP example mid-rollout, as a reader sees it.

Regenerate after an intended change with MMOP_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from mmop.operator import models
from mmop.operator.builders.children import build_children
from mmop.operator.settings import BuildOptions
from tests.support.models import WithCanary

GOLDEN = Path(__file__).parent / "golden" / "clip-canary-25.yaml"


def test_clip_canary_at_25_matches_golden(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    rendered = yaml.safe_dump_all(
        build_children(with_canary(clip, weight=25), options=BuildOptions()), sort_keys=False
    )
    if os.environ.get("MMOP_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()
