"""One dev cluster (API server, kubelet, router) and one operator for the whole e2e session,
real `mmop-runtime` pods serving a tiny random-weight CLIP model, real kubectl."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mmop.devcluster.cluster import DevCluster
from mmop.operator import kube
from mmop.runtime import contract
from mmop.runtime.tinymodels import create_tiny_model

TASK = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
OPERATOR_ENV = {"MMOP_OPERATOR_RESYNC_SECONDS": "2"}
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


def model_manifest(
    name: str,
    *,
    source: Path,
    version: str = "v1",
    namespace: str = "default",
    router: str = "Istio",
    **rollout: Any,
) -> dict[str, Any]:
    """A CPU-only MultimodalModel with a fast rollout for tests."""
    return {
        "apiVersion": "mmop.io/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "version": version,
            "model": {"source": f"file://{source}", "task": TASK},
            "runtime": {"batching": {"maxBatchSize": 8, "maxDelayMs": 2}},
            "resources": {"gpu": 0, "cpu": "500m", "memory": "2Gi"},
            "replicas": 1,
            "traffic": {"router": router},
            "rollout": {
                "steps": [50, 100],
                "stepInterval": "4s",
                "maxFailedChecks": 2,
                "progressDeadlineSeconds": 90,
                "scaleDownDelaySeconds": 3,
                "analysis": {"minRequests": 5, "maxErrorRate": 0.05, "maxLatencyP99Ms": 10000},
                **rollout,
            },
        },
    }


def apply(kubectl: Callable[..., str], manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


def status_of(kubectl: Callable[..., str], name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "multimodalmodel", name, "-o", "json"))
    status: dict[str, Any] = body.get("status") or {}
    return status


def wait_for(probe: Callable[[], Any], *, within: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last: {last!r}")


def infer_body() -> dict[str, Any]:
    return contract.smoke_test_request(TASK) | {"id": "e2e"}


@dataclass
class Traffic:
    """Requests through the local router in a background thread, by answering version."""

    router_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        body = infer_body()
        with httpx.Client(base_url=self.router_url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    r = http.post(
                        contract.infer_path(self.model),
                        json=body,
                        headers={"Host": f"{self.model}.default", **self.headers},
                    )
                    self.answers.append((r.status_code, r.headers.get("X-Mmop-Version", "")))
                except httpx.HTTPError:
                    self.answers.append((0, ""))
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def mark(self) -> int:
        return len(self.answers)

    def since(self, mark: int) -> Counter[tuple[int, str]]:
        return Counter(self.answers[mark:])


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
    wait_for(
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
