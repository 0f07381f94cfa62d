"""The one Node of the dev cluster, ``mmop-dev``: labels, capacity (CPU and memory large, GPUs
as configured) and the Ready condition a real kubelet reports."""

from __future__ import annotations

import contextlib
import platform
from typing import Any, Final

from mmop.devcluster.kubelet import resources
from mmop.devcluster.kubelet.ipam import NODE_IP
from mmop.devcluster.kubelet.podworker import now_stamp
from mmop.operator import kube

NODE: Final = kube.NODE
NODE_NAME: Final = "mmop-dev"
KUBELET_VERSION: Final = "v1.35.0-mmop-dev"


def build_node(*, name: str, gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Node object, its status)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "node-role.kubernetes.io/control-plane": "",
                "mmop.io/dev": "true",
            },
        },
        "spec": {},
    }
    capacity = resources.node_capacity(gpus=gpus)
    stamp = now_stamp()

    def cond(kind: str, ok: bool, *, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    status = {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond(
                "MemoryPressure",
                False,
                reason="KubeletHasSufficientMemory",
                message="kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                False,
                reason="KubeletHasNoDiskPressure",
                message="kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                False,
                reason="KubeletHasSufficientPID",
                message="kubelet has sufficient PID available",
            ),
            cond("Ready", True, reason="KubeletReady", message="kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": NODE_IP},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": arch,
            "operatingSystem": "linux",
            "osImage": platform.platform(),
            "kernelVersion": platform.release(),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "containerRuntimeVersion": "mmop-dev://0.1.0",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }
    return node, status


async def register_node(client: kube.KubeClient, *, name: str, gpus: int) -> None:
    """Create the Node (or keep the existing one) and set its status."""
    node, status = build_node(name=name, gpus=gpus)
    with contextlib.suppress(kube.ConflictError):
        await client.create(NODE, node)
    await client.patch_status(NODE, name=name, namespace=None, status=status)
