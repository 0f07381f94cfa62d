"""reconcile/model.py: listing Nodes and Pods for the canary's free GPUs, and what happens
where the operator may not (the plan then takes nothing from the stable)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mmop.operator import kube, models
from mmop.operator.metrics import OperatorMetrics
from mmop.operator.reconcile import model
from mmop.operator.settings import OperatorSettings


class Cluster:
    """A client that lists one GPU node and the pods bound to it, or refuses to."""

    def __init__(self, *, status: int | None = None) -> None:
        self.status = status
        self.listed: list[tuple[str, str | None]] = []

    async def list_items(self, kind: kube.Kind, *, namespace: str | None = None) -> Any:
        self.listed.append((kind.plural, namespace))
        if self.status is not None:
            raise kube.ApiError(
                self.status, {"reason": "Forbidden"}, method="GET", path=f"/api/v1/{kind.plural}"
            )
        if kind is kube.NODE:
            return [
                {
                    "metadata": {
                        "name": "gpu-1",
                        "labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    },
                    "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
                    "status": {
                        "allocatable": {"nvidia.com/gpu": "4"},
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            ]
        limits = {"limits": {"nvidia.com/gpu": "3"}}
        return [{"spec": {"nodeName": "gpu-1", "containers": [{"resources": limits}]}}]


async def _free(clip: models.MultimodalModel, client: Cluster) -> Any:
    async with httpx.AsyncClient() as http:
        ctx = model.Context(
            client=client,  # type: ignore[arg-type]
            http=http,
            settings=OperatorSettings(),
            metrics=OperatorMetrics(),
        )
        return await model._free_gpus(ctx, clip)


async def test_free_gpus_of_the_nodes_the_pods_may_use_cluster_wide(
    clip: models.MultimodalModel,
) -> None:
    client = Cluster()
    found = await _free(clip, client)
    # the GPU taint is tolerated by the toleration the operator adds to GPU pods
    assert found is not None and found.free == 1 and found.resource == "nvidia.com/gpu"
    assert client.listed == [("nodes", None), ("pods", None)]
    scheduling = clip.spec.scheduling.model_copy(
        update={"node_selector": {"cloud.google.com/gke-accelerator": "nvidia-t4"}}
    )
    elsewhere = clip.model_copy(
        update={"spec": clip.spec.model_copy(update={"scheduling": scheduling})}
    )
    assert dict((await _free(elsewhere, Cluster())).free_by_node) == {}


@pytest.mark.parametrize("status", [403, 401])
async def test_without_the_grant_capacity_is_unknown(
    clip: models.MultimodalModel, status: int
) -> None:
    assert await _free(clip, Cluster(status=status)) is None


async def test_other_errors_are_not_hidden(clip: models.MultimodalModel) -> None:
    with pytest.raises(kube.ApiError):
        await _free(clip, Cluster(status=500))
