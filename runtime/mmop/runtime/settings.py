"""Typed settings of ``mmop-runtime``: read once (CLI options over ``MMOP_*`` env) and passed down.

Every field is also a CLI option (``--max-batch-size`` for ``max_batch_size``) unless marked
``env_only``; the env name of a field is ``MMOP_`` + its upper-cased name, the names that
``contract`` lists for the operator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mmop.runtime import contract

Task = Literal[
    "image-text-embedding",
    "zero-shot-image-classification",
    "image-to-text",
    "automatic-speech-recognition",
    "image-classification",
]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
LogLevel = Literal["debug", "info", "warning", "error"]

ENV_PREFIX: Final = "MMOP_"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# A model name is a URL path segment and a Prometheus label value: keep it plain.
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIB: Final = 1024 * 1024


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (a pod's CPU
    limit), which ``os.cpu_count()`` ignores."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count or quota, quota)
    return max(1, count or 1)


def cgroup_cpu_quota(
    v2: Path = Path("/sys/fs/cgroup/cpu.max"),
    v1_quota: Path = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    v1_period: Path = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
) -> int | None:
    """Whole CPUs allowed by the cgroup quota (rounded up), or None without a quota."""
    try:
        if v2.exists():
            quota_text, _, period_text = v2.read_text().strip().partition(" ")
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text or "100000")
        elif v1_quota.exists():
            quota, period = int(v1_quota.read_text()), int(v1_period.read_text())
        else:
            return None
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def _default_threads() -> int:
    return min(4, available_cpus())


class RuntimeSettings(BaseSettings):
    """Everything ``mmop-runtime`` reads from its command line and environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    # --- what to serve ------------------------------------------------------------------------
    model: str = Field(
        min_length=1,
        description="model source: a directory, file:///abs/path, pvc://CLAIM/path, "
        "hf://org/name or org/name",
    )
    task: Task = Field(description="what the model does (one of the runtime's tasks)")
    name: str | None = Field(
        None, description="model name in URLs and metrics (default: the source's basename)"
    )
    model_version: str = Field(
        "",
        validation_alias=AliasChoices("model_version", contract.ENV_VERSION),
        description="version label reported in metadata and responses",
    )
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    trust_remote_code: bool = Field(False, description="run code shipped with a hub model")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    dtype: Dtype = Field(
        "auto",
        description="auto: fp16/bf16 autocast on GPU, fp32 on CPU; bfloat16 on CPU needs "
        "native bf16 (avx512_bf16, amx_bf16 or Arm bf16)",
    )
    backend: contract.Backend = Field(
        contract.Backend.EAGER,
        description="how the model runs: eager (torch), onnxruntime (exported to ONNX at load, "
        "cached under the cache dir) or compile (torch.compile at load); onnxruntime and "
        "compile serve the embedding and classification tasks",
    )
    quantization: contract.Quantization = Field(
        contract.Quantization.NONE,
        description="int8: dynamic int8 quantization of the Linear layers (CPU, eager)",
    )
    cache_dir: Path | None = Field(None, description="hub download cache (default: HF_HOME)")
    pvc_mount_root: Path = Field(
        Path(contract.PVC_MOUNT_ROOT), description="where pvc://CLAIM/... is mounted"
    )

    # --- HTTP ---------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(contract.HTTP_PORT, ge=0, le=65535, description="listen port")
    grpc_port: int = Field(
        contract.GRPC_PORT,
        ge=0,
        le=65535,
        description="OIP v2 gRPC listen port (same host); 0 disables gRPC",
    )
    auth_token: SecretStr | None = Field(
        None,
        description="when set, /v2/models/* and /v1/* need 'Authorization: Bearer <token>'",
        json_schema_extra={"env_only": True},  # never on a command line, where ps shows it
    )
    smoke_test_token: SecretStr | None = Field(
        None,
        description="requests whose X-Mmop-Smoke-Test header equals it are the operator's "
        "test inferences (counted apart from user traffic); unset: the header is ignored",
        json_schema_extra={"env_only": True},
    )
    log_level: LogLevel = Field("info", description="log level")
    access_log: bool = Field(False, description="log one line per HTTP request")

    # --- batching -----------------------------------------------------------------------------
    max_batch_size: int = Field(32, ge=1, le=4096, description="most inputs per forward pass")
    max_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="longest wait after the first input for a fuller batch"
    )
    max_queue_size: int = Field(
        256, ge=1, le=1_000_000, description="most requests admitted at once; more get 429"
    )
    queue_timeout_seconds: float = Field(
        30.0, gt=0, le=86_400, description="requests not started within this get 504"
    )
    preprocess_threads: int = Field(
        default_factory=_default_threads, ge=1, le=64, description="decoding thread pool size"
    )
    preprocess_processes: int | None = Field(
        None,
        ge=0,
        le=64,
        description="worker processes that parse and preprocess requests beside the serving "
        "process (0: threads only); default: one per CPU but one (at most 8) on a CUDA device "
        "with 3 or more CPUs, else 0",
    )
    drain_timeout_seconds: float = Field(
        30.0, ge=0, le=3600, description="on SIGTERM, longest wait for in-flight requests"
    )
    stuck_batch_seconds: float = Field(
        300.0, gt=0, description="a forward pass running longer than this fails liveness"
    )

    # --- input limits -------------------------------------------------------------------------
    max_request_bytes: int = Field(
        32 * MIB, ge=1024, description="largest request body (413 beyond)"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="largest decoded image, width x height"
    )
    max_audio_seconds: float = Field(30.0, gt=0, description="longest audio input")
    max_items_per_request: int = Field(
        64, ge=1, le=100_000, description="most images/texts/audios in one request"
    )
    max_labels: int = Field(64, ge=1, description="most labels in a zero-shot request")
    max_text_chars: int = Field(
        4096, ge=1, description="longest text, label or prompt (characters)"
    )
    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="tokens generated per input (the default and the cap)"
    )

    # --- fault injection (a test feature for rollouts; never set by the operator) -------------
    fault_error_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of inference requests answered 500"
    )
    fault_latency_ms: float = Field(
        0.0, ge=0, le=600_000, description="latency added to every inference request"
    )
    fault_spare_smoke_test: bool = Field(
        False,
        description="no injected errors for the operator's test inferences (requests "
        "with a genuine smoke-test header)",
    )
    fault_wrong_answers: bool = Field(
        False,
        description="well-formed but wrong infer answers (negated numbers, replaced strings); "
        "spared like the errors",
    )

    # --- memory and connections -----------------------------------------------------------------
    memory_limit_bytes: int | None = Field(
        None,
        gt=0,
        description="the container's memory limit (default: the cgroup's); the queue and the "
        "receive buffers are lowered to fit it",
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a request body must arrive within this (408 beyond)"
    )
    max_connections: int = Field(
        1024, ge=1, le=1_000_000, description="most open connections; more get 503 at once"
    )

    # --- quality gate: mirroring to stable (set by the operator on a canary only) -------------
    mirror_url: str | None = Field(
        None,
        description="base URL (http://host:port) that a sample of successful OIP infer requests "
        "is re-sent to after the client is answered, to score both answers",
    )
    mirror_percent: float = Field(
        0.0, ge=0, le=100, description="percentage of successful OIP infer requests mirrored"
    )
    mirror_max_inflight: int = Field(
        4, ge=1, le=1024, description="most mirrored requests in flight; more are dropped"
    )
    mirror_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="longest wait for the mirror target's whole answer"
    )

    @field_validator(
        "name",
        "revision",
        "cache_dir",
        "auth_token",
        "memory_limit_bytes",
        "preprocess_processes",
        "mirror_url",
        "smoke_test_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # Deployments often set an env var to "" rather than leave it out.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_token", mode="before")
    @classmethod
    def _strip_token(cls, value: Any) -> Any:
        # A Secret made from a file (kubectl create secret --from-file) ends with a newline that
        # no client sends: surrounding whitespace is never part of a bearer token (RFC 6750).
        return value.strip() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("expected auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError(
                "a model name is 1-128 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        return value

    @field_validator("mirror_url")
    @classmethod
    def _check_mirror_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("expected a base URL without query or fragment")
        return value.strip().rstrip("/")

    @property
    def mirror_enabled(self) -> bool:
        return self.mirror_url is not None and self.mirror_percent > 0

    @property
    def model_name(self) -> str:
        """The served name: ``--name``, else the basename of the source."""
        return self.name or default_model_name(self.model)

    @property
    def max_delay_seconds(self) -> float:
        return self.max_delay_ms / 1000.0

    def preprocess_process_count(self, device_type: str) -> int:
        """Worker processes for preprocessing on a device of ``device_type``: the setting, or
        the default. On a GPU the forward pass leaves the CPUs to decoding, which one process
        does on about one core; on a CPU device torch's threads use them for the forward pass."""
        if self.preprocess_processes is not None:
            return self.preprocess_processes
        cpus = available_cpus()
        return min(cpus - 1, 8) if device_type == "cuda" and cpus >= 3 else 0


def default_model_name(source: str) -> str:
    """The last path segment of a model source, made safe for URLs and metric labels."""
    path = source.split("://", 1)[-1].rstrip("/")
    base = PurePosixPath(path).name or "model"
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip("._-")
    return safe[:128] or "model"


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    info = RuntimeSettings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice.startswith(ENV_PREFIX):
                return choice
    return ENV_PREFIX + field.upper()


def cli_fields() -> dict[str, Any]:
    """The fields offered as CLI options (all but the env-only ones), by name."""
    return {
        name: info
        for name, info in RuntimeSettings.model_fields.items()
        if not (isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("env_only"))
    }
