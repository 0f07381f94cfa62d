"""``python -m mmop.devcluster.apiserver`` in a subprocess: it serves, writes a kubeconfig,
and stops on SIGTERM."""

from __future__ import annotations

import base64
import signal
import ssl
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
        assert url.startswith("https://127.0.0.1:")
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        assert cluster["server"] == url
        ca = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        assert httpx.get(f"{url}/readyz", verify=ca).text == "ok"
        token = config["users"][0]["user"]["token"]
        assert httpx.get(f"{url}/api", verify=ca).status_code == 401
        api = httpx.get(f"{url}/api", verify=ca, headers={"Authorization": f"Bearer {token}"})
        assert api.json()["kind"] == "APIVersions"
        assert config["contexts"][0]["context"]["namespace"] == "team"
        assert config["current-context"] == config["contexts"][0]["name"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
