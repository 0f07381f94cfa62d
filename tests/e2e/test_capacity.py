"""End to end, GPU-scarce rollouts (spec.rollout.capacity) on the dev node's two fake GPUs,
both taken by a stable of two replicas: Auto swaps the new version in replica by replica and
promotes it with no failed request; a canary that fails mid-swap gives every replica back;
Surge holds with InsufficientGPU and no Pending pod, and starts by itself once a GPU frees."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmop.devcluster.cluster import DevCluster
from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

Kubectl = Callable[..., str]


def _gpu_model(name: str, source: Path, version: str, **rollout: Any) -> dict[str, Any]:
    manifest = model_manifest(name, source=source, version=version, **rollout)
    manifest["spec"]["resources"]["gpu"] = 1
    manifest["spec"]["replicas"] = 2
    return manifest


def _pods(kubectl: Kubectl, name: str, version: str) -> list[dict[str, Any]]:
    out = kubectl(
        "get", "pods", "-l", f"mmop.io/model={name},mmop.io/version={version}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _reasons(kubectl: Kubectl, name: str) -> list[str]:
    events = kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return [e["reason"] for e in json.loads(events)["items"]]


def _ready(kubectl: Kubectl, name: str, version: str) -> int:
    out = kubectl(
        "get",
        "deployment",
        f"{name}-{version}",
        "--ignore-not-found",
        "-o",
        "jsonpath={.spec.replicas}/{.status.readyReplicas}",
    )
    desired, _, ready = out.partition("/")
    return int(ready or 0) if desired == ready else -1


@pytest.fixture
def gpu_model(
    cluster: DevCluster, kubectl: Kubectl, tiny_clip: Path, model_name: str
) -> Iterator[str]:
    """v1 with two replicas of one GPU each: every GPU of the dev node is taken."""
    apply(kubectl, _gpu_model(model_name, tiny_clip, "v1"))
    kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{model_name}", "--timeout=180s")
    wait_until(lambda: _ready(kubectl, model_name, "v1") == 2, within=120, what="v1 2/2 ready")
    yield model_name
    kubectl("delete", "multimodalmodel", model_name, "--wait=false", check=False)
    wait_until(
        lambda: not kubectl("get", "pods", "-l", f"mmop.io/model={model_name}", "-o", "name"),
        within=90,
        what="pods gone (their GPUs free for the next test)",
    )


def test_no_spare_gpu_swaps_promotes_and_a_failed_canary_gives_back_every_replica(
    cluster: DevCluster, kubectl: Kubectl, tiny_clip: Path, gpu_model: str
) -> None:
    name = gpu_model
    traffic = Traffic(cluster.router_url, name).start()
    try:
        mark = traffic.mark()
        apply(kubectl, _gpu_model(name, tiny_clip, "v2"))
        seen: list[dict[str, Any]] = []

        def promoted() -> dict[str, Any] | None:
            status = status_of(kubectl, name)
            capacity = (status.get("rollout") or {}).get("capacity")
            if capacity:
                seen.append(capacity)
            return status if status.get("stableVersion") == "v2" else None

        done = wait_until(promoted, within=180, what="v2 promoted", every=1)
        assert done["history"][-1]["result"] == "Promoted"
        assert {c.get("mode") for c in seen} == {"Swap"}, seen
        assert max(c.get("lentReplicas", 0) for c in seen) == 1  # the stable kept one replica
        assert not [c for c in seen if c.get("held")]
        assert {"ReplicaLent", "CanaryVerified", "Promoted"} <= set(_reasons(kubectl, name))
        # the new stable gets the old one's GPUs: two replicas again
        wait_until(lambda: _ready(kubectl, name, "v2") == 2, within=120, what="v2 2/2 ready")
        failures = [a for a in traffic.answers[mark:] if a[0] != 200]
        assert failures == [], failures
        assert {v for _, v in traffic.answers[mark:]} >= {"v1", "v2"}

        # A canary that never comes up while it holds a lent replica: rolled back, and the
        # stable gets every replica back.
        mark = traffic.mark()
        broken = _gpu_model(name, tiny_clip.parent / "no-such-model", "v3")
        broken["spec"]["rollout"]["progressDeadlineSeconds"] = 15
        apply(kubectl, broken)
        wait_until(
            lambda: (
                ((status_of(kubectl, name).get("rollout") or {}).get("capacity") or {}).get(
                    "lentReplicas"
                )
                == 1
            ),
            within=60,
            what="v2 lends a replica to v3",
        )
        failed = wait_until(
            lambda: (s := status_of(kubectl, name)).get("phase") == "Failed" and s,
            within=120,
            what="v3 rolled back",
        )
        assert failed["stableVersion"] == "v2"
        assert "ProgressDeadlineExceeded" in failed["history"][-1]["reason"]
        wait_until(lambda: _ready(kubectl, name, "v2") == 2, within=120, what="v2 2/2 ready again")
        wait_until(lambda: not _pods(kubectl, name, "v3"), within=60, what="v3 pods gone")
        assert [a for a in traffic.answers[mark:] if a[0] != 200] == []
        assert {v for _, v in traffic.answers[mark:]} == {"v2"}
    finally:
        traffic.stop()


def test_surge_holds_without_pending_pods_then_starts_when_a_gpu_frees(
    kubectl: Kubectl, tiny_clip: Path, gpu_model: str
) -> None:
    name = gpu_model
    apply(kubectl, _gpu_model(name, tiny_clip, "v2", capacity="Surge"))
    held = wait_until(
        lambda: (
            ((s := status_of(kubectl, name)).get("rollout") or {}).get("capacity", {}).get("held")
            and s
        ),
        within=60,
        what="the canary held for GPUs",
    )
    progressing = next(c for c in held["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "InsufficientGPU")
    assert "needs 1 nvidia.com/gpu per pod, 0 free" in held["message"], held["message"]
    capacity = held["rollout"]["capacity"]
    assert (capacity["mode"], capacity["gpusNeeded"], capacity["gpusFree"]) == ("Surge", 1, 0)
    assert capacity.get("lentReplicas", 0) == 0
    assert "InsufficientGPU" in _reasons(kubectl, name)
    assert _pods(kubectl, name, "v2") == []  # nothing sits Pending
    assert _ready(kubectl, name, "v1") == 2  # Surge takes nothing from the stable

    # Someone frees a GPU (the stable scaled to one replica): the rollout starts by itself.
    kubectl("patch", "multimodalmodel", name, "--type=merge", "-p", '{"spec":{"replicas":1}}')
    verified = wait_until(
        lambda: (s := status_of(kubectl, name)).get("rollout", {}).get("verifiedAt") and s,
        within=120,
        what="the canary created and verified",
    )
    assert not verified["rollout"]["capacity"].get("held")
    assert "GPUsAvailable" in _reasons(kubectl, name)
    pods = _pods(kubectl, name, "v2")
    assert pods and all(p["spec"].get("nodeName") for p in pods)
