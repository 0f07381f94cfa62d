"""Shared by the dev cluster's integration tests: one tiny CLIP model and one DevCluster per
session (one GPU on its node), an HTTP client for its API server, and builders of Deployments
that run the real ``mmop-runtime``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.devcluster.cluster import DevCluster
from mmop.runtime import contract
from tests.support import wait as support_wait

Waiter = Callable[..., Any]
DeploymentFactory = Callable[..., dict[str, Any]]
READY_TIMEOUT = 180.0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmop.runtime.tinymodels import create_tiny_model

    return create_tiny_model(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION, tmp_path_factory.mktemp("models") / "clip"
    )


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    cluster = DevCluster(
        tmp_path_factory.mktemp("devcluster"),
        gpus=1,
        router_seed=1234,
        kubelet={"backoff_initial": 1.0, "shutdown_grace": 5.0},
    )
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def api(dev_cluster: DevCluster) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=dev_cluster.api_url,
        timeout=30,
        trust_env=False,
        headers=dev_cluster.api_headers,
        verify=dev_cluster.api_ssl_context(),
    ) as client:
        yield client


@pytest.fixture(scope="session")
def router(dev_cluster: DevCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dev_cluster.router_url, timeout=60, trust_env=False) as client:
        yield client


@pytest.fixture(scope="session")
def wait_for() -> Waiter:
    """``wait_for(fn, what, timeout=...)``: poll until ``fn()`` is truthy; return its value."""

    def wait(
        fn: Callable[[], Any], what: str, timeout: float = READY_TIMEOUT, interval: float = 0.25
    ) -> Any:
        return support_wait.wait_until(fn, within=timeout, what=what, every=interval)

    return wait


@pytest.fixture(scope="session")
def make_deployment(tiny_model: Path) -> DeploymentFactory:
    """A Deployment of the runtime serving the tiny model, shaped like the operator's."""

    def build(
        name: str,
        *,
        labels: dict[str, str] | None = None,
        replicas: int | None = 1,
        gpus: int = 0,
        model: str | None = None,
        served_name: str = "clip",
        env: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        labels = labels or {"app": name}
        probe = {
            "httpGet": {"path": contract.READY_PATH, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
        live = {
            "httpGet": {"path": contract.LIVE_PATH, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        }
        limits: dict[str, str] = {"memory": "2Gi"}
        if gpus:
            limits["nvidia.com/gpu"] = str(gpus)
        container = {
            "name": "runtime",
            "image": "ghcr.io/mmop/runtime:test",
            "ports": [{"name": "http", "containerPort": contract.HTTP_PORT}],
            "env": [
                {"name": contract.ENV_MODEL, "value": model or str(tiny_model)},
                {"name": contract.ENV_TASK, "value": contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION},
                {"name": contract.ENV_NAME, "value": served_name},
                {"name": contract.ENV_DEVICE, "value": "cpu"},
                {"name": contract.ENV_HOST, "value": "0.0.0.0"},
                {"name": contract.ENV_CACHE_DIR, "value": contract.CACHE_MOUNT_PATH},
                {"name": "HF_HOME", "value": f"{contract.CACHE_MOUNT_PATH}/hf"},
                *(env or []),
            ],
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": limits},
            "volumeMounts": [
                {"name": "model-cache", "mountPath": contract.CACHE_MOUNT_PATH},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "startupProbe": {**live, "failureThreshold": 60},
            "readinessProbe": probe,
            "livenessProbe": live,
        }
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "model-cache", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    "terminationGracePeriodSeconds": 10,
                },
            },
        }
        if replicas is not None:
            spec["replicas"] = replicas
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }

    return build


def pods_of(api: httpx.Client, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
    """The pods matching a label selector (helper for the tests in this folder)."""
    response = api.get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture(scope="session")
def list_pods(api: httpx.Client) -> Callable[..., list[dict[str, Any]]]:
    def list_(selector: str, namespace: str = "default") -> list[dict[str, Any]]:
        return pods_of(api, selector, namespace)

    return list_
