"""rollout/recovery.py: the stable record rebuilt from Deployment annotations, or a hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mmop.operator import models, naming
from mmop.operator.builders.children import build_children
from mmop.operator.builders.plan import plan_versions
from mmop.operator.rollout import recovery
from mmop.operator.settings import BuildOptions

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
UID = "uid-1"


def model(version: str, **status: Any) -> models.MultimodalModel:
    mm = models.parse_model(
        {
            "apiVersion": "mmop.io/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "clip", "namespace": "ml", "uid": UID},
            "spec": {
                "version": version,
                "model": {"source": "hf://openai/clip", "task": "zero-shot-image-classification"},
                "resources": {"gpu": 0},
            },
        }
    )
    mm.status = models.MultimodalModelStatus(**status)
    return mm


def deployments(mm: models.MultimodalModel) -> dict[str, dict[str, Any]]:
    """The Deployments the builders make for ``mm`` (what the cluster holds)."""
    objs = build_children(mm, options=BuildOptions(), plans=plan_versions(mm))
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}


def mid_rollout() -> models.MultimodalModel:
    v1 = model("v1").spec.serving()
    return model(
        "v2",
        stable_version="v1",
        stable_revision=v1.revision(),
        stable_spec=v1,
        canary_version="v2",
        canary_revision=model("v2").spec.serving().revision(),
        canary_weight=25,
        phase=models.Phase.PROGRESSING,
    )


def recover(
    spec_version: str, objs: dict[str, dict[str, Any]], status: models.MultimodalModelStatus
) -> recovery.Recovery:
    records = recovery.records_from(objs, owner_uid=UID)
    assert recovery.needs_recovery(status, records)
    return recovery.recover_status(
        spec=model(spec_version).spec, status=status, records=records, now=NOW
    )


def test_nothing_to_recover_without_deployments_or_with_a_stable_record() -> None:
    assert not recovery.needs_recovery(models.MultimodalModelStatus(), [])
    mm = mid_rollout()
    assert not recovery.needs_recovery(
        mm.status, recovery.records_from(deployments(mm), owner_uid=UID)
    )


def test_wiped_mid_rollout_recovers_stable_and_restarts_the_canary_at_zero() -> None:
    found = recover("v2", deployments(mid_rollout()), models.MultimodalModelStatus())
    s = found.status
    assert s is not None
    v1 = model("v1").spec.serving()
    assert (s.stable_version, s.stable_revision, s.stable_spec) == ("v1", v1.revision(), v1)
    assert (s.canary_version, s.canary_weight) == ("v2", 0)
    assert s.rollout is not None and s.rollout.verified_at is None  # verified again from scratch
    assert s.phase == models.Phase.PROGRESSING
    assert "stable v1" in found.message and "canary v2 at weight 0" in found.message


def test_a_wiped_stable_is_never_replaced_by_the_spec() -> None:
    # v1 runs and is stable; the spec moved on to v3 while the status was lost.
    v1 = model("v1")
    found = recover("v3", deployments(v1), models.MultimodalModelStatus())
    s = found.status
    assert s is not None
    assert (s.stable_version, s.canary_version, s.phase) == ("v1", None, models.Phase.READY)
    assert s.stable_spec == v1.spec.serving()


def test_retiring_version_comes_back_retiring() -> None:
    old = deployments(model("v1"))["clip-v1"]
    old["metadata"]["annotations"][naming.ANNOTATION_ROLE] = naming.ROLE_RETIRING
    objs = {**deployments(model("v2")), "clip-v1": old}
    found = recover("v2", objs, models.MultimodalModelStatus())
    s = found.status
    assert s is not None and s.stable_version == "v2"
    assert [(v.name, v.role) for v in s.versions] == [("v1", models.VersionRole.RETIRING)]


def test_legacy_single_deployment_of_the_spec_revision_is_adopted() -> None:
    objs = deployments(model("v1"))
    for obj in objs.values():
        del obj["metadata"]["annotations"][naming.ANNOTATION_ROLE]
        del obj["metadata"]["annotations"][naming.ANNOTATION_SERVING_SPEC]
    found = recover("v1", objs, models.MultimodalModelStatus())
    assert found.status is not None and found.status.stable_version == "v1"


def test_ambiguous_records_hold() -> None:
    # No role annotation and a spec that moved on: nobody knows what v1 ran.
    objs = deployments(model("v1"))
    del objs["clip-v1"]["metadata"]["annotations"][naming.ANNOTATION_ROLE]
    found = recover("v2", objs, models.MultimodalModelStatus())
    assert found.status is None
    assert "holding" in found.message and "clip-v1" in found.message
    # Two stables.
    both = {**deployments(model("v1")), **deployments(model("v2"))}
    found = recover("v2", both, models.MultimodalModelStatus())
    assert found.status is None and "several Deployments claim to be stable" in found.message
    # An unreadable serving spec.
    objs = deployments(model("v1"))
    objs["clip-v1"]["metadata"]["annotations"][naming.ANNOTATION_SERVING_SPEC] = "{not json"
    assert recover("v2", objs, models.MultimodalModelStatus()).status is None


def test_deployments_of_another_owner_are_ignored() -> None:
    objs = deployments(model("v1"))
    objs["clip-v1"]["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    assert recovery.records_from(objs, owner_uid=UID) == []


def test_pinned_commits_and_the_stable_mirror_come_back_so_no_pod_is_replaced() -> None:
    # status.hubCommits and status.stableMirror shape the pod templates (MMOP_REVISION, the
    # mirror env): lost with the status, the rebuilt templates would differ and restart pods.
    mm = mid_rollout()
    v1_rev, v2_rev = mm.status.stable_revision, mm.status.canary_revision
    assert v1_rev and v2_rev
    mm.status.hub_commits = {v1_rev: "a" * 40, v2_rev: "b" * 40}
    mm.status.stable_mirror = models.Mirror(version="v0", percent=10)
    before = deployments(mm)
    found = recover("v2", before, models.MultimodalModelStatus())
    assert found.status is not None
    assert found.status.hub_commits == mm.status.hub_commits
    assert found.status.stable_mirror == mm.status.stable_mirror
    again = model("v2")
    again.status = found.status
    after = deployments(again)
    for name in ("clip-v1", "clip-v2"):
        assert after[name]["spec"]["template"] == before[name]["spec"]["template"], name
