"""The real operator against the embedded API server, from a tenant's side: env the operator owns,
pvc:// paths that leave their claim, fault injection it has not enabled, and hf:// revisions
pinned to a commit before any pod downloads them (a fake hub on loopback answers)."""

from __future__ import annotations

from typing import Any

import pytest

from mmop.operator import kube, models
from tests.support.manifests import example
from tests.support.operator import FakeHub, posted_events
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.usefixtures("operator")


async def _condition(
    client: kube.KubeClient, ns: str, name: str, type_: str
) -> dict[str, Any] | None:
    body = await client.get(kube.MULTIMODAL_MODEL, name=name, namespace=ns)
    conds = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ([{"name": "MMOP_TRUST_REMOTE_CODE", "value": "true"}], None),
        ([{"name": "MMOP_AUTH_TOKEN", "value": "plain-text"}], None),
        ([{"name": "HF_HOME", "value": "/tmp"}], None),
        ([], "pvc://models/../../etc"),
    ],
    ids=["trust-remote-code", "auth-token", "hf-home", "pvc-dotdot"],
)
async def test_the_api_server_refuses_reserved_env_and_escaping_paths(
    client: kube.KubeClient, namespace: str, env: list[dict[str, str]], source: str | None
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["runtime"]["env"] = env
    if source:
        doc["spec"]["model"]["source"] = source
    with pytest.raises(kube.ApiError) as info:
        await client.create(kube.MULTIMODAL_MODEL, doc)
    assert info.value.status == 422
    field = "spec.model.source" if source else "spec.runtime.env"
    assert field in str(info.value)


async def test_the_api_server_refuses_int8_on_a_gpu_and_the_operator_renders_backends(
    client: kube.KubeClient, namespace: str
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["runtime"]["quantization"] = "int8"
    doc["spec"]["resources"]["gpu"] = 1
    with pytest.raises(kube.ApiError) as info:
        await client.create(kube.MULTIMODAL_MODEL, doc)
    assert info.value.status == 422
    assert "spec.runtime.quantization" in str(info.value)
    assert "CPU only" in str(info.value)
    # A combination that works reaches the pods as env.
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["runtime"]["backend"] = "onnxruntime"
    doc["spec"]["model"]["dtype"] = "auto"
    await client.create(kube.MULTIMODAL_MODEL, doc)
    deployments = await wait_until_async(
        lambda: client.list_items(kube.DEPLOYMENT, namespace=namespace), what="a Deployment"
    )
    assert _env(deployments[0])["MMOP_BACKEND"] == "onnxruntime"


async def test_fault_injection_is_invalid_unless_the_operator_allows_it(
    client: kube.KubeClient, namespace: str
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["runtime"]["env"] = [{"name": "MMOP_FAULT_ERROR_RATE", "value": "1"}]
    await client.create(kube.MULTIMODAL_MODEL, doc)
    ready = await wait_until_async(
        lambda: _condition(client, namespace, "clip", "Ready"), what="a Ready condition"
    )
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "MMOP_FAULT_ERROR_RATE" in ready["message"]
    assert "MMOP_OPERATOR_ALLOW_FAULT_ENV" in ready["message"]
    assert await client.list_items(kube.DEPLOYMENT, namespace=namespace) == []


async def test_a_hub_branch_is_pinned_to_a_commit_when_first_deployed(
    client: kube.KubeClient, namespace: str, hub: FakeHub
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    await client.create(kube.MULTIMODAL_MODEL, doc)
    deployment = await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=namespace),
        what="Deployment clip-v1",
    )
    commit = FakeHub.commit("openai/clip-vit-base-patch32", "main")
    assert _env(deployment)["MMOP_REVISION"] == commit

    async def recorded() -> dict[str, Any] | None:
        # the status is written after the children: wait for it, do not race it
        body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
        return body if (body.get("status") or {}).get("hubCommits") else None

    body = await wait_until_async(recorded, what="status.hubCommits")
    revision = models.parse_spec(doc["spec"]).revision()
    # the revision (and so every name and the rollout) comes from the spec, not the commit
    assert body["status"]["stableRevision"] == revision
    assert body["status"]["hubCommits"] == {revision: commit}
    pinned = await _condition(client, namespace, "clip", "RevisionPinned")
    assert pinned is not None and pinned["status"] == "True"
    assert commit in pinned["message"]
    assert "/api/models/openai/clip-vit-base-patch32/revision/main" in hub.asked


async def test_an_unresolvable_revision_holds_then_deploys_once_resolved(
    client: kube.KubeClient, namespace: str
) -> None:
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["model"]["source"] = "hf://missing/clip"
    await client.create(kube.MULTIMODAL_MODEL, doc)

    async def unresolved() -> dict[str, Any] | None:
        cond = await _condition(client, namespace, "clip", "RevisionPinned")
        return cond if cond and cond["status"] == "False" else None

    cond = await wait_until_async(unresolved, what="RevisionPinned=False")
    assert cond["reason"] == "HubRevisionUnresolved"
    assert "hf://missing/clip@main" in cond["message"] and "404" in cond["message"]
    body = await client.get(kube.MULTIMODAL_MODEL, name="clip", namespace=namespace)
    assert "nothing changes until it is resolved" in body["status"]["message"]
    assert await client.list_items(kube.DEPLOYMENT, namespace=namespace) == []
    assert await posted_events(client, namespace, "HubRevisionUnresolved")

    await client.patch(
        kube.MULTIMODAL_MODEL,
        name="clip",
        namespace=namespace,
        patch={"spec": {"model": {"source": "hf://found/clip"}}},
    )
    deployment = await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=namespace),
        what="Deployment clip-v1",
    )
    assert _env(deployment)["MMOP_REVISION"] == FakeHub.commit("found/clip", "main")


async def test_a_commit_in_the_spec_is_not_looked_up(
    client: kube.KubeClient, namespace: str, hub: FakeHub
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    doc = example("clip.yaml", namespace=namespace)
    doc["spec"]["model"]["source"] = "hf://pinned/clip"
    doc["spec"]["model"]["revision"] = commit
    await client.create(kube.MULTIMODAL_MODEL, doc)
    deployment = await wait_until_async(
        lambda: client.get_or_none(kube.DEPLOYMENT, name="clip-v1", namespace=namespace),
        what="Deployment clip-v1",
    )
    assert _env(deployment)["MMOP_REVISION"] == commit
    assert not [a for a in hub.asked if "pinned/clip" in a]
