"""PodDisruptionBudget of one version, when it runs more than one pod."""

from __future__ import annotations

from typing import Any

from mmop.operator import models, naming
from mmop.operator.builders import meta
from mmop.operator.builders.plan import VersionPlan


def build_pdb(mm: models.MultimodalModel, plan: VersionPlan) -> dict[str, Any] | None:
    """None for a single-pod version: a PDB there would block node drains for good."""
    least = plan.min_replicas if plan.replicas is None else plan.replicas
    if least <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.object_meta(
            mm, name=naming.versioned_name(mm.metadata.name, plan.name), version=plan.name
        ),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.pod_selector(mm.metadata.name, plan.name)},
        },
    }
