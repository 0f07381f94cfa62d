"""The memory plan: request limits fitted into the pod's memory limit (pure arithmetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmop.runtime import contract, memory
from mmop.runtime.settings import RuntimeSettings

GIB = 1024**3
MIB = 1024**2
# A 224x224 RGB pixel tensor in float32, the sample of the CLIP/ViT family.
PIXELS_224 = 3 * 224 * 224 * 4


def settings(
    task: str = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION, **values: object
) -> RuntimeSettings:
    return RuntimeSettings(model="/m", task=task, preprocess_threads=4, **values)  # type: ignore[arg-type]


def test_the_default_pod_fits_its_worst_case() -> None:
    # The defaults (queue 256, 32 MiB bodies, 64 items) in the default pod (16 Gi) beside a
    # model of 2 GiB: the queue alone could hold 25 GiB; the plan bounds it to fit.
    config = settings()
    plan = memory.plan_memory(
        config, limit_bytes=16 * GIB, baseline_bytes=2 * GIB, sample_bytes=PIXELS_224
    )
    assert config.max_queue_size * plan.request_bytes > 16 * GIB
    assert plan.admit_bytes is not None
    assert plan.fits and plan.worst_case_bytes <= 16 * GIB
    assert plan.queue_size == config.max_queue_size
    assert plan.receive_bytes >= config.max_request_bytes


def test_requests_cost_what_their_body_can_hold() -> None:
    plan = memory.plan_memory(
        settings(), limit_bytes=16 * GIB, baseline_bytes=GIB, sample_bytes=PIXELS_224
    )
    # One small image: its body twice and one sample (a 24-byte body could hold 2 items).
    assert plan.request_cost(100) == 200 + 5 * PIXELS_224
    # 64 tiny images in 4 KB still make 64 samples; the item limit caps the estimate.
    assert plan.request_cost(4096) == 8192 + 64 * PIXELS_224
    assert plan.request_cost(32 * MIB) == plan.request_bytes
    # A 200 KB image is costed as 64 tiny ones would be, still 3 x below the worst case:
    # some 200 such requests fit at once, against 77 at the worst case.
    assert plan.admit_bytes is not None
    assert plan.admit_bytes // plan.request_cost(200_000) > 200
    assert plan.admit_bytes // plan.request_bytes < 100


def test_a_pod_too_small_still_serves_one_request_and_says_it_does_not_fit() -> None:
    plan = memory.plan_memory(
        settings(), limit_bytes=2 * GIB, baseline_bytes=2 * GIB, sample_bytes=PIXELS_224
    )
    assert plan.admit_bytes == 0
    assert plan.receive_bytes == 32 * MIB
    assert not plan.fits
    assert "worst case" in plan.describe()


def test_without_a_limit_the_configured_values_stand() -> None:
    plan = memory.plan_memory(settings(), limit_bytes=None, baseline_bytes=GIB, sample_bytes=1)
    assert plan.queue_size == 256
    assert plan.admit_bytes is None
    assert plan.receive_bytes == memory.RECEIVE_BODIES_UNBOUNDED * 32 * MIB == 64 * MIB
    assert plan.fits


def test_audio_decoding_is_costed_at_the_highest_accepted_rate() -> None:
    speech = settings(contract.TASK_ASR, max_audio_seconds=30.0)
    assert memory.decode_bytes_per_item(speech) == 24 * 30 * 192_000
    assert memory.decode_bytes_per_item(settings()) == 9 * 40_000_000


def test_memory_limit_prefers_the_configured_one(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    assert memory.memory_limit(5, v2=v2, v1=v1) == 5
    assert memory.memory_limit(None, v2=v2, v1=v1) is None
    v2.write_text("max\n")
    assert memory.memory_limit(None, v2=v2, v1=v1) is None
    v2.write_text("17179869184\n")
    assert memory.memory_limit(None, v2=v2, v1=v1) == 16 * GIB
    v2.unlink()
    v1.write_text(str(1 << 62))  # cgroup v1 without a limit
    assert memory.memory_limit(None, v2=v2, v1=v1) is None


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (np.zeros((3, 4), dtype=np.float32), 48),
        ({"a": np.zeros(2, dtype=np.int64), "b": "xyz"}, 19),
        ([b"ab", np.zeros(1, dtype=np.float64)], 10),
    ],
)
def test_data_bytes(data: object, size: int) -> None:
    assert memory.data_bytes(data) == size


def test_data_bytes_of_torch_tensors() -> None:
    import torch

    assert memory.data_bytes({"x": torch.zeros(2, 3)}) == 24
