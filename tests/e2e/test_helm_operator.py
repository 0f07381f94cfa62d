"""The chart's operator at work: `helm install` into a fresh dev cluster, whose kubelet runs the
chart's operator pod as it is configured (its command, args and env); a MultimodalModel applied
with real kubectl is reconciled by that operator; `helm uninstall` stops it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mmop.devcluster.cluster import DevCluster
from tests.support.cluster import apply
from tests.support.manifests import model_manifest
from tests.support.traffic import infer_body
from tests.support.wait import never, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """A dev cluster with no operator of its own."""
    with DevCluster(tmp_path_factory.mktemp("helm-dev")) as dev:
        yield dev


def test_chart_installed_operator_reconciles_a_model(
    bare_cluster: DevCluster, helm_bin: str, kubectl_bin: str, tiny_clip: Path
) -> None:
    env_args = ["--kubeconfig", str(bare_cluster.kubeconfig)]

    def helm(*args: str) -> str:
        result = subprocess.run(
            [helm_bin, *env_args, *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def kubectl(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [kubectl_bin, *env_args, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    helm(
        "install",
        "mmop",
        str(ROOT / "charts" / "mmop"),
        "-n",
        "mmop-system",
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
        "--set",
        "operator.resyncSeconds=2",
    )
    pods = kubectl("get", "pods", "-n", "mmop-system", "-o", "name")
    assert pods.strip(), "the chart created no operator pod"
    name = "helm-clip"
    apply(kubectl, model_manifest(name, source=tiny_clip))
    kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
    response = httpx.post(
        f"{bare_cluster.router_url}/v2/models/{name}/infer", json=infer_body(), timeout=30
    )
    assert response.status_code == 200, response.text

    helm("uninstall", "mmop", "-n", "mmop-system", "--wait")
    wait_until(
        lambda: not kubectl("get", "pods", "-n", "mmop-system", "-o", "name").strip(),
        within=60,
        what="operator pod gone",
    )
    # no operator any more: a new version is not rolled out
    apply(kubectl, model_manifest(name, source=tiny_clip, version="v2"))
    never(
        lambda: "v2" in kubectl("get", "deployments", "-l", f"mmop.io/model={name}", "-o", "name"),
        during=6,
        what="a v2 Deployment without an operator",
        every=1.0,
    )
