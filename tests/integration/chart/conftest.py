"""Fixtures for the chart's integration tests: a fresh embedded API server per test, and real
helm and kubectl pointed at it through a kubeconfig."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mmop.devcluster.apiserver import ApiServer, write_kubeconfig

ROOT = Path(__file__).resolve().parents[3]


class CommandError(Exception):
    """helm or kubectl exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Cluster:
    """helm and kubectl against one API server."""

    helm_bin: str
    kubectl_bin: str
    env: dict[str, str]
    chart: Path = ROOT / "charts" / "mmop"
    root: Path = ROOT
    Error: ClassVar[type[Exception]] = CommandError

    def _run(self, *argv: str) -> str:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, env=self.env, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise CommandError(f"{' '.join(argv[:3])}: {proc.stderr.strip() or proc.stdout}")
        return proc.stdout

    def helm(self, *args: str) -> str:
        return self._run(self.helm_bin, *args)

    def kubectl(self, *args: str) -> str:
        return self._run(self.kubectl_bin, *args)

    def get(self, kind: str, name: str = "", *, namespace: str | None = None) -> dict[str, Any]:
        """``kubectl get KIND [NAME] -o json``: the object, or a List."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        result: dict[str, Any] = json.loads(self.kubectl(*args))
        return result

    def names(self, kind: str, *, namespace: str | None = None) -> set[str]:
        """Names of the KIND objects in a namespace, or everywhere."""
        scope = ["-n", namespace] if namespace else ["-A"]
        items = json.loads(self.kubectl("get", kind, *scope, "-o", "json"))["items"]
        return {item["metadata"]["name"] for item in items}


@pytest.fixture
def cluster(helm_bin: str, kubectl_bin: str, tmp_path: Path) -> Iterator[Cluster]:
    with ApiServer.start_in_thread() as server:
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig", server.url, token=server.token, ca_pem=server.ca_pem
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            # helm's own state stays in the test's folder
            "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
            "HELM_DATA_HOME": str(tmp_path / "helm-data"),
        }
        yield Cluster(helm_bin=helm_bin, kubectl_bin=kubectl_bin, env=env)
