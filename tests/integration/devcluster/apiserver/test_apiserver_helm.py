"""Real helm (v4) against the embedded API server: install, list, upgrade --wait, rollback,
uninstall."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.devcluster.apiserver import ServerHandle
from tests.support.wait import never

Waiter = Callable[..., Any]
MERGE = {"Content-Type": "application/merge-patch+json"}
GADGETS = "/apis/helm.example.com/v1/namespaces/default/gadgets"

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.helm.example.com}
spec:
  group: helm.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer}}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

TEMPLATES = """apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-settings}
data: {greeting: {{ .Values.greeting | quote }}}
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: helm.example.com/v1
kind: Gadget
metadata: {name: {{ .Release.Name }}}
spec: {size: {{ .Values.size }}}
"""


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chart") / "demo"
    (root / "templates").mkdir(parents=True)
    (root / "crds").mkdir()
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (root / "values.yaml").write_text("greeting: hello\nsize: 1\n")
    (root / "crds" / "gadgets.yaml").write_text(CRD)
    (root / "templates" / "all.yaml").write_text(TEMPLATES)
    return root


class Helm:
    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.argv = [binary, "--kubeconfig", str(kubeconfig), "-n", "default"]
        self.env = {
            **os.environ,
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, env=self.env, timeout=90
        )
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.argv, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@pytest.fixture(scope="module")
def helm(helm_bin: str, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_bin, kubeconfig, tmp_path_factory.mktemp("helm-home"))


def greeting(http: httpx.Client) -> str:
    value: str = http.get("/api/v1/namespaces/default/configmaps/demo-settings").json()["data"][
        "greeting"
    ]
    return value


def test_helm_lifecycle(
    helm: Helm, chart: Path, http: httpx.Client, apiserver: ServerHandle, wait_until: Waiter
) -> None:
    assert "STATUS: deployed" in helm("install", "demo", str(chart))
    assert greeting(http) == "hello"
    assert http.get("/api/v1/namespaces/default/services/demo").json()["spec"]["clusterIP"]
    gadget = http.get(f"{GADGETS}/demo").json()
    assert gadget["spec"] == {"size": 1}
    releases = http.get(
        "/api/v1/namespaces/default/secrets", params={"labelSelector": "owner=helm"}
    ).json()
    assert [s["metadata"]["name"] for s in releases["items"]] == ["sh.helm.release.v1.demo.v1"]
    listed = helm("list")
    assert "demo" in listed and "deployed" in listed

    # upgrade --wait: helm waits until the Gadget's status reports the new generation
    http.patch(f"{GADGETS}/demo/status", headers=MERGE, json={"status": {"observedGeneration": 1}})
    upgrade = helm.start(
        "upgrade",
        "demo",
        str(chart),
        "--set",
        "greeting=bye",
        "--set",
        "size=2",
        "--wait",
        "--timeout",
        "60s",
    )
    wait_until(
        lambda: http.get(f"{GADGETS}/demo").json()["metadata"]["generation"] == 2, timeout=30
    )
    # helm keeps waiting while the status lags (checked throughout, not once after a sleep)
    never(
        lambda: upgrade.poll() is not None,
        during=1.0,
        what="helm upgrade --wait returned before observedGeneration caught up",
        every=0.05,
    )
    http.patch(f"{GADGETS}/demo/status", headers=MERGE, json={"status": {"observedGeneration": 2}})
    out, err = upgrade.communicate(timeout=60)
    assert upgrade.returncode == 0, err
    assert "has been upgraded" in out
    assert greeting(http) == "bye" and http.get(f"{GADGETS}/demo").json()["spec"] == {"size": 2}

    helm("rollback", "demo", "1")
    assert greeting(http) == "hello" and http.get(f"{GADGETS}/demo").json()["spec"] == {"size": 1}
    history = helm("history", "demo")
    assert "Rollback to 1" in history

    helm("uninstall", "demo", "--wait", "--timeout", "30s")
    for path in (
        "/api/v1/namespaces/default/configmaps/demo-settings",
        "/api/v1/namespaces/default/services/demo",
        f"{GADGETS}/demo",
    ):
        assert http.get(path).status_code == 404, path
    assert "demo" not in helm("list")
    assert (
        http.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.helm.example.com"
        ).status_code
        == 200
    )
    agents = {r.user_agent.split("/")[0] for r in apiserver.audit.records()}
    assert "Helm" in agents
