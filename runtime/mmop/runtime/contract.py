"""Constants shared by the runtime and the operator: port, probe paths, metric and env names.

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
from typing import Any, Final

# --- network -------------------------------------------------------------------------------
HTTP_PORT: Final = 8080
HTTP_PORT_NAME: Final = "http"

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

# --- environment variables read by ``mmop-runtime`` (each mirrors a CLI option) --------------
ENV_MODEL: Final = "MMOP_MODEL"
ENV_REVISION: Final = "MMOP_REVISION"
ENV_TASK: Final = "MMOP_TASK"
ENV_NAME: Final = "MMOP_NAME"
ENV_VERSION: Final = "MMOP_VERSION"
ENV_HOST: Final = "MMOP_HOST"
ENV_PORT: Final = "MMOP_PORT"
ENV_MAX_BATCH_SIZE: Final = "MMOP_MAX_BATCH_SIZE"
ENV_MAX_DELAY_MS: Final = "MMOP_MAX_DELAY_MS"
ENV_MAX_QUEUE_SIZE: Final = "MMOP_MAX_QUEUE_SIZE"
ENV_QUEUE_TIMEOUT_SECONDS: Final = "MMOP_QUEUE_TIMEOUT_SECONDS"
ENV_DEVICE: Final = "MMOP_DEVICE"
ENV_DTYPE: Final = "MMOP_DTYPE"
ENV_TRUST_REMOTE_CODE: Final = "MMOP_TRUST_REMOTE_CODE"
ENV_AUTH_TOKEN: Final = "MMOP_AUTH_TOKEN"  # optional bearer token; from a Secret in the spec
ENV_CACHE_DIR: Final = "MMOP_CACHE_DIR"
ENV_PVC_MOUNT_ROOT: Final = (
    "MMOP_PVC_MOUNT_ROOT"  # where pvc:// claims are mounted (PVC_MOUNT_ROOT)
)
ENV_LOG_LEVEL: Final = "MMOP_LOG_LEVEL"
ENV_PREPROCESS_THREADS: Final = "MMOP_PREPROCESS_THREADS"
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
# Derived by prometheus-adapter (rate of mmop_requests_total) for the HPA Pods metric.
METRIC_REQUESTS_PER_SECOND: Final = "mmop_requests_per_second"
# Labels on mmop_requests_total.
LABEL_MODEL: Final = "model"
LABEL_ENDPOINT: Final = "endpoint"
LABEL_CODE: Final = "code"
# The ``endpoint`` label value for inference calls (OIP infer and /v1/embeddings).
INFER_ENDPOINTS: Final = ("infer", "embeddings")
# The other ``endpoint`` label values: server/model metadata, probes, anything else.
ENDPOINT_METADATA: Final = "metadata"
ENDPOINT_HEALTH: Final = "health"
ENDPOINT_OTHER: Final = "other"
ENDPOINT_SMOKE: Final = "smoke"
# Requests the operator sends as smoke tests carry this header, so that analysis can tell them
# apart from user traffic (the runtime counts them with endpoint="smoke").
SMOKE_TEST_HEADER: Final = "X-Mmop-Smoke-Test"


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
    ENV_TRUST_REMOTE_CODE,
    ENV_AUTH_TOKEN,
    ENV_CACHE_DIR,
    ENV_PVC_MOUNT_ROOT,
    "HF_HOME",
)
# Fault injection: refused like the above unless the operator runs with
# MMOP_OPERATOR_ALLOW_FAULT_ENV=true (tests and `mmop dev` only).
FAULT_ENV_PREFIX: Final = "MMOP_FAULT_"
