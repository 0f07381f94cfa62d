"""The Deployment of one version: the runtime container, probes, GPUs, volumes, hardening."""

from __future__ import annotations

import math
from typing import Any

from mmop.operator import models
from mmop.operator.builders import meta
from mmop.operator.builders.plan import VersionPlan
from mmop.operator.settings import BuildOptions
from mmop.runtime import contract

RUNTIME_CONTAINER = "runtime"
STORAGE_INITIALIZER = "storage-initializer"
RUN_AS_USER = 1000
PRESTOP_SLEEP_SECONDS = 10  # let endpoints and mesh routes forget the pod before SIGTERM
DOWNLOADED_MODEL_PATH = f"{contract.CACHE_MOUNT_PATH}/model"


def model_location(source: models.ModelSource) -> tuple[str, dict[str, Any] | None]:
    """(what MMOP_MODEL says inside the pod, the PVC volume to mount or None)."""
    uri = source.source
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://"), None
    if uri.startswith("file://"):
        return uri.removeprefix("file://"), None
    if uri.startswith("pvc://"):
        claim, _, sub = uri.removeprefix("pvc://").partition("/")
        path = f"{contract.PVC_MOUNT_ROOT}/{claim}" + (f"/{sub}" if sub else "")
        return path.rstrip("/"), {"name": "model-store", "claim": claim}
    # s3:// and gs://: an init container downloads into the cache volume first.
    return DOWNLOADED_MODEL_PATH, None


def _needs_download(source: models.ModelSource) -> bool:
    return source.source.startswith(("s3://", "gs://"))


def mirror_env(
    *, mm: models.MultimodalModel, mirror: models.Mirror | None, cluster_domain: str
) -> list[dict[str, Any]]:
    """MMOP_MIRROR_URL (the mirror target version's Service, port 8080) and
    MMOP_MIRROR_PERCENT, or nothing."""
    if mirror is None:
        return []
    host = meta.service_host(
        meta.versioned_name(mm.metadata.name, mirror.version),
        mm.metadata.namespace,
        cluster_domain,
    )
    return [
        {"name": contract.ENV_MIRROR_URL, "value": f"http://{host}:{contract.HTTP_PORT}"},
        {"name": contract.ENV_MIRROR_PERCENT, "value": str(mirror.percent)},
    ]


def user_may_set(name: str, *, allow_fault_env: bool = False) -> bool:
    """Whether spec.runtime.env may carry ``name`` into the pod (see contract.RESERVED_ENV)."""
    if name in contract.RESERVED_ENV:
        return False
    return allow_fault_env or not name.startswith(contract.FAULT_ENV_PREFIX)


def runtime_env(
    *, mm: models.MultimodalModel, plan: VersionPlan, options: BuildOptions | None = None
) -> list[dict[str, Any]]:
    """The runtime's settings as env (names from the runtime contract), then spec.runtime.env
    minus any name the operator sets or reserves: the spec never overrides the operator's."""
    options = options or BuildOptions()
    serving = plan.serving
    batching = serving.runtime.batching
    model_path, _ = model_location(serving.model)
    ours: list[dict[str, Any]] = [
        {"name": contract.ENV_MODEL, "value": model_path},
        {"name": contract.ENV_REVISION, "value": plan.commit or serving.model.revision},
        {"name": contract.ENV_TASK, "value": serving.model.task.value},
        {"name": contract.ENV_NAME, "value": mm.metadata.name},
        {"name": contract.ENV_VERSION, "value": plan.name},
        {"name": contract.ENV_HOST, "value": "0.0.0.0"},
        {"name": contract.ENV_PORT, "value": str(contract.HTTP_PORT)},
        {"name": contract.ENV_GRPC_PORT, "value": str(contract.GRPC_PORT)},
        {"name": contract.ENV_MAX_BATCH_SIZE, "value": str(batching.max_batch_size)},
        {"name": contract.ENV_MAX_DELAY_MS, "value": str(batching.max_delay_ms)},
        {"name": contract.ENV_MAX_QUEUE_SIZE, "value": str(batching.max_queue_size)},
        {"name": contract.ENV_QUEUE_TIMEOUT_SECONDS, "value": str(batching.queue_timeout_seconds)},
        {"name": contract.ENV_DEVICE, "value": "cuda" if serving.resources.gpu > 0 else "cpu"},
        {"name": contract.ENV_DTYPE, "value": serving.model.dtype.value},
        {
            "name": contract.ENV_TRUST_REMOTE_CODE,
            "value": "true" if serving.model.trust_remote_code else "false",
        },
        {"name": contract.ENV_CACHE_DIR, "value": contract.CACHE_MOUNT_PATH},
        # The runtime fits its queue and receive buffers into the container's memory limit.
        {
            "name": contract.ENV_MEMORY_LIMIT_BYTES,
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}},
        },
        {"name": "HF_HOME", "value": f"{contract.CACHE_MOUNT_PATH}/hf"},
    ]
    # Backend options only when they differ from the runtime's defaults: the pod template of a
    # spec that leaves them alone stays as it was before they existed (no restart on upgrade).
    runtime = serving.runtime
    if runtime.backend != models.Backend.EAGER:
        ours.append({"name": contract.ENV_BACKEND, "value": runtime.backend.value})
    if runtime.quantization != models.Quantization.NONE:
        ours.append({"name": contract.ENV_QUANTIZATION, "value": runtime.quantization.value})
    # The operator's test inferences are told apart by this token (optional: a missing
    # Secret only leaves them unmarked, it never keeps pods from starting).
    ours.append(
        {
            "name": contract.ENV_SMOKE_TEST_TOKEN,
            "valueFrom": {
                "secretKeyRef": {
                    "name": contract.smoke_test_secret_name(mm.metadata.name),
                    "key": contract.SMOKE_TEST_SECRET_KEY,
                    "optional": True,
                }
            },
        }
    )
    if serving.runtime.auth_secret_ref is not None:
        ref = serving.runtime.auth_secret_ref
        ours.append(
            {
                "name": contract.ENV_AUTH_TOKEN,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    ours += mirror_env(mm=mm, mirror=plan.mirror, cluster_domain=options.cluster_domain)
    taken = {e["name"] for e in ours}
    user = [
        e.wire()
        for e in serving.runtime.env
        if e.name not in taken and user_may_set(e.name, allow_fault_env=options.allow_fault_env)
    ]
    return ours + user


def _probe(path: str, *, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.HTTP_PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _identity(serving: models.ServingSpec) -> tuple[int, int]:
    """(runAsUser, runAsGroup): 1000/1000 unless spec.pod.securityContext says otherwise."""
    sc = serving.pod.security_context if serving.pod else None
    user = sc.run_as_user if sc and sc.run_as_user is not None else RUN_AS_USER
    group = sc.run_as_group if sc and sc.run_as_group is not None else RUN_AS_USER
    return user, group


def _container_security(serving: models.ServingSpec) -> dict[str, Any]:
    user, group = _identity(serving)
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(serving: models.ServingSpec) -> dict[str, Any]:
    """The pod securityContext: only the safe overrides of spec.pod.securityContext apply."""
    user, group = _identity(serving)
    sc = serving.pod.security_context if serving.pod else None
    out: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": sc.fs_group if sc and sc.fs_group is not None else RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sc and sc.supplemental_groups:
        out["supplementalGroups"] = list(sc.supplemental_groups)
    if sc and sc.fs_group_change_policy:
        out["fsGroupChangePolicy"] = sc.fs_group_change_policy
    return out


def _topology_spread(
    serving: models.ServingSpec, *, model: str, version: str
) -> list[dict[str, Any]]:
    """spec.scheduling.topologySpreadConstraints; no labelSelector -> this version's pods."""
    out = []
    for constraint in serving.scheduling.topology_spread_constraints or []:
        wire = constraint.wire()
        wire.setdefault("labelSelector", {"matchLabels": meta.pod_selector(model, version)})
        out.append(wire)
    return out


def _volumes(serving: models.ServingSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, runtime container mounts)."""
    res = serving.resources
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": res.shm_size}},
        {"name": "model-cache", "emptyDir": {"sizeLimit": res.cache_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "shm", "mountPath": contract.SHM_MOUNT_PATH},
        {"name": "model-cache", "mountPath": contract.CACHE_MOUNT_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    _, pvc = model_location(serving.model)
    if pvc is not None:
        volumes.append(
            {
                "name": pvc["name"],
                "persistentVolumeClaim": {"claimName": pvc["claim"], "readOnly": True},
            }
        )
        mounts.append(
            {
                "name": pvc["name"],
                "mountPath": f"{contract.PVC_MOUNT_ROOT}/{pvc['claim']}",
                "readOnly": True,
            }
        )
    return volumes, mounts


def _resources(res: models.Resources) -> dict[str, Any]:
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpu > 0:
        limits[res.gpu_resource] = str(res.gpu)
    return {"requests": {"cpu": res.cpu, "memory": res.memory}, "limits": limits}


def pod_tolerations(serving: models.ServingSpec) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in serving.scheduling.tolerations]
    gpu_key = serving.resources.gpu_resource
    if serving.resources.gpu > 0 and not any(t.get("key") == gpu_key for t in tolerations):
        tolerations.append({"key": gpu_key, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _init_containers(
    serving: models.ServingSpec, *, options: BuildOptions, env: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if not _needs_download(serving.model):
        return []
    return [
        {
            "name": STORAGE_INITIALIZER,
            "image": options.storage_initializer_image,
            "args": [serving.model.source, DOWNLOADED_MODEL_PATH],
            # Credentials (AWS_*, GOOGLE_APPLICATION_CREDENTIALS ...) come from spec.runtime.env.
            "env": [e for e in env if not e["name"].startswith("MMOP_")],
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
            "volumeMounts": [
                {"name": "model-cache", "mountPath": contract.CACHE_MOUNT_PATH},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "securityContext": _container_security(serving),
        }
    ]


def build_deployment(
    mm: models.MultimodalModel, plan: VersionPlan, *, options: BuildOptions
) -> dict[str, Any]:
    serving = plan.serving
    name = meta.versioned_name(mm.metadata.name, plan.name)
    batching = serving.runtime.batching
    period = options.probe_period_seconds
    env = runtime_env(mm=mm, plan=plan, options=options)
    volumes, mounts = _volumes(serving)
    revision_annotation = {meta.ANNOTATION_REVISION: plan.revision}

    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": serving.runtime.image,
        "imagePullPolicy": serving.runtime.image_pull_policy,
        "ports": [
            # http first: the probes, the scrape annotations and local dev take the first port.
            {
                "name": contract.HTTP_PORT_NAME,
                "containerPort": contract.HTTP_PORT,
                "protocol": "TCP",
            },
            {
                "name": contract.GRPC_PORT_NAME,
                "containerPort": contract.GRPC_PORT,
                "protocol": "TCP",
            },
        ],
        "env": env,
        "resources": _resources(serving.resources),
        "volumeMounts": mounts,
        # Model download and load can take long. The budget is fixed, not the rollout's progress
        # deadline, so that editing rollout settings never restarts pods.
        "startupProbe": _probe(
            contract.LIVE_PATH,
            period=period,
            failures=max(3, math.ceil(options.startup_budget_seconds / period)),
        ),
        "readinessProbe": _probe(contract.READY_PATH, period=5, failures=3),
        "livenessProbe": _probe(contract.LIVE_PATH, period=10, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": _container_security(serving),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "securityContext": _pod_security(serving),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # preStop sleep + in-flight requests that may wait the whole queue timeout.
        "terminationGracePeriodSeconds": PRESTOP_SLEEP_SECONDS + batching.queue_timeout_seconds + 5,
        "nodeSelector": dict(serving.scheduling.node_selector),
        "tolerations": pod_tolerations(serving),
    }
    init = _init_containers(serving, options=options, env=env)
    if init:
        pod_spec["initContainers"] = init
    if serving.scheduling.affinity:
        pod_spec["affinity"] = dict(serving.scheduling.affinity)
    if serving.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = serving.scheduling.priority_class_name
    if serving.scheduling.runtime_class_name:
        pod_spec["runtimeClassName"] = serving.scheduling.runtime_class_name
    spread = _topology_spread(serving, model=mm.metadata.name, version=plan.name)
    if spread:
        pod_spec["topologySpreadConstraints"] = spread
    pod = serving.pod or models.PodSettings()
    if pod.service_account_name:
        # The token stays unmounted: IRSA and Workload Identity bring their own credentials.
        pod_spec["serviceAccountName"] = pod.service_account_name
    if pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [s.wire() for s in pod.image_pull_secrets]
    if not pod_spec["nodeSelector"]:
        del pod_spec["nodeSelector"]
    if not pod_spec["tolerations"]:
        del pod_spec["tolerations"]

    spec: dict[str, Any] = {
        "selector": {"matchLabels": meta.pod_selector(mm.metadata.name, plan.name)},
        "revisionHistoryLimit": 2,
        "progressDeadlineSeconds": mm.spec.rollout.progress_deadline_seconds,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                # The user's labels and annotations never carry mmop's keys (validated).
                "labels": {**pod.labels, **meta.version_labels(mm.metadata.name, plan.name)},
                "annotations": {
                    **pod.annotations,
                    **revision_annotation,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(contract.HTTP_PORT),
                    "prometheus.io/path": contract.METRICS_PATH,
                },
            },
            "spec": pod_spec,
        },
    }
    if plan.replicas is not None:  # None: an HPA owns the replica count
        spec["replicas"] = plan.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.object_meta(
            mm,
            name=name,
            version=plan.name,
            annotations={
                **revision_annotation,
                **meta.version_record(
                    plan.role, plan.serving, commit=plan.commit, mirror=plan.mirror
                ),
            },
        ),
        "spec": spec,
    }
