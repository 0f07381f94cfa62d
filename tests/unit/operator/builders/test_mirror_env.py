"""The canary's mirror env (MMOP_MIRROR_URL, MMOP_MIRROR_PERCENT) under a quality gate: the
canary gets it, the stable never does, and a promoted canary keeps it (no restart)."""

from __future__ import annotations

from typing import Any

from mmop.operator import models
from mmop.operator.builders import deployment
from mmop.operator.builders.plan import canary_mirror, plan_versions
from mmop.operator.settings import BuildOptions
from mmop.runtime import contract
from tests.support.models import WithCanary

MIRROR = {contract.ENV_MIRROR_URL, contract.ENV_MIRROR_PERCENT}


def _env(mm: models.MultimodalModel, options: BuildOptions) -> list[dict[str, str]]:
    """Each planned version's env as name -> value."""
    out = []
    for plan in plan_versions(mm):
        dep = deployment.build_deployment(mm, plan, options=options)
        env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        out.append({e["name"]: e.get("value", "") for e in env})
    return out


def _gated(mm: models.MultimodalModel, **gate: Any) -> models.MultimodalModel:
    rollout = mm.spec.rollout.model_copy(update={"quality": models.Quality(**gate)})
    return mm.model_copy(update={"spec": mm.spec.model_copy(update={"rollout": rollout})})


def test_only_the_canary_mirrors_to_the_stables_service(
    clip: models.MultimodalModel, with_canary: WithCanary
) -> None:
    mm = with_canary(_gated(clip, mirror_percent=15), weight=0)
    stable, canary = _env(mm, BuildOptions(cluster_domain="example.internal"))
    assert canary[contract.ENV_MIRROR_URL] == "http://clip-v1.ml.svc.example.internal:8080"
    assert canary[contract.ENV_MIRROR_PERCENT] == "15"
    assert not MIRROR & stable.keys()


def test_no_mirror_without_a_gate_or_at_zero_percent(
    clip: models.MultimodalModel, with_canary: WithCanary, options: BuildOptions
) -> None:
    for mm in (clip, _gated(clip, mirror_percent=0)):
        for env in _env(with_canary(mm, weight=25), options):
            assert not MIRROR & env.keys()


def test_stable_keeps_the_mirror_it_was_created_with(
    clip: models.MultimodalModel, options: BuildOptions
) -> None:
    mm = _gated(clip, mirror_percent=15)
    mm.status = models.MultimodalModelStatus(
        stable_version="v1",
        stable_revision=mm.spec.revision(),
        stable_spec=mm.spec.serving(),
        stable_mirror=models.Mirror(version="v0", percent=15),
    )
    (stable,) = _env(mm, options)
    assert stable[contract.ENV_MIRROR_URL] == "http://clip-v0.ml.svc.cluster.local:8080"


def test_promotion_does_not_change_the_promoted_pods(
    clip: models.MultimodalModel, with_canary: WithCanary, options: BuildOptions
) -> None:
    """The canary's pod template before promotion equals the stable's after it."""
    mm = with_canary(_gated(clip, mirror_percent=15), weight=100)
    before = deployment.build_deployment(mm, plan_versions(mm)[1], options=options)
    status = mm.status
    promoted = mm.model_copy(
        update={
            "status": models.MultimodalModelStatus(
                stable_version=status.canary_version,
                stable_revision=status.canary_revision,
                stable_spec=mm.spec.serving(),
                stable_mirror=canary_mirror(mm.spec, stable_version=status.stable_version),
            )
        }
    )
    after = deployment.build_deployment(promoted, plan_versions(promoted)[0], options=options)
    assert before["spec"]["template"] == after["spec"]["template"]
