"""End to end: `kubectl mmop rollout promote` promotes a verified canary of real runtime pods at
once, and `kubectl mmop rollout abort` rolls the next one back (the kubectl plugin, found by
real kubectl on PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmop.devcluster.cluster import DevCluster
from tests.support.cluster import apply, status_of
from tests.support.manifests import model_manifest
from tests.support.wait import wait_until

Kubectl = Callable[..., str]
# Steps so slow that only a command moves this rollout within the test.
SLOW = {"steps": [10, 50, 100], "stepInterval": "600s"}


def _plugin(cluster: DevCluster, kubectl_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [kubectl_bin, "mmop", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _verified_canary(kubectl: Kubectl, name: str, version: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = status_of(kubectl, name)
        rollout = status.get("rollout") or {}
        ok = status.get("canaryVersion") == version and rollout.get("verifiedAt")
        return status if ok else None

    found: dict[str, Any] = wait_until(probe, within=180, what=f"canary {version} verified")
    return found


def test_promote_then_abort_with_kubectl_plugin(
    cluster: DevCluster, kubectl: Kubectl, kubectl_bin: str, tiny_clip: Path, model_name: str
) -> None:
    name = model_name
    apply(kubectl, model_manifest(name, source=tiny_clip, **SLOW))
    try:
        kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
        apply(kubectl, model_manifest(name, source=tiny_clip, version="v2", **SLOW))
        assert _verified_canary(kubectl, name, "v2")["canaryWeight"] == 10

        promoted = _plugin(cluster, kubectl_bin, "rollout", "promote", name, "--wait", "60")
        assert promoted.returncode == 0, promoted.stderr
        assert "version v2 promoted to stable" in promoted.stdout
        status = status_of(kubectl, name)
        assert (status["stableVersion"], status.get("canaryVersion")) == ("v2", None)
        assert status["history"][-1]["result"] == "Promoted"

        apply(kubectl, model_manifest(name, source=tiny_clip, version="v3", **SLOW))
        _verified_canary(kubectl, name, "v3")
        aborted = _plugin(cluster, kubectl_bin, "rollout", "abort", name, "--wait", "60")
        assert aborted.returncode == 0, aborted.stderr
        failed = wait_until(
            lambda: status_of(kubectl, name).get("phase") == "Failed",
            within=60,
            what="phase Failed after abort",
        )
        assert failed
        status = status_of(kubectl, name)
        assert (status["stableVersion"], status.get("canaryVersion")) == ("v2", None)
        assert status["history"][-1]["result"] == "RolledBack"
        assert "Aborted" in status["history"][-1]["reason"]
        wait_until(
            lambda: (
                not kubectl("get", "deployment", f"{name}-v3", "--ignore-not-found", "-o", "name")
            ),
            within=60,
            what="the aborted canary's Deployment removed",
        )
        reasons = kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "jsonpath={.items[*].reason}",
        )
        assert "Promoted" in reasons and "Aborted" in reasons
    finally:
        kubectl("delete", "multimodalmodel", name, "--wait=false", check=False)
