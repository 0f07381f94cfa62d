"""No pod outlives its dev cluster, even when the cluster's process is killed outright."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml


def _runtime_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "mmop.runtime.cli" in " ".join(c.cmdline())]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkill_of_mmop_dev_kills_its_pods(
    tmp_path: Path,
    make_deployment: Callable[..., dict[str, Any]],
    wait_for: Callable[..., Any],
) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(make_deployment("crash-test")))
    command = [
        str(Path(sys.executable).with_name("mmop")),
        "dev",
        "--no-operator",
        "--router-port",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
        "-f",
        str(manifest),
    ]
    with (tmp_path / "out.log").open("wb") as out:
        dev = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    pods: list[psutil.Process] = []
    try:
        pods += wait_for(lambda: _runtime_children(dev.pid), "the pod's process")
        dev.send_signal(signal.SIGKILL)
        dev.wait(30)
        wait_for(
            lambda: all(map(_gone, pods)), "the pod's process to die with mmop dev", timeout=30
        )
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(30)
        for process in pods:  # a failed test must not leave a pod behind either
            if not _gone(process):
                process.kill()
