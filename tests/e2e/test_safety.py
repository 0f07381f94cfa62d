"""End to end, issue 12's safety fixes with real runtime pods and traffic through the local
router: a canary that answers valid requests with 4xx is rolled back (stable unaffected), and
a status wiped mid-rollout is recovered from the Deployments without promoting anything."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

Kubectl = Callable[..., str]


def _reasons(kubectl: Kubectl, name: str) -> list[str]:
    events = kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return [e["reason"] for e in json.loads(events)["items"]]


def test_canary_answering_valid_requests_with_4xx_is_rolled_back(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    # v2 turns on bearer auth: the operator's test inference carries the token and passes,
    # the clients (who have none) get 401 on every request routed to v2.
    secret = f"{ready_model}-auth-{uuid.uuid4().hex[:4]}"
    kubectl("create", "secret", "generic", secret, "--from-literal=token=s3cret")
    mark = traffic.mark()
    v2 = model_manifest(ready_model, source=tiny_clip, version="v2")
    v2["spec"]["runtime"]["authSecretRef"] = {"name": secret, "key": "token"}
    apply(kubectl, v2)
    failed = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback",
    )
    assert failed["stableVersion"] == "v1"
    assert failed.get("canaryVersion") is None
    last = failed["history"][-1]
    assert (last["version"], last["result"]) == ("v2", "RolledBack")
    assert "error rate 100.00%" in last["reason"], last["reason"]
    # v2 really got traffic and refused it; the stable answered every request it got
    seen = traffic.since(mark)
    assert seen[(401, "v2")] > 0, seen
    assert [(code, v) for (code, v), n in seen.items() if v == "v1" and code != 200] == []
    assert "CanaryVerified" in _reasons(kubectl, ready_model)
    kubectl("delete", "secret", secret, check=False)


def test_status_wiped_mid_rollout_never_promotes_without_checks(
    kubectl: Kubectl, tiny_clip: Path, ready_model: str, traffic: Traffic
) -> None:
    # A long step interval: after its first step the canary waits, so nothing is due.
    apply(kubectl, model_manifest(ready_model, source=tiny_clip, version="v2", stepInterval="600s"))
    before = wait_until(
        lambda: (s := status_of(kubectl, ready_model)).get("canaryWeight") == 50 and s,
        within=120,
        what="canary at 50%",
    )
    stable_uid = kubectl("get", "deployment", f"{ready_model}-v1", "-o", "jsonpath={.metadata.uid}")
    # verifiedAt has one-second resolution: let that second pass, so that a fresh test
    # inference after the wipe is told apart from the first one by its timestamp.
    time.sleep(1.1)
    mark = traffic.mark()
    wipe = json.dumps({"status": dict.fromkeys(before)})
    kubectl(
        "patch",
        "multimodalmodel",
        ready_model,
        "--subresource=status",
        "--type=merge",
        "-p",
        wipe,
    )
    wait_until(
        lambda: "StatusRecovered" in _reasons(kubectl, ready_model),
        within=60,
        what="StatusRecovered event",
    )
    # The canary is verified again (a fresh test inference), then waits for its analysis.
    after = wait_until(
        lambda: (
            (s := status_of(kubectl, ready_model)).get("rollout", {}).get("verifiedAt")
            and s.get("canaryWeight") == 50
            and s
        ),
        within=90,
        what="canary verified again and back at its first step",
    )
    assert after["stableVersion"] == "v1"
    assert after["canaryVersion"] == "v2"
    assert after["rollout"]["verifiedAt"] > before["rollout"]["verifiedAt"]
    assert not [h for h in after.get("history", []) if h["result"] == "Promoted"]
    # The old stable's Deployment was never deleted or replaced; it served throughout.
    uid = kubectl("get", "deployment", f"{ready_model}-v1", "-o", "jsonpath={.metadata.uid}")
    assert uid == stable_uid
    assert [(code, v) for (code, v) in traffic.answers[mark:] if v == "v1" and code != 200] == []
    assert {v for _, v in traffic.answers[mark:]} >= {"v1"}
