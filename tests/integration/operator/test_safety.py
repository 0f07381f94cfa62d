"""The real operator against the embedded API server, issue 12's safety fixes: a refused child
write is reported and the decision kept, child names taken by another model are reported and
never routed to, and a lost status is recovered from the Deployments (or held), never treated
as a first deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mmop.devcluster.apiserver import ServerHandle
from mmop.operator import kube
from tests.support.manifests import example
from tests.support.operator import OperatorProcess, posted_events
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.usefixtures("operator")


async def _model(client: kube.KubeClient, ns: str, name: str) -> dict[str, Any]:
    return await client.get(kube.MULTIMODAL_MODEL, name=name, namespace=ns)


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


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


async def _ready(client: kube.KubeClient, ns: str, name: str = "clip", **spec: Any) -> None:
    doc = example("clip.yaml", namespace=ns, **spec)
    doc["metadata"]["name"] = name
    await client.create(kube.MULTIMODAL_MODEL, doc)
    version = doc["spec"]["version"]
    await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name=f"{name}-{version}", namespace=ns),
        what=f"Deployment {name}-{version}",
    )
    await _mark_available(client, ns, f"{name}-{version}")

    async def ready() -> bool:
        return ((await _model(client, ns, name)).get("status") or {}).get("phase") == "Ready"

    await wait_until_async(ready, what=f"{name} Ready")


async def _events(client: kube.KubeClient, ns: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in await client.list_items(kube.EVENT, namespace=ns) if e["reason"] == reason]


async def _wipe_status(client: kube.KubeClient, ns: str, name: str) -> None:
    """Every status field set to null by a merge patch: the status subresource is {}."""
    body = await _model(client, ns, name)
    await client.patch_status(
        kube.MULTIMODAL_MODEL,
        name=name,
        namespace=ns,
        status=dict.fromkeys(body.get("status") or {}),
    )


@pytest.fixture
async def faults(apiserver: ServerHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=apiserver.url, timeout=10, headers=apiserver.headers, verify=apiserver.ssl_context
    ) as http:
        yield http
        await http.delete("/debug/faults")


async def test_refused_child_write_is_reported_and_the_decision_kept(
    client: kube.KubeClient, namespace: str, faults: httpx.AsyncClient
) -> None:
    rule = {"verbs": ["create"], "resources": ["poddisruptionbudgets"], "code": 422, "count": 10**6}
    assert (await faults.post("/debug/faults", json=rule)).status_code < 300
    await client.create(kube.MULTIMODAL_MODEL, example("clip.yaml", namespace=namespace))

    async def refused() -> dict[str, Any] | None:
        body = await _model(client, namespace, "clip")
        cond = _condition(body, "ChildrenSynced")
        return body if cond and cond["reason"] == "WriteRefused" else None

    body = await wait_until_async(refused, what="ChildrenSynced=False WriteRefused")
    cond = _condition(body, "ChildrenSynced")
    assert cond is not None and cond["status"] == "False"
    assert "PodDisruptionBudget clip-v1: 422" in cond["message"]
    # The pass went on: the decision (first deploy of v1) is in status, the Deployment exists.
    assert body["status"]["stableVersion"] == "v1"
    assert body["status"]["phase"] == "Deploying"
    assert await client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=namespace)
    assert await wait_until_async(lambda: _events(client, namespace, "WriteRefused"), what="Event")

    await faults.delete("/debug/faults")

    async def synced() -> bool:
        cond = _condition(await _model(client, namespace, "clip"), "ChildrenSynced")
        return cond is not None and cond["status"] == "True"

    await wait_until_async(synced, what="ChildrenSynced=True once the API server accepts")
    assert await client.get_or_none(kube.PDB, name="clip-v1", namespace=namespace)


async def test_a_name_taken_by_another_model_is_reported_and_not_routed(
    client: kube.KubeClient, namespace: str
) -> None:
    # Model clip, version v1, owns Service clip-v1; model clip-v1 wants it as its entry point.
    await _ready(client, namespace)
    doc = example("clip.yaml", namespace=namespace)
    doc["metadata"]["name"] = "clip-v1"
    await client.create(kube.MULTIMODAL_MODEL, doc)

    async def conflict() -> dict[str, Any] | None:
        cond = _condition(await _model(client, namespace, "clip-v1"), "ChildrenSynced")
        return cond if cond and cond["reason"] == "NameConflict" else None

    cond = await wait_until_async(conflict, what="NameConflict on clip-v1")
    assert "Service clip-v1 exists and belongs to MultimodalModel clip" in cond["message"]
    assert await wait_until_async(lambda: _events(client, namespace, "NameConflict"), what="Event")
    # No route of clip-v1 sends its host to clip's pods; clip's Service is untouched.
    assert (
        await client.get_or_none(kube.VIRTUAL_SERVICE, name="clip-v1", namespace=namespace) is None
    )
    svc = await client.get(kube.SERVICE, name="clip-v1", namespace=namespace)
    assert svc["spec"]["selector"] == {"mmop.io/model": "clip", "mmop.io/version": "v1"}


async def test_a_canary_whose_names_are_taken_is_stopped(
    client: kube.KubeClient, namespace: str
) -> None:
    await _ready(client, namespace, name="m")
    other = example("clip.yaml", namespace=namespace)
    other["metadata"]["name"] = "m-v2"  # its Service m-v2 is the name m's canary v2 wants
    await client.create(kube.MULTIMODAL_MODEL, other)
    await wait_until_async(
        lambda: client.get_or_none(kube.SERVICE, name="m-v2", namespace=namespace),
        what="Service m-v2 of model m-v2",
    )
    await client.patch(
        kube.MULTIMODAL_MODEL, name="m", namespace=namespace, patch={"spec": {"version": "v2"}}
    )

    async def failed() -> dict[str, Any] | None:
        body = await _model(client, namespace, "m")
        return body if body["status"].get("phase") == "Failed" else None

    body = await wait_until_async(failed, what="canary v2 rolled back")
    last = body["status"]["history"][-1]
    assert (last["version"], last["result"]) == ("v2", "RolledBack")
    assert "NameConflict" in last["reason"] and "Service m-v2" in last["reason"]
    assert body["status"]["stableVersion"] == "v1"
    vs = await client.get(kube.VIRTUAL_SERVICE, name="m", namespace=namespace)
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [100]


async def test_status_wiped_mid_rollout_is_recovered_never_promoted(
    client: kube.KubeClient, namespace: str
) -> None:
    await _ready(client, namespace)
    stable = await client.get(kube.DEPLOYMENT, name="clip-v1", namespace=namespace)
    await client.patch(
        kube.MULTIMODAL_MODEL,
        name="clip",
        namespace=namespace,
        patch={"spec": {"version": "v2"}},
    )
    await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name="clip-v2", namespace=namespace),
        what="canary Deployment clip-v2",
    )
    await _wipe_status(client, namespace, "clip")

    async def recovered() -> dict[str, Any] | None:
        events = await _events(client, namespace, "StatusRecovered")
        return (await _model(client, namespace, "clip")) if events else None

    body = await wait_until_async(recovered, what="StatusRecovered")
    status = body["status"]
    assert (status["stableVersion"], status["canaryVersion"]) == ("v1", "v2")
    assert status.get("canaryWeight", 0) == 0
    assert status["stableSpec"]["version"] == "v1"
    # The old stable was never deleted or replaced, and the route still gives it everything.
    now = await client.get(kube.DEPLOYMENT, name="clip-v1", namespace=namespace)
    assert now["metadata"]["uid"] == stable["metadata"]["uid"]
    assert now["spec"]["template"] == stable["spec"]["template"]
    vs = await client.get(kube.VIRTUAL_SERVICE, name="clip", namespace=namespace)
    weights = {r["destination"]["subset"]: r["weight"] for r in vs["spec"]["http"][0]["route"]}
    assert weights == {"v1": 100, "v2": 0}


async def test_status_lost_without_a_readable_record_holds(
    client: kube.KubeClient,
    namespace: str,
    apiserver: ServerHandle,
    operator: OperatorProcess,
) -> None:
    await _ready(client, namespace)
    # An operator from before the role annotations made clip-v1; the spec has moved on to v2
    # and the status is lost. (Stopped meanwhile, or it would restore the annotations.)
    operator.stop()
    await client.patch(
        kube.DEPLOYMENT,
        name="clip-v1",
        namespace=namespace,
        patch={"metadata": {"annotations": {"mmop.io/role": None, "mmop.io/serving-spec": None}}},
    )
    since = apiserver.audit.last_index
    await client.patch(
        kube.MULTIMODAL_MODEL,
        name="clip",
        namespace=namespace,
        patch={"spec": {"version": "v2"}},
    )
    await _wipe_status(client, namespace, "clip")
    operator.start()

    async def held() -> dict[str, Any] | None:
        body = await _model(client, namespace, "clip")
        cond = _condition(body, "Progressing")
        return body if cond and cond["reason"] == "StableRecordMissing" else None

    body = await wait_until_async(held, what="Progressing=False StableRecordMissing")
    assert body["status"]["phase"] == "Degraded"
    assert "holding" in body["status"]["message"]
    assert await posted_events(client, namespace, "StableRecordMissing")
    assert await client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=namespace)
    deletes = [
        r
        for r in apiserver.audit.records(since=since)
        if r.namespace == namespace and r.verb == "delete" and r.resource == "deployments"
    ]
    assert deletes == []
