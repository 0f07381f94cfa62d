"""End to end on `mmop dev`'s control plane: real operator, real runtime pods, real kubectl,
traffic through the local router. Apply -> Ready; canary -> promoted; canary with injected
errors or a model that cannot load -> rolled back with the stable serving every request; a
canary no node has GPUs for -> held, nothing Pending; operator killed mid-rollout -> resumes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mmop.devcluster.cluster import DevCluster
from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic, infer_body
from tests.support.wait import never, wait_until

Kubectl = Callable[..., str]


def _columns(kubectl: Kubectl, name: str) -> dict[str, str]:
    header, row = kubectl("get", "mmmodels", name).strip().splitlines()
    # Columns are aligned: cut the row where each header starts.
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


def _stable_failures(traffic: Traffic, mark: int, stable: str) -> list[tuple[int, str]]:
    return [(code, v) for code, v in traffic.answers[mark:] if v == stable and code != 200]


def test_apply_then_get_mmmodels(cluster: DevCluster, kubectl: Kubectl, ready_model: str) -> None:
    columns = _columns(kubectl, ready_model)
    assert list(columns) == [
        "NAME",
        "READY",
        "PHASE",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "REPLICAS",
        "URL",
        "AGE",
    ]
    assert columns["READY"] == "True"
    assert columns["PHASE"] == "Ready"
    assert columns["STABLE"] == "v1"
    assert columns["WEIGHT"] == "0"
    assert columns["REPLICAS"] == "1"
    assert columns["URL"] == f"http://{ready_model}.default.svc.cluster.local"
    # the short name works too, and the model answers a real inference through the router
    assert ready_model in kubectl("get", "mmm")
    response = httpx.post(
        f"{cluster.router_url}/v2/models/{ready_model}/infer", json=infer_body(), timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Mmop-Version"] == "v1"
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["scores"]["shape"] == [1, 2]


def test_canary_is_promoted_step_by_step(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2"))
    half = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("canaryWeight") == 50 and s,
        within=120,
        what="canary at 50%",
    )
    assert half["phase"] == "Progressing"
    assert half["rollout"]["verifiedAt"]
    # traffic really splits while the canary holds 50%
    split_mark = traffic.mark()
    wait_until(
        lambda: {v for _, v in traffic.answers[split_mark:]} >= {"v1", "v2"},
        within=30,
        what="answers from both versions",
    )
    done = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("stableVersion") == "v2" and s,
        within=120,
        what="promotion",
    )
    assert done["phase"] == "Ready"
    assert done.get("canaryVersion") is None
    assert done["history"][-1]["result"] == "Promoted"
    # after promotion (and the scale-down delay) only v2 answers and v1 is gone
    wait_until(
        lambda: (
            not kubectl(
                "get", "deployment", f"{ready_model}-v1", "--ignore-not-found", "-o", "name"
            )
        ),
        within=60,
        what="v1 scaled down",
    )
    after = traffic.mark()
    wait_until(lambda: traffic.mark() > after + 10, within=30, what="more traffic")
    assert {v for _, v in traffic.answers[after:]} == {"v2"}
    failures = [a for a in traffic.answers[mark:] if a[0] != 200]
    assert failures == []
    events = kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={ready_model}", "-o", "json"
    )
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"CanaryCreated", "CanaryVerified", "CanaryWeight", "Promoted"} <= reasons


def test_canary_with_errors_is_rolled_back(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    bad = model_manifest(ready_model, source=tiny_clip, version="v2")
    # Spare the operator's test inference, so the canary is verified, gets traffic and fails the
    # analysis (a broken version that fails its test inference is the next test's case).
    bad["spec"]["runtime"]["env"] = [
        {"name": "MMOP_FAULT_ERROR_RATE", "value": "0.6"},
        {"name": "MMOP_FAULT_SPARE_SMOKE_TEST", "value": "true"},
    ]
    apply(kubectl, bad)
    failed = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback",
    )
    assert failed["stableVersion"] == "v1"
    assert failed.get("canaryVersion") is None
    assert failed["canaryWeight"] == 0
    assert failed["history"][-1]["result"] == "RolledBack"
    assert "error rate" in failed["history"][-1]["reason"]
    progressing = next(c for c in failed["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "RolledBack"
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    # the canary did get traffic (and failed some of it); the stable failed none
    seen = traffic.since(mark)
    assert any(v == "v2" for (_, v) in seen)
    assert _stable_failures(traffic, mark, "v1") == []
    wait_until(
        lambda: (
            not kubectl(
                "get", "deployment", f"{ready_model}-v2", "--ignore-not-found", "-o", "name"
            )
        ),
        within=60,
        what="canary removed",
    )


def test_canary_that_cannot_load_is_rolled_back(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    broken = model_manifest(
        ready_model,
        source=tiny_clip.parent / "no-such-model",
        version="v2",
        progressDeadlineSeconds=30,
    )
    apply(kubectl, broken)
    failed = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback",
    )
    reason = failed["history"][-1]["reason"]
    assert "ProgressDeadlineExceeded" in reason
    assert "restarted" in reason or "CrashLoopBackOff" in reason, reason
    # the canary never got weight: every request went to the stable and succeeded
    seen = traffic.since(mark)
    assert seen and all(v == "v1" and code == 200 for (code, v) in seen), seen


def test_canary_no_node_can_hold_waits_instead_of_pending(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    mark = traffic.mark()
    greedy = model_manifest(ready_model, source=tiny_clip, version="v2", progressDeadlineSeconds=10)
    greedy["spec"]["resources"]["gpu"] = 3  # the dev node has two
    apply(kubectl, greedy)
    held = wait_until(
        lambda: (
            (s := status_of(kubectl, ready_model))
            .get("rollout", {})
            .get("capacity", {})
            .get("held")
            and s
        ),
        within=60,
        what="the canary held for GPUs",
    )
    progressing = next(c for c in held["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "InsufficientGPU")
    assert "needs 3 nvidia.com/gpu per pod" in held["message"], held["message"]
    assert "the largest has 2" in held["message"], held["message"]
    # Past progressDeadlineSeconds (10 s) and more: a hold is not a failure.
    never(
        lambda: (
            (s := status_of(kubectl, ready_model))["phase"] != "Progressing" or s.get("history")
        ),
        during=15,
        what="the held canary failed or was rolled back",
    )
    # no canary pod was made to sit Pending; the stable served everything
    pods = kubectl(
        "get", "pods", "-l", f"mmop.io/model={ready_model},mmop.io/version=v2", "-o", "name"
    )
    assert pods.strip() == ""
    assert _stable_failures(traffic, mark, "v1") == []
    assert all(v == "v1" for (_, v) in traffic.since(mark))


def test_operator_restart_mid_rollout_resumes(
    cluster: DevCluster, kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2", stepInterval="8s"))
    wait_until(
        lambda: status_of(kubectl, ready_model).get("canaryWeight") == 50,
        within=120,
        what="canary at 50%",
    )
    cluster.kill_operator()  # SIGKILL: no clean shutdown
    frozen = status_of(kubectl, ready_model)
    time.sleep(10)  # longer than a step interval: nothing may move without the operator
    assert status_of(kubectl, ready_model)["canaryWeight"] == frozen["canaryWeight"] == 50
    cluster.start_operator(env={"MMOP_OPERATOR_RESYNC_SECONDS": "2"})
    done = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("stableVersion") == "v2" and s,
        within=120,
        what="promotion after restart",
    )
    promoted = [h for h in done["history"] if h["result"] == "Promoted"]
    assert [h["version"] for h in promoted] == ["v2"]
    # it resumed where it was: the canary was created and verified once, not again
    events = json.loads(
        kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={ready_model}", "-o", "json"
        )
    )["items"]
    reasons = [e["reason"] for e in events]
    assert reasons.count("CanaryCreated") == 1
    assert reasons.count("CanaryVerified") == 1
