"""builders/deployment.py: the runtime Deployment of one version."""

from __future__ import annotations

import dataclasses
from typing import Any

from mmop.operator import models, naming
from mmop.operator.builders import deployment
from mmop.operator.builders.plan import plan_versions
from mmop.operator.settings import BuildOptions
from mmop.runtime import contract


def _build(mm: models.MultimodalModel, options: BuildOptions, index: int = 0) -> dict[str, Any]:
    return deployment.build_deployment(mm, plan_versions(mm)[index], options=options)


def _env(dep: dict[str, Any]) -> dict[str, Any]:
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


class TestBuildDeployment:
    def test_name_labels_and_owner(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        dep = _build(clip, options)
        assert dep["metadata"]["name"] == "clip-v1"
        assert dep["metadata"]["namespace"] == "ml"
        expected = {
            "app.kubernetes.io/name": "clip",
            "app.kubernetes.io/managed-by": "mmop",
            "mmop.io/model": "clip",
            "mmop.io/version": "v1",
        }
        assert dep["metadata"]["labels"] == expected
        assert dep["spec"]["template"]["metadata"]["labels"] == expected
        assert dep["spec"]["selector"]["matchLabels"] == {
            "mmop.io/model": "clip",
            "mmop.io/version": "v1",
        }
        owner = dep["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "MultimodalModel"
        assert owner["uid"] == clip.metadata.uid
        assert owner["controller"] is True

    def test_runtime_container_port_and_probes(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        c = _container(_build(clip, options))
        assert c["ports"] == [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
        ]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert (env["MMOP_PORT"], env["MMOP_GRPC_PORT"]) == ("8080", "8081")
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        startup = c["startupProbe"]
        # generous enough for the whole progress deadline (download + load)
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget >= clip.spec.rollout.progress_deadline_seconds
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0

    def test_gpu_limits_and_toleration(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        dep = _build(clip, options)
        assert _container(dep)["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert _container(dep)["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
        tolerations = dep["spec"]["template"]["spec"]["tolerations"]
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in tolerations
        assert _env(dep)[contract.ENV_DEVICE] == "cuda"

    def test_cpu_only_has_no_gpu(self, clip: models.MultimodalModel, options: BuildOptions) -> None:
        spec = clip.spec.model_copy(
            update={
                "resources": clip.spec.resources.model_copy(update={"gpu": 0}),
                "autoscaling": None,
            }
        )
        dep = _build(clip.model_copy(update={"spec": spec}), options)
        assert "nvidia.com/gpu" not in _container(dep)["resources"]["limits"]
        assert "tolerations" not in dep["spec"]["template"]["spec"]
        assert _env(dep)[contract.ENV_DEVICE] == "cpu"

    def test_hardening(self, clip: models.MultimodalModel, options: BuildOptions) -> None:
        dep = _build(clip, options)
        pod = dep["spec"]["template"]["spec"]
        sc = _container(dep)["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False

    def test_volumes_shm_cache_tmp(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        dep = _build(clip, options)
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        assert "model-cache" in volumes and "tmp" in volumes
        mounts = {m["mountPath"]: m["name"] for m in _container(dep)["volumeMounts"]}
        assert mounts["/dev/shm"] == "shm"
        assert mounts[contract.CACHE_MOUNT_PATH] == "model-cache"
        assert mounts["/tmp"] == "tmp"
        assert _env(dep)["HF_HOME"].startswith(contract.CACHE_MOUNT_PATH)

    def test_scrape_annotations(self, clip: models.MultimodalModel, options: BuildOptions) -> None:
        ann = _build(clip, options)["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == "8080"
        assert ann["prometheus.io/path"] == "/metrics"
        assert ann[naming.ANNOTATION_REVISION] == clip.spec.revision()

    def test_runtime_settings_as_env(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        env = _env(_build(clip, options))
        assert env[contract.ENV_MODEL] == "openai/clip-vit-base-patch32"
        assert env[contract.ENV_TASK] == "zero-shot-image-classification"
        assert env[contract.ENV_NAME] == "clip"
        assert env[contract.ENV_MAX_BATCH_SIZE] == "32"
        assert env[contract.ENV_DTYPE] == "float16"
        assert env[contract.ENV_TRUST_REMOTE_CODE] == "false"

    def test_the_memory_limit_reaches_the_runtime(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        # The runtime fits its queue into the limit itself (issue 14): one Downward API entry.
        dep = _build(clip, options)
        env = _env(dep)
        assert env[contract.ENV_MEMORY_LIMIT_BYTES] == {
            "resourceFieldRef": {"resource": "limits.memory"}
        }
        assert _container(dep)["resources"]["limits"]["memory"] == clip.spec.resources.memory

    def test_user_env_never_overrides_the_operators_and_auth_secret(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        # model_copy skips validation: what a spec that slipped past the CRD would hold.
        runtime = clip.spec.runtime.model_copy(
            update={
                "env": [
                    models.EnvVar.model_construct(name=contract.ENV_MAX_DELAY_MS, value="9"),
                    models.EnvVar.model_construct(name=contract.ENV_TRUST_REMOTE_CODE, value="1"),
                    models.EnvVar.model_construct(name=contract.ENV_AUTH_TOKEN, value="plain"),
                    models.EnvVar(name=contract.ENV_FAULT_ERROR_RATE, value="1"),
                    models.EnvVar(name="EXTRA", value="1"),
                ],
                "auth_secret_ref": models.SecretKeyRef(name="clip-token"),
            }
        )
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"runtime": runtime})})
        dep = _build(mm, options)
        names = [e["name"] for e in _container(dep)["env"]]
        for name in (contract.ENV_MAX_DELAY_MS, contract.ENV_TRUST_REMOTE_CODE):
            assert names.count(name) == 1
        env = _env(dep)
        assert env[contract.ENV_MAX_DELAY_MS] == "5"
        assert env[contract.ENV_TRUST_REMOTE_CODE] == "false"
        assert env["EXTRA"] == "1"
        assert contract.ENV_FAULT_ERROR_RATE not in env
        assert env[contract.ENV_AUTH_TOKEN] == {
            "secretKeyRef": {"name": "clip-token", "key": "token"}
        }
        allowed = _env(_build(mm, dataclasses.replace(options, allow_fault_env=True)))
        assert allowed[contract.ENV_FAULT_ERROR_RATE] == "1"

    def test_every_name_the_operator_sets_is_reserved(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        runtime = clip.spec.runtime.model_copy(
            update={"auth_secret_ref": models.SecretKeyRef(name="clip-token")}
        )
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"runtime": runtime})})
        ours = set(_env(_build(mm, options)))
        assert ours <= set(contract.RESERVED_ENV)

    def test_a_pinned_hub_commit_is_what_the_pods_download(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        commit = "0123456789abcdef0123456789abcdef01234567"
        revision = clip.spec.revision()
        status = clip.status.model_copy(update={"hub_commits": {revision: commit}})
        pinned = clip.model_copy(update={"status": status})
        assert _env(_build(pinned, options))[contract.ENV_REVISION] == commit
        assert _env(_build(clip, options))[contract.ENV_REVISION] == "main"
        assert pinned.spec.revision() == revision  # pinning never starts a rollout

    def test_pvc_source_is_mounted_read_only(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        model = clip.spec.model.model_copy(update={"source": "pvc://models/clip/v1"})
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"model": model})})
        dep = _build(mm, options)
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["model-store"]["persistentVolumeClaim"] == {
            "claimName": "models",
            "readOnly": True,
        }
        mount = next(m for m in _container(dep)["volumeMounts"] if m["name"] == "model-store")
        assert mount == {"name": "model-store", "mountPath": "/mnt/models/models", "readOnly": True}
        assert _env(dep)[contract.ENV_MODEL] == "/mnt/models/models/clip/v1"

    def test_s3_source_downloads_first(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        model = clip.spec.model.model_copy(update={"source": "s3://bucket/clip"})
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"model": model})})
        dep = _build(mm, options)
        init = dep["spec"]["template"]["spec"]["initContainers"][0]
        assert init["image"] == options.storage_initializer_image
        assert init["args"] == ["s3://bucket/clip", deployment.DOWNLOADED_MODEL_PATH]
        assert _env(dep)[contract.ENV_MODEL] == deployment.DOWNLOADED_MODEL_PATH

    def test_hpa_owns_replicas(self, clip: models.MultimodalModel, options: BuildOptions) -> None:
        assert clip.spec.autoscaling is not None
        assert "replicas" not in _build(clip, options)["spec"]
        fixed = clip.model_copy(
            update={"spec": clip.spec.model_copy(update={"autoscaling": None, "replicas": 3})}
        )
        assert _build(fixed, options)["spec"]["replicas"] == 3

    def test_scheduling_passthrough(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        scheduling = models.Scheduling(
            node_selector={"pool": "gpu"},
            priority_class_name="high",
            runtime_class_name="nvidia",
            affinity={"nodeAffinity": {}},
            tolerations=[{"key": "dedicated", "operator": "Exists"}],
        )
        mm = clip.model_copy(
            update={"spec": clip.spec.model_copy(update={"scheduling": scheduling})}
        )
        pod = _build(mm, options)["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"pool": "gpu"}
        assert pod["priorityClassName"] == "high"
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["affinity"] == {"nodeAffinity": {}}
        assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]


class TestIssue12Records:
    def test_smoke_test_token_comes_from_the_models_secret(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        env = _env(_build(clip, options))
        assert env[contract.ENV_SMOKE_TEST_TOKEN] == {
            "secretKeyRef": {"name": "clip-mmop-smoke-test", "key": "token", "optional": True}
        }

    def test_role_and_serving_spec_are_on_the_deployment_metadata_only(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        dep = _build(clip, options)
        annotations = dep["metadata"]["annotations"]
        assert annotations[naming.ANNOTATION_ROLE] == "stable"
        serving = models.ServingSpec.model_validate_json(
            annotations[naming.ANNOTATION_SERVING_SPEC]
        )
        assert serving == clip.spec.serving()
        # never in the pod template: a role change at promotion must not restart pods
        template = dep["spec"]["template"]["metadata"]["annotations"]
        assert naming.ANNOTATION_ROLE not in template
        assert naming.ANNOTATION_SERVING_SPEC not in template


class TestBackends:
    """spec.runtime.backend / quantization reach the runtime as env, and change the revision."""

    @staticmethod
    def _with(clip: models.MultimodalModel, **runtime: Any) -> models.MultimodalModel:
        doc = clip.model_dump(by_alias=True, exclude_none=True, mode="json")
        doc["spec"]["runtime"] |= runtime
        doc["spec"]["resources"]["gpu"] = 0
        doc["spec"].pop("autoscaling", None)  # its GPU metric needs a GPU
        doc["spec"]["model"] |= {"task": "image-text-embedding", "dtype": "auto"}
        return models.parse_model(doc)

    def test_backend_and_quantization_become_env(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        onnx = _env(_build(self._with(clip, backend="onnxruntime"), options))
        assert onnx[contract.ENV_BACKEND] == "onnxruntime"
        assert contract.ENV_QUANTIZATION not in onnx
        int8 = _env(_build(self._with(clip, quantization="int8"), options))
        assert int8[contract.ENV_QUANTIZATION] == "int8"
        assert contract.ENV_BACKEND not in int8
        compiled = _env(_build(self._with(clip, backend="compile"), options))
        assert compiled[contract.ENV_BACKEND] == "compile"

    def test_defaults_leave_the_pod_template_as_before(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        # eager / none are the runtime's defaults: no env, so pods built before these fields
        # existed are not restarted by an operator upgrade.
        explicit = self._with(clip, backend="eager", quantization="none")
        implicit = self._with(clip)
        env = _env(_build(explicit, options))
        assert contract.ENV_BACKEND not in env
        assert contract.ENV_QUANTIZATION not in env
        assert _build(explicit, options)["spec"] == _build(implicit, options)["spec"]

    def test_a_backend_change_is_a_new_revision_and_a_new_pod_template(
        self, clip: models.MultimodalModel, options: BuildOptions
    ) -> None:
        eager = self._with(clip)
        for runtime in (
            {"backend": "onnxruntime"},
            {"backend": "compile"},
            {"quantization": "int8"},
        ):
            changed = self._with(clip, **runtime)
            assert changed.spec.revision() != eager.spec.revision()
            annotations = _build(changed, options)["metadata"]["annotations"]
            recorded = models.ServingSpec.model_validate_json(
                annotations[naming.ANNOTATION_SERVING_SPEC]
            )
            assert recorded.revision() == changed.spec.revision()
            assert (
                _build(changed, options)["spec"]["template"]
                != _build(eager, options)["spec"]["template"]
            )
