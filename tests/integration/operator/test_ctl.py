"""`mmop rollout ...`, `mmop get` and the kubectl plugin `kubectl mmop` against the embedded API
server with the real operator: requests are acknowledged in status, refusals say why."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmop.operator import kube
from mmop.operator.rollout import commands
from tests.support.manifests import example
from tests.support.operator import OperatorProcess, more_passes
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.usefixtures("operator")
BIN = Path(sys.executable).parent


def _env(kubeconfig: Path) -> dict[str, str]:
    # kubectl finds plugins on PATH: the venv's bin holds kubectl-mmop.
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}


def _run(args: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=90, env=_env(kubeconfig), check=False
    )


async def _create(client: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    doc = example("clip.yaml", namespace=namespace)
    doc["metadata"]["name"] = name
    return await client.create(kube.MULTIMODAL_MODEL, doc)


async def test_kubectl_plugin_promote_without_canary_is_refused(
    client: kube.KubeClient, namespace: str, kubeconfig: Path, kubectl_bin: str
) -> None:
    await _create(client, namespace, "clip")
    result = _run([kubectl_bin, "mmop", "rollout", "promote", "clip", "-n", namespace], kubeconfig)
    assert result.returncode == 1, result
    assert "promote refused: no canary to promote" in result.stderr
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    last = body["status"]["lastCommand"]
    assert (last["command"], last["result"]) == ("promote", "Refused")
    assert body["metadata"]["annotations"][commands.ANNOTATION].endswith("/" + last["id"])

    async def refused_event() -> list[dict[str, Any]]:
        events = await client.list_items(kube.EVENT, namespace=namespace)
        return [e for e in events if e.get("reason") == "CommandRefused"]

    await wait_until_async(refused_event, what="a CommandRefused Event")


async def test_abort_without_rollout_is_refused_and_acknowledged_once(
    client: kube.KubeClient, namespace: str, kubeconfig: Path, operator: OperatorProcess
) -> None:
    await _create(client, namespace, "clip")
    result = _run([str(BIN / "mmop"), "rollout", "abort", "clip", "-n", namespace], kubeconfig)
    assert result.returncode == 1 and "abort refused: no rollout in progress" in result.stderr
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    acknowledged = body["status"]["lastCommand"]
    # More passes (resync 2 s) never handle the same request again.
    await more_passes(operator, 2)
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    assert body["status"]["lastCommand"] == acknowledged


async def test_pause_and_resume_set_the_spec(
    client: kube.KubeClient, namespace: str, kubeconfig: Path
) -> None:
    await _create(client, namespace, "clip")
    mmop = str(BIN / "mmop")
    paused = _run([mmop, "rollout", "pause", "clip", "-n", namespace], kubeconfig)
    assert paused.returncode == 0 and "paused" in paused.stdout
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    assert body["spec"]["rollout"]["paused"] is True
    resumed = _run([mmop, "rollout", "resume", "clip", "-n", namespace], kubeconfig)
    assert resumed.returncode == 0
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    assert body["spec"]["rollout"]["paused"] is False


async def test_unknown_model_is_a_clear_error(namespace: str, kubeconfig: Path) -> None:
    result = _run([str(BIN / "mmop"), "get", "nope", "-n", namespace], kubeconfig)
    assert result.returncode == 1
    assert f'multimodalmodel "nope" not found in namespace {namespace}' in result.stderr


async def test_get_prints_the_tree_and_watch_redraws(
    client: kube.KubeClient, namespace: str, kubeconfig: Path
) -> None:
    await _create(client, namespace, "clip")

    async def deploying() -> bool:
        body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
        return (body.get("status") or {}).get("stableVersion") == "v1"

    await wait_until_async(deploying, what="the operator's first pass")
    once = _run([str(BIN / "mmop"), "get", "clip", "-n", namespace], kubeconfig)
    assert once.returncode == 0, once.stderr
    assert "Name:" in once.stdout and "clip" in once.stdout
    assert "# v1 (stable)" in once.stdout
    assert "⧉ clip-v1" in once.stdout  # the Deployment under its version

    watcher = await asyncio.create_subprocess_exec(
        str(BIN / "mmop"),
        "get",
        "clip",
        "-n",
        namespace,
        "--watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(kubeconfig),
    )
    lines: list[str] = []

    async def read_until(text: str) -> None:
        assert watcher.stdout is not None
        while True:
            line = (await asyncio.wait_for(watcher.stdout.readline(), timeout=60)).decode()
            assert line, f"the watcher ended early: {''.join(lines)}"
            lines.append(line)
            if text in line:
                return

    try:
        await read_until("Name:")
        await read_until("INFO")  # the first frame's tree header: the watch starts after it
        await client.patch(
            kube.MULTIMODAL_MODEL,
            name="clip",
            namespace=namespace,
            patch={"metadata": {"labels": {"redraw": "please"}}},
        )
        await read_until("Name:")  # redrawn on the change
        await client.delete(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
        await read_until("multimodalmodel clip deleted")
        assert await asyncio.wait_for(watcher.wait(), timeout=30) == 0
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


async def test_kubectl_explain_describes_the_pod_settings(
    client: kube.KubeClient, kubeconfig: Path, kubectl_bin: str
) -> None:
    explained = _run([kubectl_bin, "explain", "multimodalmodels.spec.pod"], kubeconfig)
    assert explained.returncode == 0, explained.stderr
    assert "serviceAccountName" in explained.stdout and "imagePullSecrets" in explained.stdout
    assert "cloud identity" in explained.stdout
    spread = _run(
        [kubectl_bin, "explain", "multimodalmodels.spec.scheduling.topologySpreadConstraints"],
        kubeconfig,
    )
    assert spread.returncode == 0 and "whenUnsatisfiable" in spread.stdout


async def test_api_server_takes_a_date_version_and_refuses_reserved_pod_labels(
    client: kube.KubeClient, namespace: str
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["version"] = "2026-01"
    doc["spec"]["pod"] = {"labels": {"team": "search"}}
    await client.create(kube.MULTIMODAL_MODEL, doc)
    bad = example("clip.yaml", namespace=namespace)
    bad["metadata"]["name"] = "clip-bad"
    bad["spec"]["pod"] = {"labels": {"mmop.io/model": "other"}}
    with pytest.raises(kube.ApiError) as info:
        await client.create(kube.MULTIMODAL_MODEL, bad)
    assert info.value.status == 422
    assert "spec.pod.labels" in str(info.value)
