"""Constants shared by the runtime and the operator: port, probe paths, tasks, backends, metric
and env names.

This module is the only part of ``mmop.runtime`` the operator imports, so it must stay
standard-library only (no torch, no transformers, no web framework).
"""

from __future__ import annotations

import base64
import io
import math
import struct
import wave
import zlib
from enum import StrEnum
from typing import Any, Final

# --- network -------------------------------------------------------------------------------
HTTP_PORT: Final = 8080
HTTP_PORT_NAME: Final = "http"
# OIP v2 over gRPC (inference.GRPCInferenceService), beside HTTP; 0 disables it.
GRPC_PORT: Final = 8081
GRPC_PORT_NAME: Final = "grpc"

# --- Open Inference Protocol v2 paths --------------------------------------------------------
LIVE_PATH: Final = "/v2/health/live"
READY_PATH: Final = "/v2/health/ready"
SERVER_METADATA_PATH: Final = "/v2"
METRICS_PATH: Final = "/metrics"
EMBEDDINGS_PATH: Final = "/v1/embeddings"


def model_path(name: str) -> str:
    """``/v2/models/{name}``: model metadata."""
    return f"/v2/models/{name}"


def model_ready_path(name: str) -> str:
    return f"/v2/models/{name}/ready"


def infer_path(name: str) -> str:
    return f"/v2/models/{name}/infer"


# --- tasks ---------------------------------------------------------------------------------
TASK_IMAGE_TEXT_EMBEDDING: Final = "image-text-embedding"
TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: Final = "zero-shot-image-classification"
TASK_IMAGE_TO_TEXT: Final = "image-to-text"
TASK_ASR: Final = "automatic-speech-recognition"
TASK_IMAGE_CLASSIFICATION: Final = "image-classification"
TASKS: Final = (
    TASK_IMAGE_TEXT_EMBEDDING,
    TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
    TASK_IMAGE_TO_TEXT,
    TASK_ASR,
    TASK_IMAGE_CLASSIFICATION,
)
# Tasks whose forward is a fixed graph (no generate() loop): the ones a backend other than eager
# serves, since only such a graph can be exported or compiled.
GRAPH_TASKS: Final = (
    TASK_IMAGE_TEXT_EMBEDDING,
    TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
    TASK_IMAGE_CLASSIFICATION,
)


# --- acceleration backends and quantization (spec runtime.backend, runtime.quantization) -----
class Backend(StrEnum):
    EAGER = "eager"
    ONNXRUNTIME = "onnxruntime"
    COMPILE = "compile"


class Quantization(StrEnum):
    NONE = "none"
    INT8 = "int8"


# --- environment variables read by ``mmop-runtime`` (each mirrors a CLI option) --------------
ENV_MODEL: Final = "MMOP_MODEL"
ENV_REVISION: Final = "MMOP_REVISION"
ENV_TASK: Final = "MMOP_TASK"
ENV_NAME: Final = "MMOP_NAME"
ENV_VERSION: Final = "MMOP_VERSION"
ENV_HOST: Final = "MMOP_HOST"
ENV_PORT: Final = "MMOP_PORT"
ENV_GRPC_PORT: Final = "MMOP_GRPC_PORT"
ENV_MAX_BATCH_SIZE: Final = "MMOP_MAX_BATCH_SIZE"
ENV_MAX_DELAY_MS: Final = "MMOP_MAX_DELAY_MS"
ENV_MAX_QUEUE_SIZE: Final = "MMOP_MAX_QUEUE_SIZE"
ENV_QUEUE_TIMEOUT_SECONDS: Final = "MMOP_QUEUE_TIMEOUT_SECONDS"
ENV_DEVICE: Final = "MMOP_DEVICE"
ENV_DTYPE: Final = "MMOP_DTYPE"
ENV_BACKEND: Final = "MMOP_BACKEND"  # a Backend
ENV_QUANTIZATION: Final = "MMOP_QUANTIZATION"  # a Quantization
ENV_TRUST_REMOTE_CODE: Final = "MMOP_TRUST_REMOTE_CODE"
ENV_AUTH_TOKEN: Final = "MMOP_AUTH_TOKEN"  # optional bearer token; from a Secret in the spec
ENV_CACHE_DIR: Final = "MMOP_CACHE_DIR"
ENV_PVC_MOUNT_ROOT: Final = (
    "MMOP_PVC_MOUNT_ROOT"  # where pvc:// claims are mounted (PVC_MOUNT_ROOT)
)
ENV_LOG_LEVEL: Final = "MMOP_LOG_LEVEL"
ENV_PREPROCESS_THREADS: Final = "MMOP_PREPROCESS_THREADS"
ENV_PREPROCESS_PROCESSES: Final = "MMOP_PREPROCESS_PROCESSES"
ENV_DRAIN_TIMEOUT_SECONDS: Final = (
    "MMOP_DRAIN_TIMEOUT_SECONDS"  # SIGTERM: longest wait for in-flight
)
# Input limits (each a 4xx when exceeded; see docs/runtime.md).
ENV_MAX_REQUEST_BYTES: Final = "MMOP_MAX_REQUEST_BYTES"
ENV_MAX_IMAGE_PIXELS: Final = "MMOP_MAX_IMAGE_PIXELS"
ENV_MAX_AUDIO_SECONDS: Final = "MMOP_MAX_AUDIO_SECONDS"
ENV_MAX_ITEMS_PER_REQUEST: Final = "MMOP_MAX_ITEMS_PER_REQUEST"
ENV_MAX_LABELS: Final = "MMOP_MAX_LABELS"
ENV_MAX_TEXT_CHARS: Final = "MMOP_MAX_TEXT_CHARS"
ENV_MAX_NEW_TOKENS: Final = "MMOP_MAX_NEW_TOKENS"
# Fault injection, for testing rollbacks end to end (never set by the operator itself).
ENV_FAULT_ERROR_RATE: Final = "MMOP_FAULT_ERROR_RATE"  # fraction of infer requests answered 500
ENV_FAULT_LATENCY_MS: Final = "MMOP_FAULT_LATENCY_MS"  # extra latency added to every infer
# "true": requests with the smoke-test header are spared the injected errors (a canary that
# passes its test inference and then fails in the analysis, the path a rollout test wants)
ENV_FAULT_SPARE_SMOKE_TEST: Final = "MMOP_FAULT_SPARE_SMOKE_TEST"
# "true": infer answers are wrong but well-formed (scores and embeddings negated, strings
# replaced by FAULT_WRONG_TEXT); with the spare above, the operator's own requests (test
# inference, golden set) get right answers: a canary that passes the golden set, then answers
# real traffic differently from stable (what the live comparison must stop).
ENV_FAULT_WRONG_ANSWERS: Final = "MMOP_FAULT_WRONG_ANSWERS"
FAULT_WRONG_TEXT: Final = "mmop injected wrong answer"
# The container's memory limit in bytes (the operator sets it from the Downward API's
# limits.memory); the runtime fits its queue and receive buffers into it.
ENV_MEMORY_LIMIT_BYTES: Final = "MMOP_MEMORY_LIMIT_BYTES"
ENV_BODY_TIMEOUT_SECONDS: Final = "MMOP_BODY_TIMEOUT_SECONDS"  # a slower body gets 408
ENV_MAX_CONNECTIONS: Final = "MMOP_MAX_CONNECTIONS"  # open connections; more get 503

# Quality gate (issue 12): only the canary's Deployment gets these. A sample of its successful
# OIP infer requests is re-sent to MMOP_MIRROR_URL (the stable version's Service base URL, e.g.
# http://NAME-STABLEVERSION.NAMESPACE.svc.cluster.local:8080) and both answers are scored.
ENV_MIRROR_URL: Final = "MMOP_MIRROR_URL"
ENV_MIRROR_PERCENT: Final = "MMOP_MIRROR_PERCENT"  # 0-100: share of infer requests mirrored

# Where the Deployment mounts the writable model cache (HF_HOME points inside it).
CACHE_MOUNT_PATH: Final = "/var/cache/mmop"
SHM_MOUNT_PATH: Final = "/dev/shm"
PVC_MOUNT_ROOT: Final = "/mnt/models"

# --- Prometheus metrics (names as exposed, without the _total/_bucket suffixes) --------------
METRIC_REQUESTS: Final = "mmop_requests"  # counter, exposed as mmop_requests_total
METRIC_REQUEST_DURATION: Final = "mmop_request_duration_seconds"  # histogram
METRIC_QUEUE_DEPTH: Final = "mmop_queue_depth"
METRIC_QUEUE_WAIT: Final = "mmop_queue_wait_seconds"
METRIC_BATCH_SIZE: Final = "mmop_batch_size"
METRIC_INFERENCE_DURATION: Final = "mmop_inference_duration_seconds"
METRIC_REJECTED: Final = "mmop_rejected_requests"  # counter, label reason
METRIC_MODEL_LOAD: Final = "mmop_model_load_seconds"
METRIC_GPU_UTILIZATION: Final = "mmop_gpu_utilization_percent"
METRIC_GPU_MEMORY_USED: Final = "mmop_gpu_memory_used_bytes"
METRIC_RECEIVING: Final = "mmop_receiving_requests"  # gauge: bodies arriving, not yet admitted
# Counter: the preprocessing worker processes replaced after one died (--preprocess-processes).
METRIC_PREPROCESS_WORKERS_REPLACED: Final = "mmop_preprocess_workers_replaced"
# Derived by prometheus-adapter (rate of mmop_requests_total) for the HPA Pods metric.
METRIC_REQUESTS_PER_SECOND: Final = "mmop_requests_per_second"
# Labels on mmop_requests_total.
LABEL_MODEL: Final = "model"
LABEL_ENDPOINT: Final = "endpoint"
LABEL_CODE: Final = "code"
# The ``endpoint`` label values of inference calls: OIP infer and /v1/embeddings over HTTP, and
# ModelInfer over gRPC (whose ``code`` label is the HTTP status the same answer has over HTTP).
ENDPOINT_GRPC_INFER: Final = "grpc_infer"
INFER_ENDPOINTS: Final = ("infer", "embeddings", ENDPOINT_GRPC_INFER)
# The other ``endpoint`` label values: server/model metadata, probes, anything else.
ENDPOINT_METADATA: Final = "metadata"
ENDPOINT_HEALTH: Final = "health"
ENDPOINT_OTHER: Final = "other"
ENDPOINT_SMOKE: Final = "smoke"
# Requests the operator sends as smoke tests carry this header, so that analysis can tell them
# apart from user traffic (the runtime counts them with endpoint="smoke"). Its value must be
# the pod's smoke-test token (ENV_SMOKE_TEST_TOKEN, from a per-model Secret the operator makes):
# any other value, or a pod without a token, counts the request as ordinary traffic, so a
# client cannot hide its requests from the canary analysis by sending the header.
SMOKE_TEST_HEADER: Final = "X-Mmop-Smoke-Test"
# Requests a canary mirrors to stable carry this header, valued with the per-model smoke-test
# token; the receiver counts them with endpoint="mirror" (only when the token matches), so they
# never count as user traffic in either version's analysis.
MIRROR_HEADER: Final = "X-Mmop-Mirror"
ENDPOINT_MIRROR: Final = "mirror"
# Quality gate metrics, on the canary's pods.
# Summary without quantiles, label ``metric`` (a mmop.runtime.scoring metric name): exposed as
# mmop_quality_score_sum / mmop_quality_score_count; one observation per compared batch item.
METRIC_QUALITY_SCORE: Final = "mmop_quality_score"
LABEL_METRIC: Final = "metric"
# Counter, label ``result``: exposed as mmop_mirror_requests_total.
METRIC_MIRROR_REQUESTS: Final = "mmop_mirror_requests"
LABEL_RESULT: Final = "result"
MIRROR_COMPARED: Final = "compared"  # both answered; scores observed
MIRROR_DROPPED: Final = "dropped"  # not sent: the mirror queue was full or the target backed off
MIRROR_ERROR: Final = "error"  # the target failed: connection error, timeout, non-200, too big
MIRROR_INCOMPARABLE: Final = "incomparable"  # both answered but score_pair refused the pair
MIRROR_RESULTS: Final = (MIRROR_COMPARED, MIRROR_DROPPED, MIRROR_ERROR, MIRROR_INCOMPARABLE)
ENV_SMOKE_TEST_TOKEN: Final = "MMOP_SMOKE_TEST_TOKEN"
# The Secret key holding the token; the Secret is named by smoke_test_secret_name().
SMOKE_TEST_SECRET_KEY: Final = "token"
# ASGI scope key the runtime sets on a request that carries a genuine smoke-test header.
SMOKE_TEST_SCOPE_KEY: Final = "mmop.smoke_test"


def smoke_test_secret_name(model: str) -> str:
    """The per-model Secret holding the smoke-test token (Secrets share no names with the
    versioned children, so NAME-VERSION cannot collide with it)."""
    return f"{model}-mmop-smoke-test"


# --- smoke-test payloads (one per modality), used by the operator before giving weight --------
def tiny_png(*, width: int = 32, height: int = 32) -> bytes:
    """A small RGB gradient PNG, built with the standard library only."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
    return png_file(width, height, bytes(rows))


def png_file(width: int, height: int, scanlines: bytes) -> bytes:
    """An 8-bit RGB PNG whose header says ``width`` x ``height``, holding ``scanlines``.

    The header is not checked against the data: tests build decompression bombs with it.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def tiny_wav(*, seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A short 16-bit mono sine tone as a WAV file."""
    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return buf.getvalue()


def _bytes_input(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


def smoke_test_request(task: str) -> dict[str, Any]:
    """An OIP v2 infer request body that exercises the whole pipeline of ``task``."""
    image = base64.b64encode(tiny_png()).decode()
    if task == TASK_IMAGE_TEXT_EMBEDDING:
        inputs = [_bytes_input("image", [image]), _bytes_input("text", ["a photo"])]
    elif task == TASK_ZERO_SHOT_IMAGE_CLASSIFICATION:
        inputs = [_bytes_input("image", [image]), _bytes_input("labels", ["a cat", "a dog"])]
    elif task in (TASK_IMAGE_TO_TEXT, TASK_IMAGE_CLASSIFICATION):
        inputs = [_bytes_input("image", [image])]
    elif task == TASK_ASR:
        inputs = [_bytes_input("audio", [base64.b64encode(tiny_wav()).decode()])]
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return {"id": "mmop-smoke-test", "inputs": inputs}


# --- env the operator owns -------------------------------------------------------------------
# Names a MultimodalModel's spec.runtime.env may not set: the operator sets them from the spec
# (overriding them would bypass a field such as trustRemoteCode, or put the auth token in plain
# text), or they move where the runtime looks for its files. The CRD (CEL) and the operator
# refuse them; the builders never copy them from the spec. Every name the builders set must be
# here (a unit test checks).
RESERVED_ENV: Final = (
    ENV_MODEL,
    ENV_REVISION,
    ENV_TASK,
    ENV_NAME,
    ENV_VERSION,
    ENV_HOST,
    ENV_PORT,
    ENV_MAX_BATCH_SIZE,
    ENV_MAX_DELAY_MS,
    ENV_MAX_QUEUE_SIZE,
    ENV_QUEUE_TIMEOUT_SECONDS,
    ENV_DEVICE,
    ENV_DTYPE,
    ENV_BACKEND,
    ENV_QUANTIZATION,
    ENV_TRUST_REMOTE_CODE,
    ENV_AUTH_TOKEN,
    ENV_CACHE_DIR,
    ENV_PVC_MOUNT_ROOT,
    ENV_GRPC_PORT,
    ENV_MEMORY_LIMIT_BYTES,
    ENV_SMOKE_TEST_TOKEN,
    ENV_MIRROR_URL,
    ENV_MIRROR_PERCENT,
    "HF_HOME",
)
# Fault injection: refused like the above unless the operator runs with
# MMOP_OPERATOR_ALLOW_FAULT_ENV=true (tests and `mmop dev` only).
FAULT_ENV_PREFIX: Final = "MMOP_FAULT_"
