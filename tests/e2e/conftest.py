"""One dev cluster (API server, kubelet, router) and one operator for the whole e2e session,
real `mmop-runtime` pods serving a tiny random-weight CLIP model, real kubectl."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mmop.devcluster.cluster import DevCluster
from mmop.operator import kube
from mmop.runtime.tinymodels import create_tiny_model
from tests.support.cluster import OPERATOR_ENV, apply
from tests.support.manifests import TASK, model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

# Runs after every other test of the session: it checks what the operator used all along.
RUN_LAST = ("test_operator_used_only_what_its_rbac_grants",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.name in RUN_LAST]
    items[:] = [item for item in items if item.name not in RUN_LAST] + last


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(TASK, tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="session")
def tiny_clip_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture as tiny_clip with other random weights: healthy, but different."""
    return create_tiny_model(TASK, tmp_path_factory.mktemp("models") / "clip-other", seed=4321)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    # Two fake GPUs on the local node: test_capacity's GPU models take both.
    with DevCluster(tmp_path_factory.mktemp("dev"), gpus=2, router_seed=11) as dev:
        dev.start_operator(env=OPERATOR_ENV)
        yield dev


@pytest.fixture(scope="session")
def kubectl(cluster: DevCluster, kubectl_bin: str) -> Callable[..., str]:
    def run(*args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [kubectl_bin, "--kubeconfig", str(cluster.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    return run


@pytest.fixture(scope="session")
def client(cluster: DevCluster) -> kube.KubeClient:
    return kube.KubeClient(kube.Connection.from_kubeconfig(str(cluster.kubeconfig)))


@pytest.fixture
def model_name() -> str:
    return f"m{uuid.uuid4().hex[:6]}"


@pytest.fixture
def router() -> str:
    """The ready_model's spec.traffic.router (a test parametrizes ``router`` for another)."""
    return "Istio"


@pytest.fixture
def ready_model(
    cluster: DevCluster,
    kubectl: Callable[..., str],
    tiny_clip: Path,
    model_name: str,
    router: str,
) -> Iterator[str]:
    """A model at v1, Ready, serving through the router; deleted afterwards."""
    apply(kubectl, model_manifest(model_name, source=tiny_clip, router=router))
    kubectl("wait", "--for=condition=Ready", f"multimodalmodel/{model_name}", "--timeout=180s")
    yield model_name
    kubectl("delete", "multimodalmodel", model_name, "--wait=false", check=False)
    wait_until(
        lambda: (
            not kubectl("get", "deployments", "-l", f"mmop.io/model={model_name}", "-o", "name")
        ),
        within=60,
        what="children deleted",
    )


@pytest.fixture
def traffic(cluster: DevCluster, ready_model: str) -> Iterator[Traffic]:
    t = Traffic(cluster.router_url, ready_model).start()
    yield t
    t.stop()
