"""Typed MultimodalModel spec and status: the single source of truth for the API.

The CRD's openAPIV3Schema is generated from these models (``mmop.operator.crd``); the operator
validates every object with them too, so a cross-field rule lives here once, as a pydantic
validator, and once more as a CEL ``x-kubernetes-validations`` rule for the API server.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mmop.runtime import contract

GROUP: Final = "mmop.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "mmop.io/v1alpha1"
KIND: Final = "MultimodalModel"
PLURAL = "multimodalmodels"
SINGULAR = "multimodalmodel"
SHORT_NAMES = ("mmm", "mmmodel", "mmmodels")

# A DNS-1035 label: model names name the Service NAME, so they must start with a letter.
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A version only ever follows "NAME-" (Deployment, Service, HPA, PDB NAME-VERSION, which start
# with the model name's letter) or stands alone as the mmop.io/version label value and the
# Istio subset name: a DNS-1123 label keeps all of them valid, digits first included (2026-01).
VERSION_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SOURCE = (
    r"^(hf://[A-Za-z0-9][-A-Za-z0-9_.]*(/[A-Za-z0-9][-A-Za-z0-9_.]*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|file:///[^\s]*"
    r"|s3://[a-z0-9][-a-z0-9.]*[a-z0-9](/[^\s]*)?"
    r"|gs://[a-z0-9][-a-z0-9._]*[a-z0-9](/[^\s]*)?)$"
)
SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label or annotation key: an optional DNS-subdomain prefix and a name of at most 63.
QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# Keys of the pod template that mmop sets itself (builders/meta.py, builders/deployment.py).
RESERVED_PREFIX = "mmop.io/"
RESERVED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/managed-by")
RESERVED_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
MAX_NAME_WITH_VERSION = 63  # NAME-VERSION names a Service: a DNS-1035 label


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _cel(*rules: tuple[str, str, str | None]) -> dict[str, Any]:
    """``x-kubernetes-validations`` entries: (rule, message, fieldPath or None)."""
    out = []
    for rule, message, field_path in rules:
        entry = {"rule": rule, "message": message}
        if field_path:
            entry["fieldPath"] = field_path
        out.append(entry)
    return {"x-kubernetes-validations": out}


# --- enums ---------------------------------------------------------------------------------
class Task(StrEnum):
    IMAGE_TEXT_EMBEDDING = contract.TASK_IMAGE_TEXT_EMBEDDING
    ZERO_SHOT_IMAGE_CLASSIFICATION = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
    IMAGE_TO_TEXT = contract.TASK_IMAGE_TO_TEXT
    AUTOMATIC_SPEECH_RECOGNITION = contract.TASK_ASR
    IMAGE_CLASSIFICATION = contract.TASK_IMAGE_CLASSIFICATION


class Dtype(StrEnum):
    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


# The runtime's own vocabulary, under the names the spec uses.
Backend = contract.Backend
Quantization = contract.Quantization


class Router(StrEnum):
    ISTIO = "Istio"
    GATEWAY_API = "GatewayAPI"
    SERVICE = "Service"


class Strategy(StrEnum):
    CANARY = "Canary"
    MANUAL = "Manual"


class CapacityMode(StrEnum):
    AUTO = "Auto"
    SURGE = "Surge"
    SWAP = "Swap"


class MetricType(StrEnum):
    CPU = "CPU"
    QPS = "QPS"
    GPU = "GPU"


class Phase(StrEnum):
    PENDING = "Pending"
    DEPLOYING = "Deploying"
    READY = "Ready"
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"
    DEGRADED = "Degraded"


# --- spec: what runs (changes here start a rollout) ----------------------------------------
class ModelSource(_Model):
    """Which model to serve and how to load it."""

    source: Annotated[str, Field(pattern=SOURCE, max_length=1024)]
    """Where the weights are: hf://ORG/NAME (Hugging Face hub), pvc://CLAIM/path (a
    PersistentVolumeClaim mounted read-only), file:///abs/path (a path inside the image) or
    s3://BUCKET/path and gs://BUCKET/path (downloaded by an init container)."""
    revision: Annotated[str, Field(min_length=1, max_length=128)] = "main"
    """Hub revision (branch, tag or commit) for hf:// sources."""
    task: Task
    """The inference task; it selects the transformers Auto classes and the request schema."""
    dtype: Dtype = Dtype.AUTO
    """Weights and compute precision; auto means fp16/bf16 autocast on GPU and fp32 on CPU.
    bfloat16 also runs on CPU where the CPU computes it natively (avx512_bf16 or amx_bf16 on
    x86, bf16 on Arm); elsewhere the runtime refuses to load (Ready=False, logs say why)."""
    trust_remote_code: bool = False
    """Run model code shipped with the weights. Off by default; weights load from safetensors
    only, whatever this says."""


class Batching(_Model):
    """Dynamic batching in the runtime."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    """The largest batch one forward pass takes."""
    max_delay_ms: Annotated[int, Field(ge=0, le=10_000)] = 5
    """How long the batcher waits for more requests after the first one of a batch."""
    max_queue_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Requests waiting beyond this are refused with 429 at once."""
    queue_timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    """A request still queued after this long is answered 504."""


class SecretKeyRef(_Model):
    """A key of a Secret in the model's namespace."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
    """The Secret's name."""
    key: Annotated[str, Field(min_length=1, max_length=253)] = "token"
    """The key inside the Secret."""


class EnvVar(_Model):
    """An environment variable for the runtime container (core/v1 EnvVar)."""

    name: Annotated[str, Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256)]
    """The variable's name; not one the operator sets itself (MMOP_MODEL, MMOP_AUTH_TOKEN,
    MMOP_TRUST_REMOTE_CODE, ...: see docs/operator.md)."""
    value: str | None = None
    """A literal value."""
    value_from: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = None
    """A source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."""


class RuntimeSpec(_Model):
    """The model server container."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = "ghcr.io/mmop/runtime:0.1.0"
    """The runtime image (the bundled mmop-runtime)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """When the kubelet pulls the image."""
    batching: Batching = Field(default_factory=Batching)
    """Dynamic batching settings."""
    env: Annotated[list[EnvVar], Field(max_length=64)] = Field(default_factory=list)
    """Extra environment for the runtime container. Names the operator sets itself are
    refused (MMOP_FAULT_* too, unless the operator allows fault injection)."""
    auth_secret_ref: SecretKeyRef | None = None
    """When set, inference endpoints need 'Authorization: Bearer TOKEN' with the token read
    from this Secret key; probes and metrics stay open."""
    backend: Backend = Backend.EAGER
    """How the runtime runs the model: eager (PyTorch), onnxruntime (exported to ONNX at load,
    cached in the model cache volume; CPU, or CUDA/TensorRT with onnxruntime-gpu) or compile
    (torch.compile at load). onnxruntime and compile serve image-text-embedding,
    zero-shot-image-classification and image-classification; a model that cannot be exported
    or compiled fails to load with the reason (never a silent fallback to eager)."""
    quantization: Quantization = Quantization.NONE
    """int8: dynamic int8 quantization of the model's Linear layers (CPU only: resources.gpu
    0; with backend eager and dtype auto or float32)."""

    # Fields added after objects existed: left out of the revision hash at their default, so
    # an operator upgrade never starts a rollout of an unchanged spec (see ServingSpec).
    LATE_DEFAULTS: ClassVar[dict[str, str]] = {"backend": "eager", "quantization": "none"}


class Resources(_Model):
    """Compute for each runtime pod."""

    gpu: Annotated[int, Field(ge=0, le=16)] = 1
    """GPUs per pod (a limit on gpuResource); 0 runs on CPU."""
    gpu_resource: Annotated[str, Field(pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$", max_length=253)] = (
        "nvidia.com/gpu"
    )
    """The extended resource name that schedules GPUs."""
    cpu: Annotated[str, Field(pattern=QUANTITY, max_length=32)] = "4"
    """CPU request (a Kubernetes quantity)."""
    memory: Annotated[str, Field(pattern=QUANTITY, max_length=32)] = "16Gi"
    """Memory request and limit (a Kubernetes quantity)."""
    shm_size: Annotated[str, Field(pattern=QUANTITY, max_length=32)] = "1Gi"
    """Size limit of the memory-backed /dev/shm volume."""
    cache_size: Annotated[str, Field(pattern=QUANTITY, max_length=32)] = "50Gi"
    """Size limit of the model cache volume (hub downloads)."""


class Scheduling(_Model):
    """Where runtime pods may run (passed to the pod spec as is)."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a pod's node must carry."""
    tolerations: Annotated[
        list[dict[str, Any]],
        Field(
            json_schema_extra={
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            }
        ),
    ] = Field(default_factory=list)
    """Pod tolerations (core/v1 Toleration). A GPU toleration is added when gpu > 0."""
    affinity: Annotated[
        dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    ] = Field(default_factory=dict)
    """Pod affinity (core/v1 Affinity)."""
    priority_class_name: Annotated[str, Field(max_length=253)] = ""
    """The pods' PriorityClass."""
    runtime_class_name: Annotated[str, Field(max_length=253)] = ""
    """The pods' RuntimeClass (for example nvidia)."""
    topology_spread_constraints: Annotated[
        list[TopologySpreadConstraint] | None, Field(max_length=8)
    ] = None
    """How the pods of a version spread over zones or nodes; a constraint without a
    labelSelector counts the pods of the same version."""


class SecretName(_Model):
    """A Secret in the model's namespace (core/v1 LocalObjectReference)."""

    name: Annotated[str, Field(pattern=SUBDOMAIN, max_length=253)]
    """The Secret's name."""


class TopologySpreadConstraint(_Model):
    """How the version's pods spread over topology domains (core/v1 TopologySpreadConstraint)."""

    max_skew: Annotated[int, Field(ge=1, le=1000)]
    """The most the number of matching pods may differ between two domains."""
    topology_key: Annotated[str, Field(min_length=1, max_length=316)]
    """The node label that defines a domain (topology.kubernetes.io/zone,
    kubernetes.io/hostname ...)."""
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    """DoNotSchedule keeps a pod Pending rather than break the skew; ScheduleAnyway only
    prefers spreading."""
    label_selector: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = None
    """The pods counted (metav1.LabelSelector); when absent, the pods of the same version
    (mmop.io/model and mmop.io/version)."""
    match_label_keys: Annotated[list[str] | None, Field(max_length=16)] = None
    """Pod label keys whose values are added to the selector (pod-template-hash ...)."""
    min_domains: Annotated[int | None, Field(ge=1, le=1000)] = None
    """The fewest eligible domains (DoNotSchedule only)."""
    node_affinity_policy: Literal["Honor", "Ignore"] | None = None
    """Whether nodeSelector and affinity narrow the domains counted."""
    node_taints_policy: Literal["Honor", "Ignore"] | None = None
    """Whether node taints narrow the domains counted."""


class PodSecurityOverrides(_Model):
    """Identity of the runtime pods' processes, within a safe set: only user, group, fsGroup
    and supplemental groups. runAsNonRoot, no privilege escalation, a read-only root file
    system, no capabilities and the RuntimeDefault seccomp profile always stay."""

    run_as_user: Annotated[int | None, Field(ge=1, le=2_147_483_647)] = None
    """The UID of every container (default 1000); never 0: pods run as non-root."""
    run_as_group: Annotated[int | None, Field(ge=0, le=2_147_483_647)] = None
    """The primary GID of every container (default 1000)."""
    fs_group: Annotated[int | None, Field(ge=0, le=2_147_483_647)] = None
    """The group that owns mounted volumes (default 1000)."""
    supplemental_groups: Annotated[
        list[Annotated[int, Field(ge=0, le=2_147_483_647)]] | None, Field(max_length=32)
    ] = None
    """Extra GIDs for every container (shared file systems, device groups)."""
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    """When volume ownership is changed to fsGroup."""


class PodSettings(_Model):
    """Settings of the runtime pods that a real cluster commonly needs: a private registry,
    a cloud identity, the cluster's own labels and annotations, the process identity."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.labels) || self.labels.all(k, !k.startsWith('mmop.io/')"
                " && k != 'app.kubernetes.io/name' && k != 'app.kubernetes.io/managed-by')",
                "labels must not set mmop's own keys (mmop.io/*, app.kubernetes.io/name, "
                "app.kubernetes.io/managed-by)",
                ".labels",
            ),
            (
                "!has(self.annotations) || self.annotations.all(k, !k.startsWith('mmop.io/')"
                " && k != 'prometheus.io/scrape' && k != 'prometheus.io/port'"
                " && k != 'prometheus.io/path')",
                "annotations must not set mmop's own keys (mmop.io/*, prometheus.io/scrape, "
                "prometheus.io/port, prometheus.io/path)",
                ".annotations",
            ),
        )
    )

    image_pull_secrets: Annotated[list[SecretName], Field(max_length=16)] = Field(
        default_factory=list
    )
    """Secrets (kubernetes.io/dockerconfigjson) to pull the runtime and storage-initializer
    images from a private registry, as in a pod spec: [{name: regcred}]."""
    service_account_name: Annotated[str | None, Field(pattern=SUBDOMAIN, max_length=253)] = None
    """The pods' ServiceAccount (default: the namespace's default). Annotate it for a cloud
    identity (EKS IRSA eks.amazonaws.com/role-arn, GKE iam.gke.io/gcp-service-account) so an
    s3:// or gs:// source downloads without keys. The API token stays unmounted."""
    labels: Annotated[dict[str, str], Field(max_length=64)] = Field(default_factory=dict)
    """Extra labels on the pods (not on the Deployment); mmop's own keys are refused."""
    annotations: Annotated[dict[str, str], Field(max_length=64)] = Field(default_factory=dict)
    """Extra annotations on the pods (sidecar injection, cost allocation ...); mmop's own keys
    are refused."""
    security_context: PodSecurityOverrides | None = None
    """Overrides of the pods' user and groups (a safe subset of the pod securityContext)."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            _check_key(key, reserved=RESERVED_LABELS, what="label")
            if not LABEL_VALUE.match(value):
                raise ValueError(
                    f"label {key!r}: value {value!r} is not a valid label value (at most 63 "
                    "letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                )
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str]) -> dict[str, str]:
        for key in annotations:
            _check_key(key, reserved=RESERVED_ANNOTATIONS, what="annotation")
        if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
            raise ValueError("annotations must be at most 256 KiB in total")
        return annotations


def _check_key(key: str, *, reserved: tuple[str, ...], what: str) -> None:
    if not QUALIFIED_NAME.match(key) or len(key.partition("/")[0]) > 253:
        raise ValueError(f"{what} key {key!r} is not a valid key ([prefix/]name)")
    if key.startswith(RESERVED_PREFIX) or key in reserved:
        raise ValueError(
            f"{what} key {key!r} is mmop's own (mmop.io/* and {', '.join(reserved)} are "
            "set by the operator)"
        )


class ServingSpec(_Model):
    """Everything that shapes a version's pods. A change of any of it is a new revision."""

    version: Annotated[
        str, Field(min_length=1, max_length=40, json_schema_extra={"pattern": VERSION_LABEL})
    ]
    """The user's label for this build: lowercase letters, digits and '-', starting and ending
    with a letter or digit (v2, 2026-01); it becomes part of Deployment and Service names and
    the mmop.io/version label. Changing it, or anything else that changes the pod template,
    starts a rollout."""
    model: ModelSource
    """The model and how to load it."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """The model server container."""
    resources: Resources = Field(default_factory=Resources)
    """Compute per pod."""
    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Pod placement."""
    pod: PodSettings | None = None
    """Pod settings: image pull secrets, ServiceAccount (cloud identity), extra labels and
    annotations, user and groups. Like everything here, a change starts a rollout."""

    @field_validator("version")
    @classmethod
    def _version(cls, version: str) -> str:
        if not re.fullmatch(VERSION_LABEL, version):
            raise ValueError(
                f"{version!r} is not a valid version: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit (for example v2 or 2026-01); it "
                "becomes part of object names (NAME-VERSION) and the mmop.io/version label"
            )
        return version

    def canonical(self) -> dict[str, Any]:
        """The wire form, less the fields added to the API later while they hold their
        default: what the revision hashes and the Deployment records, so a spec written before
        those fields existed keeps its revision and its records."""
        wire = self.wire()
        runtime = wire.get("runtime", {})
        for key, default in RuntimeSpec.LATE_DEFAULTS.items():
            if runtime.get(key) == default:
                del runtime[key]
        return wire

    def revision(self) -> str:
        """A short stable hash of the serving spec: equal specs give equal revisions."""
        canonical = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


# --- spec: how it scales and rolls out (applied in place) -----------------------------------
class Metric(_Model):
    """One autoscaling signal."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.type == 'QPS' || has(self.targetUtilization)",
                "CPU and GPU metrics need targetUtilization",
                None,
            ),
            (
                "self.type != 'QPS' || has(self.targetPerReplica)",
                "a QPS metric needs targetPerReplica",
                None,
            ),
        )
    )

    type: MetricType
    """CPU (HPA Resource metric), QPS (Pods metric mmop_requests_per_second) or GPU (Pods
    metric mmop_gpu_utilization_percent)."""
    target_utilization: Annotated[int | None, Field(ge=1, le=100)] = None
    """Target average utilisation in percent (CPU, GPU)."""
    target_per_replica: Annotated[float | None, Field(gt=0, le=100_000)] = None
    """Target requests per second per pod (QPS)."""

    @model_validator(mode="after")
    def _targets(self) -> Metric:
        if self.type == MetricType.QPS and self.target_per_replica is None:
            raise ValueError("a QPS metric needs targetPerReplica")
        if self.type != MetricType.QPS and self.target_utilization is None:
            raise ValueError(f"a {self.type} metric needs targetUtilization")
        return self


class Autoscaling(_Model):
    """A HorizontalPodAutoscaler per version; replicas is ignored when this is set."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
                ".minReplicas",
            ),
        )
    )

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """The fewest pods of the stable version."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 8
    """The most pods of the stable version."""
    metrics: Annotated[
        list[Metric],
        Field(
            min_length=1,
            max_length=3,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = Field(default_factory=lambda: [Metric(type=MetricType.CPU, target_utilization=70)])
    """Scaling signals, at most one of each type."""
    behavior: Annotated[
        dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    ] = Field(default_factory=dict)
    """Passed to the autoscaling/v2 HPA's behavior as is."""

    @field_validator("metrics")
    @classmethod
    def _one_of_each(cls, metrics: list[Metric]) -> list[Metric]:
        seen: set[MetricType] = set()
        for metric in metrics:
            if metric.type in seen:
                raise ValueError(f"at most one {metric.type} metric")
            seen.add(metric.type)
        return metrics

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class Traffic(_Model):
    """How requests reach the versions."""

    router: Router = Router.ISTIO
    """Istio (VirtualService + DestinationRule), GatewayAPI (HTTPRoute) or Service (no mesh:
    the split follows the replica ratio, approximately)."""
    gateways: Annotated[
        list[Annotated[str, Field(pattern=r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]],
        Field(max_length=16),
    ] = Field(default_factory=lambda: ["mesh"])
    """Istio gateways, or Gateway API parent Gateways (NAMESPACE/NAME); 'mesh' means
    in-mesh traffic (for Gateway API: a GAMMA route attached to the model's Service)."""
    hosts: Annotated[
        list[Annotated[str, Field(pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]],
        Field(max_length=16),
    ] = Field(default_factory=list)
    """Extra host names to route besides the model's Service names."""


class Analysis(_Model):
    """When a canary step passes."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    """How much higher the canary's error rate (5xx and 4xx except 429, among its inference
    requests) may be than the stable version's in the same interval."""
    max_latency_p99_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000
    """Highest p99 request latency of the canary, in milliseconds."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """Fewer canary requests than this in an interval make the check inconclusive (hold); at
    least 1: a check never passes on zero requests."""


class Quality(_Model):
    """The quality gate: the canary's answers compared with the stable's, before any weight
    (a golden set) and during the steps (mirrored live requests)."""

    golden_set: Annotated[
        str | None, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    ] = None
    """A ConfigMap in the model's namespace holding the golden set: one key per sample, each
    value an OIP v2 infer request body (JSON). Without it a built-in set for the task is used."""
    min_samples: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """Fewer live comparisons than this in an interval make the check inconclusive (hold)."""
    mirror_percent: Annotated[int, Field(ge=0, le=100)] = 10
    """Share of the canary's successful inference requests that are also sent to the stable
    and compared, in percent; 0 turns the live comparison off (the golden set still runs)."""
    embedding_cosine_min: Annotated[float, Field(ge=-1, le=1)] = 0.99
    """Embedding tasks: lowest mean cosine similarity of canary and stable embeddings."""
    label_agreement_min: Annotated[float, Field(ge=0, le=1)] = 0.95
    """Classification tasks: lowest share of items whose top-1 label agrees with the stable."""
    text_similarity_min: Annotated[float, Field(ge=0, le=1)] = 0.8
    """Image-to-text: lowest mean token F1 of the canary's text against the stable's."""
    word_error_rate_max: Annotated[float, Field(ge=0, le=10)] = 0.1
    """Speech recognition: highest mean word error rate of the canary's transcript against the
    stable's."""


class Rollout(_Model):
    """How a new revision replaces the stable one."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            ("self.steps[size(self.steps) - 1] == 100", "steps must end at 100", ".steps"),
            ("self.steps.isSorted()", "steps must be strictly increasing", ".steps"),
            (
                "self.strategy == 'Manual' || self.canaryWeight == 0",
                "canaryWeight is only for the Manual strategy",
                ".canaryWeight",
            ),
        )
    )

    strategy: Strategy = Strategy.CANARY
    """Canary: the operator moves the weight by steps while analysis passes. Manual: the user
    sets canaryWeight."""
    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]],
        Field(min_length=1, max_length=20, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = Field(default_factory=lambda: [10, 25, 50, 100])
    """Canary weights in percent, strictly increasing, the last one 100."""
    step_interval: Annotated[str, Field(pattern=DURATION, max_length=32)] = "60s"
    """Time between analyses (and weight steps), as a duration such as 30s, 1m or 1m30s."""
    max_failed_checks: Annotated[int, Field(ge=1, le=100)] = 3
    """Failed analyses that roll the canary back."""
    progress_deadline_seconds: Annotated[int, Field(ge=10, le=86_400)] = 900
    """Time for a canary to become available and pass its test inference (model download
    and load included) before it is rolled back."""
    analysis: Analysis = Field(default_factory=Analysis)
    """Thresholds for a passing step."""
    scale_down_delay_seconds: Annotated[int, Field(ge=0, le=86_400)] = 60
    """How long the previous stable version keeps running after a promotion."""
    paused: bool = False
    """Hold the canary weight where it is."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Manual strategy only: the canary's weight in percent."""
    quality: Quality | None = None
    """Compare the canary's answers with the stable's (absent: no quality gate)."""
    capacity: CapacityMode = CapacityMode.AUTO
    """Where a GPU canary's pods find their GPUs. Surge: beside the stable's (held, with
    reason InsufficientGPU, until the free GPUs fit them). Swap: taken from the stable one
    GPU-holding replica at a time (never its last ready one) and given back on rollback.
    Auto: Surge when the free GPUs fit the whole canary, else Swap, else hold."""

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("steps must end at 100")
        return steps

    @model_validator(mode="after")
    def _manual_weight(self) -> Rollout:
        if self.strategy != Strategy.MANUAL and self.canary_weight != 0:
            raise ValueError("canaryWeight is only for the Manual strategy")
        return self

    def step_interval_seconds(self) -> float:
        return parse_duration(self.step_interval).total_seconds()


# Backend rules: CEL in the CRD and the same checks here (messages shared).
INT8_CPU_ONLY: Final = (
    "runtime.quantization int8 runs on CPU only (torch dynamic quantization has no GPU "
    "kernels): set resources.gpu to 0, or quantization none"
)
INT8_EAGER_ONLY: Final = "runtime.quantization int8 needs runtime.backend eager"
INT8_FLOAT32_ONLY: Final = (
    "runtime.quantization int8 keeps activations in float32: model.dtype must be auto or float32"
)
ONNX_FLOAT32_ONLY: Final = (
    "runtime.backend onnxruntime runs the float32 export: model.dtype must be auto or float32"
)
GRAPH_TASKS_ONLY: Final = (
    "runtime.backend onnxruntime and compile serve only the tasks "
    + ", ".join(contract.GRAPH_TASKS)
)


def backend_problem(spec: ServingSpec) -> str | None:
    """The first backend rule ``spec`` breaks, or None."""
    runtime, model = spec.runtime, spec.model
    if runtime.quantization == Quantization.INT8:
        if spec.resources.gpu > 0:
            return INT8_CPU_ONLY
        if runtime.backend != Backend.EAGER:
            return INT8_EAGER_ONLY
        if model.dtype not in (Dtype.AUTO, Dtype.FLOAT32):
            return INT8_FLOAT32_ONLY
    if runtime.backend == Backend.ONNXRUNTIME and model.dtype not in (Dtype.AUTO, Dtype.FLOAT32):
        return ONNX_FLOAT32_ONLY
    if runtime.backend != Backend.EAGER and model.task.value not in contract.GRAPH_TASKS:
        return GRAPH_TASKS_ONLY
    return None


class MultimodalModelSpec(ServingSpec):
    """The desired state of a MultimodalModel."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.autoscaling) || !self.autoscaling.metrics.exists(m, m.type == 'GPU')"
                " || self.resources.gpu > 0",
                "a GPU autoscaling metric needs resources.gpu > 0",
                ".autoscaling.metrics",
            ),
            (
                "self.runtime.batching.maxDelayMs"
                " <= self.runtime.batching.queueTimeoutSeconds * 1000",
                "maxDelayMs must not exceed queueTimeoutSeconds",
                ".runtime.batching.maxDelayMs",
            ),
            (
                "!has(self.runtime.env) || self.runtime.env.all(e, !(e.name in ["
                + ", ".join(f"'{n}'" for n in contract.RESERVED_ENV)
                + "]))",
                "runtime.env may not set a variable the operator sets itself: "
                + ", ".join(contract.RESERVED_ENV),
                ".runtime.env",
            ),
            (
                "!self.model.source.startsWith('pvc://')"
                " || !self.model.source.matches('/[.][.](/|$)')",
                "a pvc:// path may not contain '..' segments",
                ".model.source",
            ),
            (
                "!has(self.runtime.quantization) || self.runtime.quantization != 'int8'"
                " || !has(self.resources.gpu) || self.resources.gpu == 0",
                INT8_CPU_ONLY,
                ".runtime.quantization",
            ),
            (
                "!has(self.runtime.quantization) || self.runtime.quantization != 'int8'"
                " || !has(self.runtime.backend) || self.runtime.backend == 'eager'",
                INT8_EAGER_ONLY,
                ".runtime.quantization",
            ),
            (
                "!has(self.runtime.quantization) || self.runtime.quantization != 'int8'"
                " || !has(self.model.dtype) || self.model.dtype in ['auto', 'float32']",
                INT8_FLOAT32_ONLY,
                ".runtime.quantization",
            ),
            (
                "!has(self.runtime.backend) || self.runtime.backend != 'onnxruntime'"
                " || !has(self.model.dtype) || self.model.dtype in ['auto', 'float32']",
                ONNX_FLOAT32_ONLY,
                ".runtime.backend",
            ),
            (
                "!has(self.runtime.backend) || self.runtime.backend == 'eager'"
                " || self.model.task in ["
                + ", ".join(f"'{t}'" for t in contract.GRAPH_TASKS)
                + "]",
                GRAPH_TASKS_ONLY,
                ".runtime.backend",
            ),
        )
    )

    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Pods of the stable version when autoscaling is absent."""
    autoscaling: Autoscaling | None = None
    """Horizontal autoscaling on CPU, QPS and GPU utilisation."""
    traffic: Traffic = Field(default_factory=Traffic)
    """Routing."""
    rollout: Rollout = Field(default_factory=Rollout)
    """Canary rollout."""

    @model_validator(mode="after")
    def _cross(self) -> MultimodalModelSpec:
        if (
            self.autoscaling is not None
            and self.resources.gpu == 0
            and any(m.type == MetricType.GPU for m in self.autoscaling.metrics)
        ):
            raise ValueError("a GPU autoscaling metric needs resources.gpu > 0")
        batching = self.runtime.batching
        if batching.max_delay_ms > batching.queue_timeout_seconds * 1000:
            raise ValueError("runtime.batching.maxDelayMs must not exceed queueTimeoutSeconds")
        reserved = [e.name for e in self.runtime.env if e.name in contract.RESERVED_ENV]
        if reserved:
            raise ValueError(
                f"runtime.env: {', '.join(reserved)}: set by the operator itself, "
                "cannot be set here"
            )
        problem = backend_problem(self)
        if problem:
            raise ValueError(problem)
        # The path becomes a plain file path in the pod: '..' would leave the claim's mount.
        if self.model.source.startswith("pvc://") and ".." in self.model.source.split("/"):
            raise ValueError("model.source: a pvc:// path may not contain '..' segments")
        return self

    def serving(self) -> ServingSpec:
        """The part of the spec that shapes pods."""
        return ServingSpec.model_validate({k: getattr(self, k) for k in ServingSpec.model_fields})

    def revision(self) -> str:
        """The revision of the serving part only: scaling and rollout settings apply in place."""
        return self.serving().revision()


# --- status ----------------------------------------------------------------------------------
class Condition(_Model):
    """A metav1.Condition."""

    type: Annotated[str, Field(max_length=316)]
    """Ready, Progressing, ..."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: Annotated[str, Field(max_length=1024)]
    """A CamelCase reason."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details."""
    last_transition_time: str
    """When the status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The generation the condition was set for."""


class CheckResult(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class QualitySource(StrEnum):
    GOLDEN = "golden"
    LIVE = "live"


class QualityCheck(_Model):
    """The quality part of a check: canary answers scored against the stable's."""

    source: QualitySource
    """golden (the golden set, before any weight) or live (mirrored requests in the interval)."""
    metric: str
    """The scoring metric of the task (embedding_cosine, label_agreement, text_similarity or
    word_error_rate)."""
    samples: int = 0
    """Compared items."""
    score: float | None = None
    """The mean score over the compared items."""
    threshold: float
    """The spec's threshold for this metric (a minimum; a maximum for word_error_rate)."""
    result: CheckResult
    """Passed, Failed or Inconclusive."""
    scores: dict[str, float] = Field(default_factory=dict)
    """The mean score per metric seen (normally the task's one metric)."""


class LastCheck(_Model):
    """The latest canary analysis."""

    time: str
    """When it ran."""
    error_rate: float | None = None
    """Error share (5xx, and 4xx except 429) among canary inference requests in the interval."""
    latency_p99_ms: float | None = None
    """p99 request latency in the interval, in milliseconds."""
    requests: int = 0
    """Canary inference requests in the interval."""
    result: CheckResult
    """Passed, Failed or Inconclusive."""
    message: str = ""
    """Why."""
    quality: QualityCheck | None = None
    """The quality comparison, when spec.rollout.quality is set."""

    stable_error_rate: float | None = None
    """The stable version's error rate the canary was compared with (this interval's, or the
    last one measured when the stable had too little traffic); none: compared with 0."""
    stable_requests: int | None = None
    """Stable inference requests in the same interval."""


class MetricsSnapshot(_Model):
    """Cumulative canary counters at the last analysis; the next one uses the difference."""

    requests: float = 0
    """Inference requests answered."""
    errors: float = 0
    """Of which errors: 5xx, and 4xx except 429."""
    buckets: dict[str, float] = Field(default_factory=dict)
    """Cumulative latency histogram buckets by upper bound (le)."""
    pods: list[str] = Field(default_factory=list)
    """The pods the counters came from (a restarted pod resets its counters)."""
    quality_sum: dict[str, float] = Field(default_factory=dict)
    """Cumulative sum of live comparison scores, by scoring metric."""
    quality_count: dict[str, float] = Field(default_factory=dict)
    """Cumulative number of live comparisons, by scoring metric."""


class CapacityStatus(_Model):
    """How the canary gets its GPUs: the plan and what the cluster had when last looked."""

    mode: CapacityMode | None = None
    """Surge or Swap, as chosen (none yet: held before a mode could be chosen)."""
    gpus_per_replica: int = 0
    """GPUs (of the model's gpuResource) one pod asks for."""
    gpus_needed: int = 0
    """GPUs the canary's next pods need (0: it has what its weight calls for)."""
    gpus_free: int | None = None
    """GPUs free on the nodes the model's pods may use (None: unknown)."""
    lent_replicas: int = 0
    """Swap: replicas the stable has given up for the canary (returned on rollback)."""
    stable_replicas: int = 0
    """The stable's replicas before it lent any (what a rollback gives back)."""
    canary_replicas: int = 0
    """Canary pods the plan allows now (their GPUs are free or lent)."""
    held: bool = False
    """The canary waits for GPUs (condition Progressing=False, reason InsufficientGPU)."""
    message: str = ""
    """The plan in one line: what is needed, what is free, what was lent."""


class RolloutStatus(_Model):
    """Progress of the current canary."""

    step: int = 0
    """Index of the current step; the weight is steps[step] once the canary is verified."""
    failed_checks: int = 0
    """Failed analyses so far."""
    started_at: str | None = None
    """When this canary was created (a GPU canary that waited for GPUs: when it got them).
    progressDeadlineSeconds counts from here."""
    verified_at: str | None = None
    """When the canary became available and passed its readiness check and test inference."""
    last_step_at: str | None = None
    """When the weight last changed or the last analysis ran."""
    last_check: LastCheck | None = None
    """The latest analysis."""
    baseline: MetricsSnapshot | None = None
    """Counters at the latest analysis."""
    stable_baseline: MetricsSnapshot | None = None
    """The stable version's counters at the same moment (its error rate is the reference)."""
    inconclusive_since: str | None = None
    """When the checks after verification started coming back inconclusive; after
    progressDeadlineSeconds of that the canary is rolled back."""
    capacity: CapacityStatus | None = None
    """GPU models: how the canary gets its GPUs (spec.rollout.capacity)."""


class VersionRole(StrEnum):
    STABLE = "Stable"
    CANARY = "Canary"
    RETIRING = "Retiring"


class Mirror(_Model):
    """Where a version's pods mirror a share of their requests (MMOP_MIRROR_URL and
    MMOP_MIRROR_PERCENT): set on a canary under a quality gate."""

    version: str
    """The version whose Service receives the mirrored requests (the stable when the canary
    was created)."""
    percent: Annotated[int, Field(ge=1, le=100)]
    """Share of requests mirrored, in percent."""


class VersionStatus(_Model):
    """One live version."""

    name: str
    """Version name (also the suffix of its Deployment and Service)."""
    revision: str
    """Hash of its serving spec."""
    role: VersionRole
    """Stable, Canary or Retiring (old stable kept for scaleDownDelaySeconds)."""
    weight: int = 0
    """Its share of traffic in percent."""
    replicas: int = 0
    """Pods."""
    ready_replicas: int = 0
    """Ready pods."""
    retire_after: str | None = None
    """Retiring versions: when their objects are deleted."""
    mirror: Mirror | None = None
    """Retiring versions: the mirror settings their pods run with (kept if they come back)."""


class HistoryResult(StrEnum):
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    CANCELLED = "Cancelled"


class HistoryEntry(_Model):
    """A finished rollout."""

    version: str
    """The canary's version."""
    revision: str = ""
    """The canary's revision."""
    result: HistoryResult
    """Promoted, RolledBack, Superseded (a newer revision replaced it) or Cancelled (the spec
    went back to the stable revision)."""
    reason: str = ""
    """Why."""
    finished_at: str
    """When."""


class CommandResult(StrEnum):
    ACCEPTED = "Accepted"
    REFUSED = "Refused"


class CommandStatus(_Model):
    """The latest rollout command (`mmop rollout promote|abort|retry`) and what came of it."""

    command: str
    """promote, abort or retry (as requested)."""
    id: str
    """The request's id (the nonce in the mmop.io/rollout-command annotation); a request whose
    id is here has been handled and is never applied again."""
    result: CommandResult
    """Accepted or Refused."""
    message: str = ""
    """What was done, or why nothing was."""
    time: str
    """When the operator handled it."""


class MultimodalModelStatus(_Model):
    """The observed state; all rollout progress lives here so a restart resumes."""

    observed_generation: int | None = None
    """The generation last reconciled."""
    phase: Phase = Phase.PENDING
    """Pending, Deploying, Ready, Progressing, Promoting, RollingBack, Failed or Degraded."""
    message: str = ""
    """A one-line summary of the current state."""
    stable_version: str | None = None
    """The version serving by default."""
    stable_revision: str | None = None
    """Its revision."""
    stable_spec: ServingSpec | None = None
    """The serving spec of the stable version (so it keeps running while the spec moves on)."""
    canary_version: str | None = None
    """The version being rolled out."""
    canary_revision: str | None = None
    """Its revision."""
    canary_weight: int = 0
    """The canary's share of traffic in percent."""
    failed_revision: str | None = None
    """The last revision rolled back; it is not retried until the spec changes."""
    replicas: int = 0
    """Pods of all versions."""
    ready_replicas: int = 0
    """Ready pods of all versions."""
    selector: str = ""
    """Label selector of all the model's pods (for the scale subresource)."""
    url: str | None = None
    """The in-cluster URL of the model."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready and Progressing (metav1.Condition)."""
    rollout: RolloutStatus | None = None
    """The running canary's progress."""
    versions: list[VersionStatus] = Field(default_factory=list)
    """Live versions with their weights."""
    history: Annotated[list[HistoryEntry], Field(max_length=10)] = Field(default_factory=list)
    """The last 10 finished rollouts, newest last."""
    stable_mirror: Mirror | None = None
    """The mirror settings the stable's pods were created with as a canary; kept after the
    promotion so that it restarts no pod."""
    last_command: CommandStatus | None = None
    """The latest rollout command and its result."""
    hub_commits: Annotated[dict[str, str], Field(max_length=16)] = Field(default_factory=dict)
    """hf:// sources: the commit each live revision's hub revision (a branch or tag) was
    resolved to when it was first deployed, by revision; its pods download exactly that."""


class ObjectMeta(BaseModel):
    """The metadata the operator reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=MAX_NAME_WITH_VERSION)]
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class MultimodalModel(BaseModel):
    """A whole MultimodalModel object."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, extra="forbid")

    api_version: Literal["mmop.io/v1alpha1"] = API_VERSION
    kind: Literal["MultimodalModel"] = KIND
    metadata: ObjectMeta
    spec: MultimodalModelSpec
    status: MultimodalModelStatus = Field(default_factory=MultimodalModelStatus)

    @model_validator(mode="after")
    def _name_fits(self) -> MultimodalModel:
        # Version names can grow by a 7-character revision suffix (see naming).
        room = MAX_NAME_WITH_VERSION - len(self.metadata.name) - 1 - 7
        if len(self.spec.version) > room:
            raise ValueError(
                f"metadata.name and spec.version together are too long: "
                f"len(name) + len(version) must be at most {MAX_NAME_WITH_VERSION - 8}"
            )
        return self


# --- helpers -----------------------------------------------------------------------------------
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """'1m30s' -> 90 s (the Go duration subset the CRD pattern allows)."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"not a duration: {text!r}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def format_validation_error(error: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming the field by its path in the YAML."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"] if p not in ("function-after",))
        path = f"{prefix}{path}" if path else prefix.rstrip(".") or "(object)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


class InvalidSpecError(ValueError):
    """A MultimodalModel that fails validation; the message names the fields."""


def parse_model(obj: dict[str, Any]) -> MultimodalModel:
    """Validate a whole object (as read from YAML or the API) or raise InvalidSpecError."""
    try:
        return MultimodalModel.model_validate(obj)
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error)) from None


def parse_spec(spec: dict[str, Any]) -> MultimodalModelSpec:
    try:
        return MultimodalModelSpec.model_validate(spec)
    except ValidationError as error:
        raise InvalidSpecError(format_validation_error(error, prefix="spec.")) from None
