"""Least privilege of what the operator runs, asserted on the built manifests of every example
(stable alone and mid-rollout, and with a source that needs the download init container):
every container, init containers included, runs as non-root with a read-only root filesystem,
no privilege escalation, no capabilities and the RuntimeDefault seccomp profile; pods get no
service-account token, no host namespaces or host paths; secrets reach the runtime only by
reference; remote code stays off unless the spec asks.

(tests/unit/operator/builders/test_deployment.py checks the CLIP example's runtime container;
the refusal of pickle checkpoints is tested in tests/unit/runtime/test_loading.py and, over a
real process, in tests/integration/runtime/test_runtime_lifecycle.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.operator import models
from mmop.operator.builders.children import build_children
from mmop.operator.settings import BuildOptions
from mmop.runtime import contract

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _load(path: Path) -> models.MultimodalModel:
    body = yaml.safe_load(path.read_text())
    body["metadata"].setdefault("uid", "0f6c0d47-5c1e-4b8e-9d2a-6d8f0b7e1a11")
    return models.parse_model(body)


def _variants(mm: models.MultimodalModel) -> dict[str, models.MultimodalModel]:
    """The example as applied, mid-rollout at 50%, and fetching its weights from s3."""
    stable = mm.spec.serving()
    canary_spec = mm.spec.model_copy(update={"version": "v2"})
    mid = mm.model_copy(update={"spec": canary_spec})
    mid.status = models.MultimodalModelStatus(
        stable_version=stable.version,
        stable_revision=stable.revision(),
        stable_spec=stable,
        canary_version="v2",
        canary_revision=canary_spec.revision(),
        canary_weight=50,
    )
    s3_model = mm.spec.model.model_copy(update={"source": "s3://bucket/weights"})
    s3 = mm.model_copy(update={"spec": mm.spec.model_copy(update={"model": s3_model})})
    return {"stable": mm, "canary": mid, "s3": s3}


def _deployments(path: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for variant, mm in _variants(_load(path)).items():
        for obj in build_children(mm, options=BuildOptions()):
            if obj["kind"] == "Deployment":
                found.append((f"{path.stem}/{variant}/{obj['metadata']['name']}", obj))
    return found


DEPLOYMENTS = [entry for path in EXAMPLES for entry in _deployments(path)]


def test_every_example_and_variant_is_checked() -> None:
    assert {p.stem for p in EXAMPLES} >= {"clip", "blip-captioner", "whisper-asr"}
    # stable alone, stable + canary, s3 (with its init container), for each example
    assert len(DEPLOYMENTS) == 4 * len(EXAMPLES)
    assert any("initContainers" in d["spec"]["template"]["spec"] for _, d in DEPLOYMENTS)


@pytest.mark.parametrize(("where", "deployment"), DEPLOYMENTS, ids=[w for w, _ in DEPLOYMENTS])
def test_pods_run_with_least_privilege(where: str, deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(key), key
    assert all("hostPath" not in volume for volume in pod["volumes"])

    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for container in containers:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc.get("runAsUser", pod_security["runAsUser"]) != 0
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not sc.get("privileged"), container["name"]
        assert sc.get("seccompProfile", pod_security["seccompProfile"]) == {
            "type": "RuntimeDefault"
        }
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])
        # a read-only root needs somewhere to write: /tmp is a volume in every container
        assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}


@pytest.mark.parametrize(("where", "deployment"), DEPLOYMENTS, ids=[w for w, _ in DEPLOYMENTS])
def test_runtime_runs_no_remote_code_and_holds_no_secret_values(
    where: str, deployment: dict[str, Any]
) -> None:
    runtime = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in runtime["env"]}
    assert env[contract.ENV_TRUST_REMOTE_CODE]["value"] == "false"  # no example asks for it
    assert contract.ENV_AUTH_TOKEN not in env or "valueFrom" in env[contract.ENV_AUTH_TOKEN]
    for entry in env.values():
        assert "token" not in entry["name"].lower() or "value" not in entry


def test_an_auth_secret_is_passed_by_reference_only() -> None:
    mm = _load(EXAMPLES[0])
    runtime = mm.spec.runtime.model_copy(
        update={"auth_secret_ref": models.SecretKeyRef(name="clip-token", key="token")}
    )
    mm = mm.model_copy(update={"spec": mm.spec.model_copy(update={"runtime": runtime})})
    deployment = next(
        o for o in build_children(mm, options=BuildOptions()) if o["kind"] == "Deployment"
    )
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[contract.ENV_AUTH_TOKEN] == {
        "name": contract.ENV_AUTH_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "clip-token", "key": "token"}},
    }
    assert "clip-token" not in yaml.safe_dump(deployment["spec"]["template"]["spec"]["volumes"])
