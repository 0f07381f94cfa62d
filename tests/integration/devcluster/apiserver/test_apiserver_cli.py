"""``python -m mmop.devcluster.apiserver`` in a subprocess: it serves, writes a kubeconfig,
and stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml


def test_cli_serves_and_writes_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmop.devcluster.apiserver",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            "team",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/readyz").text == "ok"
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        assert config["contexts"][0]["context"]["namespace"] == "team"
        assert config["current-context"] == config["contexts"][0]["name"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
