"""The local kubelet with the real API server and real ``mmop-runtime`` pods: readiness, IPs,
env and volumes, scaling, restarts, crash loops, rolling updates (with real ``kubectl rollout
status``), GPU scheduling, deletion and shutdown.

The tests of ``TestOneDeployment`` share one Deployment (each leaves it with one ready pod) to
keep the number of runtime processes low on small machines."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import tritonclient.grpc as triton_grpc

from mmop.devcluster.cluster import DevCluster

Pods = Callable[..., list[dict[str, Any]]]
NAME = "lifecycle"
SELECTOR = f"app={NAME}"


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _pid(pod: dict[str, Any]) -> int:
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    assert container_id.startswith("mmop://")
    return int(container_id.removeprefix("mmop://"))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = [item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _deployment(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _ready_pods(list_pods: Pods, selector: str, count: int) -> Callable[[], list[dict]]:
    def check() -> list[dict[str, Any]]:
        pods = [p for p in list_pods(selector) if _ready(p)]
        return pods if len(pods) == count and len(list_pods(selector)) == count else []

    return check


@pytest.fixture(scope="module")
def lifecycle(
    dev_cluster: DevCluster,
    api: httpx.Client,
    make_deployment: Callable[..., dict],
    wait_for: Callable[..., Any],
    list_pods: Pods,
) -> Iterator[str]:
    """Deployment ``lifecycle`` (replicas absent: 1), with env from a Secret, a ConfigMap and
    the downward API."""
    dev_cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "lifecycle-auth"},
                "stringData": {"token": "s3cret"},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "lifecycle-settings"},
                "data": {"level": "debug"},
            },
            make_deployment(
                NAME,
                replicas=None,
                env=[
                    {
                        "name": "MMOP_TEST_TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "lifecycle-auth", "key": "token"}},
                    },
                    {
                        "name": "MMOP_TEST_LEVEL",
                        "valueFrom": {
                            "configMapKeyRef": {"name": "lifecycle-settings", "key": "level"}
                        },
                    },
                    {
                        "name": "MMOP_TEST_POD",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                    },
                    {
                        "name": "MMOP_TEST_IP",
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                    },
                    {"name": "MMOP_TEST_URL", "value": "http://$(MMOP_TEST_IP):8080"},
                ],
            ),
        ]
    )
    wait_for(_ready_pods(list_pods, SELECTOR, 1), "the lifecycle pod to be ready")
    yield NAME
    api.delete(f"/apis/apps/v1/namespaces/default/deployments/{NAME}")


class TestOneDeployment:
    def test_pod_is_ready_with_its_own_ip(
        self,
        lifecycle: str,
        api: httpx.Client,
        list_pods: Pods,
        wait_for: Callable[..., Any],
    ) -> None:
        (pod,) = list_pods(SELECTOR)
        meta, status = pod["metadata"], pod["status"]
        dep = _deployment(api, lifecycle)
        assert meta["name"].startswith(f"{lifecycle}-")
        assert meta["labels"]["pod-template-hash"] in meta["name"]
        assert meta["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]
        assert meta["ownerReferences"][0]["controller"] is True
        assert pod["spec"]["nodeName"] == "mmop-dev"
        assert status["phase"] == "Running"
        assert status["podIP"].startswith("127.0.0.") and status["podIP"] != "127.0.0.1"
        assert status["hostIP"] == "127.0.0.1"
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Initialized": "True",
            "Ready": "True",
            "ContainersReady": "True",
            "PodScheduled": "True",
        }
        container = status["containerStatuses"][0]
        assert (container["ready"], container["started"], container["restartCount"]) == (
            True,
            True,
            0,
        )
        assert "running" in container["state"]
        answer = httpx.get(f"http://{status['podIP']}:8080/v2/health/ready", trust_env=False)
        assert answer.json() == {"ready": True}
        # gRPC beside HTTP on the pod's own IP (the runtime's default port 8081)
        assert triton_grpc.InferenceServerClient(f"{status['podIP']}:8081").is_server_ready()
        dep = wait_for(
            lambda: (
                (d := _deployment(api, lifecycle))["status"].get("availableReplicas") == 1 and d
            ),
            "the deployment's status",
        )
        assert dep["spec"]["replicas"] == 1
        assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
        conditions = {c["type"]: c["reason"] for c in dep["status"]["conditions"]}
        assert conditions == {
            "Available": "MinimumReplicasAvailable",
            "Progressing": "NewReplicaSetAvailable",
        }

    def test_env_and_volumes(
        self, lifecycle: str, dev_cluster: DevCluster, list_pods: Pods
    ) -> None:
        (pod,) = list_pods(SELECTOR)
        env = _environ(_pid(pod))
        ip, name = pod["status"]["podIP"], pod["metadata"]["name"]
        pod_dir = dev_cluster.state_dir / "pods" / "default" / name
        assert env["MMOP_HOST"] == ip
        assert env["MMOP_TEST_TOKEN"] == "s3cret"
        assert env["MMOP_TEST_LEVEL"] == "debug"
        assert env["MMOP_TEST_POD"] == name
        assert env["MMOP_TEST_URL"] == f"http://{ip}:8080"
        assert env["MMOP_CACHE_DIR"] == str(pod_dir / "volumes" / "model-cache")
        assert env["HF_HOME"] == str(pod_dir / "volumes" / "model-cache" / "hf")
        assert env["TMPDIR"] == str(pod_dir / "volumes" / "tmp")
        assert (pod_dir / "volumes" / "model-cache").is_dir()
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert dev_cluster.kubelet.log_path("default", name).exists()

    def test_scale_up_and_down(
        self,
        lifecycle: str,
        api: httpx.Client,
        list_pods: Pods,
        wait_for: Callable[..., Any],
    ) -> None:
        path = f"/apis/apps/v1/namespaces/default/deployments/{lifecycle}"
        merge = {"Content-Type": "application/merge-patch+json"}
        api.patch(path, json={"spec": {"replicas": 2}}, headers=merge).raise_for_status()
        two = wait_for(_ready_pods(list_pods, SELECTOR, 2), "two ready pods")
        assert len({p["status"]["podIP"] for p in two}) == 2
        pids = {p["metadata"]["name"]: _pid(p) for p in two}
        wait_for(
            lambda: _deployment(api, lifecycle)["status"].get("readyReplicas") == 2,
            "readyReplicas 2",
        )
        api.patch(path, json={"spec": {"replicas": 1}}, headers=merge).raise_for_status()
        (kept,) = wait_for(_ready_pods(list_pods, SELECTOR, 1), "one pod left")
        (removed,) = set(pids) - {kept["metadata"]["name"]}
        wait_for(lambda: _gone(pids[removed]), "the removed pod's process to exit")
        assert not _gone(pids[kept["metadata"]["name"]])

    def test_killed_process_restarts(
        self,
        lifecycle: str,
        list_pods: Pods,
        wait_for: Callable[..., Any],
    ) -> None:
        (pod,) = list_pods(SELECTOR)
        old_pid = _pid(pod)
        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            (current,) = list_pods(SELECTOR)
            status = current["status"]["containerStatuses"][0]
            return current if status["restartCount"] == 1 and _ready(current) else None

        pod = wait_for(restarted, "the container to restart and be ready again")
        container = pod["status"]["containerStatuses"][0]
        assert container["lastState"]["terminated"]["exitCode"] == 137
        assert container["lastState"]["terminated"]["reason"] == "Error"
        assert _pid(pod) != old_pid

    def test_template_change_rolls_out_surge_style(
        self,
        lifecycle: str,
        dev_cluster: DevCluster,
        api: httpx.Client,
        list_pods: Pods,
        kubectl_bin: str,
    ) -> None:
        (old,) = list_pods(SELECTOR)
        old_name = old["metadata"]["name"]
        path = f"/apis/apps/v1/namespaces/default/deployments/{lifecycle}"
        patch = {"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}
        api.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        ).raise_for_status()
        rollout = subprocess.Popen(
            [kubectl_bin, "rollout", "status", f"deployment/{lifecycle}", "--timeout=180s"],
            env={**os.environ, "KUBECONFIG": str(dev_cluster.kubeconfig)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Until a new pod is ready, the old one keeps serving (surge, maxUnavailable 0).
        while rollout.poll() is None:
            pods = list_pods(SELECTOR)
            if not any(_ready(p) and p["metadata"]["name"] != old_name for p in pods):
                assert any(p["metadata"]["name"] == old_name and _ready(p) for p in pods), pods
            time.sleep(0.2)
        output = rollout.communicate(timeout=30)[0]
        assert rollout.returncode == 0, output
        assert f'deployment "{lifecycle}" successfully rolled out' in output
        (new,) = list_pods(SELECTOR)
        assert new["metadata"]["name"] != old_name
        assert new["metadata"]["annotations"] == {"rollout": "2"}
        dep = _deployment(api, lifecycle)
        assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
        assert dep["status"]["updatedReplicas"] == dep["status"]["replicas"] == 1


def test_crash_loop_back_off(
    dev_cluster: DevCluster,
    api: httpx.Client,
    make_deployment: Callable[..., dict],
    list_pods: Pods,
    wait_for: Callable[..., Any],
) -> None:
    dev_cluster.apply([make_deployment("broken", model="/nonexistent/model")])

    def crash_looping() -> dict[str, Any] | None:
        pods = list_pods("app=broken")
        if len(pods) != 1:
            return None
        status = (pods[0]["status"].get("containerStatuses") or [{}])[0]
        waiting = status.get("state", {}).get("waiting", {})
        return status if waiting.get("reason") == "CrashLoopBackOff" else None

    try:
        status = wait_for(crash_looping, "CrashLoopBackOff")
        assert status["restartCount"] >= 1
        assert "back-off" in status["state"]["waiting"]["message"]
        terminated = status["lastState"]["terminated"]
        assert terminated["exitCode"] == 1
        assert "/nonexistent/model" in terminated["message"]
        assert status["ready"] is False
        available = _deployment(api, "broken")["status"]["conditions"][0]
        assert (available["type"], available["status"]) == ("Available", "False")
    finally:
        api.delete("/apis/apps/v1/namespaces/default/deployments/broken")


def test_gpu_pods_wait_for_a_free_gpu_and_deleted_pods_stop(
    dev_cluster: DevCluster,
    api: httpx.Client,
    make_deployment: Callable[..., dict],
    list_pods: Pods,
    wait_for: Callable[..., Any],
) -> None:
    """The node has one GPU: a second GPU pod stays Pending until the first Deployment goes."""
    node = api.get("/api/v1/nodes/mmop-dev").json()
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    dev_cluster.apply([make_deployment("gpu-a", gpus=1)])
    (first,) = wait_for(
        lambda: [
            p
            for p in list_pods("app=gpu-a")
            if p["status"].get("containerStatuses", [{}])[0].get("containerID")
        ],
        "gpu-a to start",
    )
    first_pid = _pid(first)
    assert _environ(first_pid)["CUDA_VISIBLE_DEVICES"] == "0"
    dev_cluster.apply([make_deployment("gpu-b", gpus=1)])

    def pending() -> dict[str, Any] | None:
        pods = list_pods("app=gpu-b")
        conditions = pods[0]["status"].get("conditions", []) if pods else []
        return next(
            (c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), None
        )

    scheduled = wait_for(pending, "gpu-b to be unschedulable")
    assert scheduled["reason"] == "Unschedulable"
    assert scheduled["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    (waiting,) = list_pods("app=gpu-b")
    assert waiting["status"]["phase"] == "Pending"
    assert "nodeName" not in waiting["spec"]

    api.delete("/apis/apps/v1/namespaces/default/deployments/gpu-a").raise_for_status()
    wait_for(lambda: not list_pods("app=gpu-a"), "gpu-a's pods to be deleted")
    wait_for(lambda: _gone(first_pid), "gpu-a's process to stop")
    try:
        (second,) = wait_for(
            lambda: [
                p
                for p in list_pods("app=gpu-b")
                if p["spec"].get("nodeName") == "mmop-dev" and p["status"].get("podIP")
            ],
            "gpu-b to be scheduled",
        )
        conditions = {c["type"]: c["status"] for c in second["status"]["conditions"]}
        assert conditions["PodScheduled"] == "True"
    finally:
        api.delete("/apis/apps/v1/namespaces/default/deployments/gpu-b")


def test_stopping_the_cluster_stops_every_pod(
    tmp_path: Path,
    make_deployment: Callable[..., dict],
    wait_for: Callable[..., Any],
) -> None:
    """A second cluster beside the session's: its own addresses, and nothing outlives it."""
    with DevCluster(tmp_path / "state") as cluster:
        cluster.apply([make_deployment("short-lived")])
        pids = wait_for(cluster.pids, "a pod process")
        (pid,) = pids.values()
        assert psutil.pid_exists(pid)
    assert _gone(pid)
