"""End to end, the quality gate (spec.rollout.quality) on `mmop dev`'s control plane: a canary
with other weights (healthy, fast, error-free, but wrong) is stopped by the golden set before it
gets any weight, while the stable serves every request; the same weights under a new version
go through; a canary that passes the golden set but answers real traffic differently is rolled
back by the live comparison of mirrored requests, with each router."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmop.runtime import contract
from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

Kubectl = Callable[..., str]


def _events(kubectl: Kubectl, name: str) -> list[dict[str, str]]:
    out = kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    items: list[dict[str, str]] = json.loads(out)["items"]
    return items


def test_other_weights_are_stopped_by_the_golden_set_before_any_weight(
    kubectl: Kubectl,
    tiny_clip_other: Path,
    ready_model: str,
    traffic: Traffic,
) -> None:
    mark = traffic.mark()
    apply(kubectl, model_manifest(ready_model, source=tiny_clip_other, version="v2", quality={}))
    failed = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback by the quality gate",
    )
    assert failed["stableVersion"] == "v1" and failed.get("canaryVersion") is None
    last = failed["history"][-1]
    assert last["result"] == "RolledBack"
    assert last["reason"].startswith("QualityCheckFailed: built-in golden set: label_agreement ")
    assert "below the minimum 0.95" in last["reason"]
    progressing = next(c for c in failed["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "QualityCheckFailed"
    # the Event carries the score and the threshold; no weight was ever given
    events = _events(kubectl, ready_model)
    (stopped,) = [e for e in events if e["reason"] == "QualityCheckFailed"]
    assert stopped["type"] == "Warning" and "the minimum 0.95" in stopped["message"]
    assert not [e for e in events if e["reason"] in ("CanaryVerified", "CanaryWeight")]
    described = kubectl("describe", "multimodalmodel", ready_model)
    assert "QualityCheckFailed" in described and "label_agreement" in described
    # every request went to the stable, and the stable failed none of them
    seen = traffic.since(mark)
    assert seen and all(v == "v1" and code == 200 for (code, v) in seen), seen


def test_same_weights_under_a_new_version_pass_the_golden_set_and_are_promoted(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    # mirrorPercent 0: the golden set alone (live comparison has its own test)
    manifest = model_manifest(
        ready_model, source=tiny_clip, version="v2", quality={"mirrorPercent": 0}
    )
    apply(kubectl, manifest)
    done = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("stableVersion") == "v2" and s,
        within=120,
        what="promotion",
    )
    assert done["phase"] == "Ready" and done["history"][-1]["result"] == "Promoted"
    events = _events(kubectl, ready_model)
    (passed,) = [e for e in events if e["reason"] == "QualityCheckPassed"]
    assert "label_agreement 1.0000 at or above the minimum 0.95" in passed["message"]
    assert [a for a in traffic.answers[mark:] if a[0] != 200] == []


def _pods(kubectl: Kubectl, name: str, version: str) -> set[str]:
    out = kubectl(
        "get", "pods", "-l", f"mmop.io/model={name},mmop.io/version={version}", "-o", "name"
    )
    return set(out.split())


def _env(kubectl: Kubectl, deployment: str) -> dict[str, str]:
    body = json.loads(kubectl("get", "deployment", deployment, "-o", "json"))
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value", "") for e in env}


def test_live_comparison_of_mirrored_requests_gates_the_steps(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    stable_pods = _pods(kubectl, ready_model, "v1")
    gate = {"mirrorPercent": 100, "minSamples": 3}
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2", quality=gate))

    def live_check() -> dict[str, Any] | None:
        rollout = status_of(kubectl, ready_model).get("rollout") or {}
        check: dict[str, Any] = (rollout.get("lastCheck") or {}).get("quality") or {}
        return check if check.get("source") == "live" and check["result"] == "Passed" else None

    check = wait_until(live_check, within=120, what="a passed live quality check")
    assert check["metric"] == "label_agreement" and check["threshold"] == 0.95
    assert check["samples"] >= 3 and check["score"] >= 0.95
    # only the canary mirrors, to the stable's Service; the stable was not touched
    canary_env = _env(kubectl, f"{ready_model}-v2")
    assert canary_env["MMOP_MIRROR_URL"] == (
        f"http://{ready_model}-v1.default.svc.cluster.local:8080"
    )
    assert canary_env["MMOP_MIRROR_PERCENT"] == "100"
    assert "MMOP_MIRROR_URL" not in _env(kubectl, f"{ready_model}-v1")
    assert _pods(kubectl, ready_model, "v1") == stable_pods
    canary_pods = _pods(kubectl, ready_model, "v2")
    done = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("stableVersion") == "v2" and s,
        within=120,
        what="promotion",
    )
    assert done["history"][-1]["result"] == "Promoted"
    # the promoted version keeps its pods (and so its mirror env)
    assert _pods(kubectl, ready_model, "v2") == canary_pods
    assert "MMOP_MIRROR_URL" in _env(kubectl, f"{ready_model}-v2")
    assert [a for a in traffic.answers[mark:] if a[0] != 200] == []


@pytest.mark.parametrize("router", ["Service", "GatewayAPI"])
def test_a_canary_that_answers_real_traffic_differently_is_stopped_by_the_live_comparison(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic, router: str
) -> None:
    """Right answers to the operator's own requests (test inference, golden set), wrong ones to
    real traffic (MMOP_FAULT_WRONG_ANSWERS, spared for the genuine smoke token): the golden set
    passes, the canary gets weight, and the mirrored comparisons roll it back."""
    mark = traffic.mark()
    manifest = model_manifest(
        ready_model,
        source=tiny_clip,
        version="v2",
        router=router,
        quality={"mirrorPercent": 100, "minSamples": 3},
    )
    manifest["spec"]["runtime"]["env"] = [
        {"name": contract.ENV_FAULT_WRONG_ANSWERS, "value": "true"},
        {"name": contract.ENV_FAULT_SPARE_SMOKE_TEST, "value": "true"},
    ]
    apply(kubectl, manifest)
    failed = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback by the live comparison",
    )
    assert failed["stableVersion"] == "v1" and failed.get("canaryVersion") is None
    last = failed["history"][-1]
    assert last["result"] == "RolledBack"
    assert last["reason"].startswith("QualityCheckFailed: "), last
    assert "live comparisons" in last["reason"] and "label_agreement 0.0000" in last["reason"]
    events = _events(kubectl, ready_model)
    # the golden set (the operator's own requests) passed: the live comparison stopped it
    (passed,) = [e for e in events if e["reason"] == "QualityCheckPassed"]
    assert "golden set" in passed["message"]
    assert [e for e in events if e["reason"] == "CanaryCheckFailed"]
    # the canary had weight, and the stable answered every request it got
    seen = traffic.since(mark)
    assert any(v == "v2" for (_, v) in seen), seen
    assert [a for a in traffic.answers[mark:] if a[1] == "v1" and a[0] != 200] == []
