"""builders/disruption.py: a PDB only where more than one pod runs."""

from __future__ import annotations

from mmop.operator import models
from mmop.operator.builders import disruption
from mmop.operator.builders.plan import plan_versions


def _fixed(mm: models.MultimodalModel, replicas: int) -> models.MultimodalModel:
    return mm.model_copy(
        update={"spec": mm.spec.model_copy(update={"autoscaling": None, "replicas": replicas})}
    )


class TestBuildPdb:
    def test_several_replicas_get_a_pdb(self, clip: models.MultimodalModel) -> None:
        mm = _fixed(clip, 3)
        pdb = disruption.build_pdb(mm, plan_versions(mm)[0])
        assert pdb is not None
        assert pdb["metadata"]["name"] == "clip-v1"
        assert pdb["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"mmop.io/model": "clip", "mmop.io/version": "v1"}},
        }

    def test_one_replica_gets_none(self, clip: models.MultimodalModel) -> None:
        mm = _fixed(clip, 1)
        assert disruption.build_pdb(mm, plan_versions(mm)[0]) is None

    def test_hpa_minimum_decides(self, clip: models.MultimodalModel) -> None:
        assert clip.spec.autoscaling is not None and clip.spec.autoscaling.min_replicas == 2
        assert disruption.build_pdb(clip, plan_versions(clip)[0]) is not None
