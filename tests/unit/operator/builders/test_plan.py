"""builders/plan.py: versions, weights and pod counts from spec + status."""

from __future__ import annotations

from mmop.operator import models
from mmop.operator.builders.plan import plan_versions
from mmop.operator.naming import version_name
from tests.support.models import WithCanary


def test_first_version_is_stable_at_100(clip: models.MultimodalModel) -> None:
    (stable,) = plan_versions(clip)
    assert (stable.name, stable.role, stable.weight) == ("v1", "stable", 100)
    assert stable.revision == clip.spec.revision()


def test_canary_takes_its_weight_from_stable(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    stable, canary = plan_versions(with_canary(clip, weight=25))
    assert (stable.name, stable.weight, canary.name, canary.weight) == ("v1", 75, "v2", 25)
    # the stable keeps running the spec it was promoted with
    assert stable.serving.version == "v1" and canary.serving.version == "v2"


def test_version_name_avoids_collisions() -> None:
    assert version_name("v2", "abcdef1234", taken={"v1"}) == "v2"
    assert version_name("v1", "abcdef1234", taken={"v1"}) == "v1-abcdef"


def test_service_router_splits_by_replicas(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    spec = clip.spec.model_copy(
        update={
            "autoscaling": None,
            "replicas": 4,
            "traffic": models.Traffic(router=models.Router.SERVICE),
        }
    )
    mm = with_canary(clip.model_copy(update={"spec": spec}), weight=25)
    stable, canary = plan_versions(mm)
    assert (stable.replicas, canary.replicas) == (3, 1)


def test_mesh_router_keeps_stable_at_full_size(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    spec = clip.spec.model_copy(update={"autoscaling": None, "replicas": 4})
    stable, canary = plan_versions(with_canary(clip.model_copy(update={"spec": spec}), weight=50))
    assert (stable.replicas, canary.replicas) == (4, 2)


def test_gpu_capacity_plan_caps_the_canary_and_lends_the_stables_hpa_bound() -> None:
    """Swap with autoscaling: the stable's HPA maxReplicas (a bound the operator owns) goes
    down by what it lent; the canary's HPA is held to the pods whose GPUs it has; a canary
    allowed no pod gets no Deployment (nothing Pending, no HPA facing zero replicas)."""
    doc = {
        "metadata": {"name": "m", "namespace": "d"},
        "spec": {
            "version": "v2",
            "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
        },
        "status": {
            "stableVersion": "v1",
            "stableRevision": "r1",
            "canaryVersion": "v2",
            "canaryRevision": "r2",
            "canaryWeight": 50,
            "rollout": {
                "capacity": {
                    "mode": "Swap",
                    "lentReplicas": 2,
                    "canaryReplicas": 1,
                    "stableReplicas": 4,
                }
            },
        },
    }
    mm = models.MultimodalModel.model_validate(doc)
    mm.status.stable_spec = mm.spec.serving().model_copy(update={"version": "v1"})
    stable, canary = plan_versions(mm)
    assert (stable.replicas, stable.min_replicas, stable.max_replicas) == (None, 2, 2)
    assert (canary.replicas, canary.min_replicas, canary.max_replicas) == (None, 1, 1)
    held = mm.model_copy(deep=True)
    assert held.status.rollout is not None and held.status.rollout.capacity is not None
    held.status.rollout.capacity.canary_replicas = 0
    assert [p.name for p in plan_versions(held)] == ["v1"]
