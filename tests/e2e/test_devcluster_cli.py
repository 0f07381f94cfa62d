"""``mmop dev --demo`` as a user runs it: the demo model turns Ready in real kubectl, answers a
real inference through the router, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from mmop.devcluster import demo
from mmop.devcluster.cluster import free_port

READY_TIMEOUT = 300.0


def _output(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _kubectl(kubectl_bin: str, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_bin, *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_mmop_dev_demo(tmp_path: Path, kubectl_bin: str) -> None:
    state = tmp_path / "state"
    api_port, router_port = free_port(), free_port()
    log = tmp_path / "mmop-dev.out"
    command = [
        str(Path(sys.executable).with_name("mmop")),
        "dev",
        "--demo",
        "--state-dir",
        str(state),
        "--port",
        str(api_port),
        "--router-port",
        str(router_port),
    ]
    with log.open("wb") as out:
        dev = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    kubeconfig = state / "kubeconfig"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        ready = ""
        while ready != "True":
            if dev.poll() is not None:
                pytest.fail(f"mmop dev exited with {dev.returncode}:\n{_output(log)}")
            if time.monotonic() > deadline:
                operator_log = _output(state / "logs" / "operator.log")[-3000:]
                pytest.fail(
                    f"clip-demo not Ready after {READY_TIMEOUT:.0f}s:\n{_output(log)}\n"
                    f"operator log (end):\n{operator_log}"
                )
            time.sleep(2)
            if kubeconfig.exists():
                ready = _kubectl(
                    kubectl_bin,
                    kubeconfig,
                    "get",
                    "mmmodels",
                    "clip-demo",
                    "-o",
                    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                ).stdout

        table = _kubectl(kubectl_bin, kubeconfig, "get", "mmmodels")
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()[:2]
        assert header.split()[:3] == ["NAME", "READY", "PHASE"]
        assert row.split()[:3] == ["clip-demo", "True", "Ready"]

        progress_line = "default/clip-demo: phase=Ready ready=True stable=v1 replicas=1/1"
        for _ in range(50):  # the progress printer may be a moment behind kubectl
            if progress_line in _output(log):
                break
            time.sleep(0.2)
        printed = _output(log)
        assert progress_line in printed
        assert f"export KUBECONFIG={kubeconfig}" in printed
        assert f"http://127.0.0.1:{router_port}/v2/models/clip-demo/infer" in printed
        request = json.loads((state / "demo-request.json").read_text())
        assert request == demo.request_body()
        answer = httpx.post(
            f"http://127.0.0.1:{router_port}/v2/models/clip-demo/infer",
            json=request,
            headers={"Host": "clip-demo"},
            timeout=60,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Mmop-Version"] == "v1"
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["label"]["data"][0] in demo.LABELS

        children = psutil.Process(dev.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        assert any("mmop.operator" in c for c in commands), commands
        assert any("mmop.runtime" in c for c in commands), commands
    finally:
        if dev.poll() is None:
            children = psutil.Process(dev.pid).children(recursive=True)
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(90)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait(10)
                pytest.fail(f"mmop dev did not stop on SIGINT:\n{_output(log)}")
    assert dev.returncode == 0, _output(log)
    assert "mmop dev: stopped" in _output(log)
    left = [c for c in children if not _gone(c)]
    assert left == [], [c.cmdline() for c in left]
