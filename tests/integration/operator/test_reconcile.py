"""The real operator against the embedded API server: children, status, drift, no-op resyncs,
invalid specs, deletion. (Rollouts with real runtime pods are in tests/e2e.)"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mmop.devcluster.apiserver import ServerHandle
from mmop.operator import crd, kube
from tests.support.manifests import example
from tests.support.operator import OperatorProcess, more_passes, posted_events
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.usefixtures("operator")


async def _model(client: kube.KubeClient, ns: str, name: str) -> dict[str, Any]:
    return await client.get(kube.MULTIMODAL_MODEL, name=name, namespace=ns)


async def _phase(client: kube.KubeClient, ns: str, name: str, phase: str) -> dict[str, Any] | None:
    body = await _model(client, ns, name)
    return body if (body.get("status") or {}).get("phase") == phase else None


async def _mark_available(client: kube.KubeClient, ns: str, name: str) -> None:
    """Stand in for a kubelet: the Deployment reports one ready pod."""
    dep = await client.get(kube.DEPLOYMENT, name=name, namespace=ns)
    await client.patch_status(
        kube.DEPLOYMENT,
        name=name,
        namespace=ns,
        status={
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    )


async def _ready_clip(client: kube.KubeClient, ns: str) -> dict[str, Any]:
    await client.create(kube.MULTIMODAL_MODEL, example("clip.yaml", namespace=ns))
    await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=ns),
        what="Deployment clip-v1",
    )
    await _mark_available(client, ns, "clip-v1")
    return await wait_until_async(lambda: _phase(client, ns, "clip", "Ready"), what="phase Ready")


async def test_create_makes_children_and_status(client: kube.KubeClient, namespace: str) -> None:
    body = await client.create(kube.MULTIMODAL_MODEL, example("clip.yaml", namespace=namespace))
    uid = body["metadata"]["uid"]
    deploying = await wait_until_async(
        lambda: _phase(client, namespace, "clip", "Deploying"), what="phase Deploying"
    )
    status = deploying["status"]
    assert status["stableVersion"] == "v1"
    assert status["url"] == f"http://clip.{namespace}.svc.cluster.local"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Deploying")
    expected = [
        (kube.DEPLOYMENT, "clip-v1"),
        (kube.SERVICE, "clip-v1"),
        (kube.SERVICE, "clip"),
        (kube.HPA, "clip-v1"),
        (kube.PDB, "clip-v1"),
        (kube.DESTINATION_RULE, "clip"),
        (kube.VIRTUAL_SERVICE, "clip"),
    ]
    for kind, name in expected:
        obj = await wait_until_async(
            lambda k=kind, n=name: client.get_or_none(k, name=n, namespace=namespace),
            what=f"{kind.kind} {name}",
        )
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("MultimodalModel", uid)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mmop"


async def test_available_deployment_makes_the_model_ready(
    client: kube.KubeClient, namespace: str
) -> None:
    body = await _ready_clip(client, namespace)
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "StableServing")
    assert body["status"]["readyReplicas"] == 1
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]


async def test_noop_resync_makes_zero_writes(
    client: kube.KubeClient, namespace: str, apiserver: ServerHandle, operator: OperatorProcess
) -> None:
    await _ready_clip(client, namespace)
    await _settled(apiserver, namespace, quiet=3.0)  # the last writes of reaching Ready
    since = apiserver.audit.last_index
    # Three passes per running loop (resync 2 s): fails when the loops stop passing.
    await more_passes(operator, 3)
    writes = [r for r in apiserver.audit.records(since=since) if r.namespace == namespace]
    assert writes == []


async def test_drift_is_repaired(client: kube.KubeClient, namespace: str) -> None:
    await _ready_clip(client, namespace)
    await client.delete(kube.SERVICE, name="clip-v1", namespace=namespace)
    await wait_until_async(
        lambda: client.get_or_none(kube.SERVICE, name="clip-v1", namespace=namespace),
        what="Service back",
    )
    await client.patch(
        kube.VIRTUAL_SERVICE,
        name="clip",
        namespace=namespace,
        patch={
            "spec": {
                "http": [
                    {
                        "name": "versions",
                        "route": [{"destination": {"host": "evil", "subset": "v1"}, "weight": 100}],
                    }
                ]
            }
        },
    )

    async def repaired() -> bool:
        vs = await client.get(kube.VIRTUAL_SERVICE, name="clip", namespace=namespace)
        return bool(vs["spec"]["http"][0]["route"][0]["destination"]["host"] != "evil")

    await wait_until_async(repaired, what="VirtualService repaired")


async def test_scaling_changes_apply_in_place(client: kube.KubeClient, namespace: str) -> None:
    await _ready_clip(client, namespace)
    await client.patch(
        kube.MULTIMODAL_MODEL,
        name="clip",
        namespace=namespace,
        patch={"spec": {"autoscaling": {"minReplicas": 3, "maxReplicas": 5}}},
    )

    async def rescaled() -> bool:
        hpa = await client.get(kube.HPA, name="clip-v1", namespace=namespace)
        return bool((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 5))

    await wait_until_async(rescaled, what="HPA bounds")
    body = await _model(client, namespace, "clip")
    assert body["status"].get("canaryVersion") is None  # not a new revision: no rollout


async def test_invalid_spec_is_reported_not_retried(
    client: kube.KubeClient, namespace: str, apiserver: ServerHandle, operator: OperatorProcess
) -> None:
    """An object the API server took (here: under a permissive, older CRD) that the
    operator's models reject: Ready=False/InvalidSpec, an Event naming the field, no child."""
    permissive = crd.build_crd()
    version = permissive["spec"]["versions"][0]
    version["schema"] = {
        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    }
    current = await client.get(kube.CRD, name=permissive["metadata"]["name"])
    permissive["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    await client.replace(kube.CRD, permissive)
    try:
        doc = example("clip.yaml", namespace=namespace)
        doc["spec"]["rollout"]["steps"] = [50, 20, 100]
        await client.create(kube.MULTIMODAL_MODEL, doc)
    finally:
        good = crd.build_crd()
        current = await client.get(kube.CRD, name=good["metadata"]["name"])
        good["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await client.replace(kube.CRD, good)

    async def invalid() -> dict[str, Any] | None:
        body = await _model(client, namespace, "clip")
        conds = (body.get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["reason"] == "InvalidSpec"), None)

    condition = await wait_until_async(invalid, what="InvalidSpec condition")
    assert condition["status"] == "False"
    assert "spec.rollout.steps" in condition["message"]
    assert await posted_events(client, namespace, "InvalidSpec", containing="spec.rollout.steps")
    assert await client.list_items(kube.DEPLOYMENT, namespace=namespace) == []
    since = apiserver.audit.last_index
    await more_passes(operator, 2)  # its loop passes again (resync 2 s) and writes nothing
    # kopf's own bookkeeping (its finalizer and annotations, user agent kopf/...) may land late
    # under load; what must not happen is the reconcile (mmop's client) writing again.
    written = [
        r
        for r in apiserver.audit.records(since=since)
        if r.namespace == namespace and not (r.user_agent or "").startswith("kopf/")
    ]
    assert written == []


async def test_delete_cleans_up(
    client: kube.KubeClient, namespace: str, operator: OperatorProcess
) -> None:
    await _ready_clip(client, namespace)
    await client.delete(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)

    async def gone() -> bool:
        left = [
            await client.list_items(k, namespace=namespace)
            for k in (kube.MULTIMODAL_MODEL, kube.DEPLOYMENT, kube.SERVICE, kube.HPA)
        ]
        return not any(left)

    await wait_until_async(gone, what="model and children gone")


async def _settled(apiserver: ServerHandle, namespace: str, *, quiet: float = 2.0) -> None:
    """Wait until nothing was written in ``namespace`` for ``quiet`` seconds (one resync)."""

    async def quiet_now() -> bool:
        records = [r for r in apiserver.audit.records() if r.namespace == namespace]
        return not records or time.time() - records[-1].time >= quiet

    await wait_until_async(quiet_now, within=60, what=f"no writes in {namespace} for {quiet} s")
