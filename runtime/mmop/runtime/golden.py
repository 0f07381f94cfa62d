"""Built-in golden sets: varied OIP v2 infer requests per task, for the operator's quality gate.

The operator sends every sample to a stable pod and to a canary pod and compares the answers
(``mmop.runtime.scoring``). Standard library only, like ``contract``: the operator imports it.
The inputs are deterministic (fixed seeds), so the same task always gets the same set.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import struct
import wave
from collections.abc import Callable, Mapping
from typing import Any, Final

from mmop.runtime import contract

SAMPLES_PER_TASK: Final = 10
# Zero-shot label sets: varied sizes and wording, so top-1 agreement is a real signal.
_LABEL_SETS: Final = (
    ("a cat", "a dog", "a bird"),
    ("red", "green", "blue", "yellow"),
    ("a photo of a car", "a photo of a tree", "a photo of a house"),
    ("day", "night"),
    ("stripes", "dots", "plain", "noise", "gradient"),
)
_TEXTS: Final = (
    "a photo",
    "a red square",
    "two dogs playing in the snow",
    "a checkerboard pattern",
    "the quick brown fox jumps over the lazy dog",
)
_PROMPTS: Final = ("", "a picture of", "")


# --- images ----------------------------------------------------------------------------------
Pixel = Callable[[int, int], tuple[int, int, int]]


def _png(width: int, height: int, pixel: Pixel) -> bytes:
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(pixel(x, y))
    return contract.png_file(width, height, bytes(rows))


def _images() -> list[bytes]:
    """Ten small, different RGB images: gradients, checkerboards, flat colours, stripes, noise,
    in several sizes and aspect ratios."""
    rng = random.Random(12)
    noise = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(48 * 48)]

    def clamp(v: float) -> int:
        return max(0, min(255, int(v)))

    return [
        contract.tiny_png(width=32, height=32),
        _png(48, 24, lambda x, y: (clamp(255 - x * 5), clamp(y * 10), 40)),
        _png(32, 32, lambda x, y: (255, 255, 255) if (x // 4 + y // 4) % 2 else (0, 0, 0)),
        _png(40, 40, lambda x, y: (220, 30, 30)),
        _png(24, 48, lambda x, y: (20, 40, 200) if (x // 3) % 2 else (240, 220, 20)),
        _png(48, 48, lambda x, y: noise[y * 48 + x]),
        _png(
            36,
            36,
            lambda x, y: (30, 180, 60) if (x - 18) ** 2 + (y - 18) ** 2 < 120 else (250, 250, 250),
        ),
        _png(64, 16, lambda x, y: (clamp(128 + 127 * math.sin(x / 4)), 90, clamp(y * 16))),
        _png(16, 16, lambda x, y: (0, 0, 0)),
        _png(32, 48, lambda x, y: (clamp(x * 8), clamp(x * 8), clamp(255 - y * 5))),
    ]


# --- audio -----------------------------------------------------------------------------------
def _wav(samples: list[float], *, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(max(-1.0, min(1.0, s)) * 12000)) for s in samples)
        )
    return buf.getvalue()


def _clips() -> list[bytes]:
    """Ten short clips: tones of several pitches and lengths, chirps, chords, noise, silence."""
    rate = 16000
    rng = random.Random(34)

    def tone(freq: float, seconds: float) -> list[float]:
        return [math.sin(2 * math.pi * freq * i / rate) for i in range(int(seconds * rate))]

    def chirp(f0: float, f1: float, seconds: float) -> list[float]:
        n = int(seconds * rate)
        return [math.sin(2 * math.pi * (f0 + (f1 - f0) * i / (2 * n)) * i / rate) for i in range(n)]

    noise = [rng.uniform(-0.6, 0.6) for _ in range(int(0.5 * rate))]
    chord = [
        (a + b + c) / 3
        for a, b, c in zip(tone(262, 0.6), tone(330, 0.6), tone(392, 0.6), strict=True)
    ]
    return [
        _wav(tone(440, 0.5)),
        _wav(tone(220, 0.8)),
        _wav(tone(1000, 0.3)),
        _wav(chirp(200, 2000, 0.7)),
        _wav(chirp(3000, 300, 0.5)),
        _wav(noise),
        _wav(chord),
        _wav([0.0] * int(0.4 * rate)),
        _wav([s * (i / 8000) for i, s in enumerate(tone(660, 0.5))]),
        _wav(tone(150, 1.0)),
    ]


# --- requests --------------------------------------------------------------------------------
def _bytes_input(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def golden_set(task: str) -> dict[str, dict[str, Any]]:
    """The built-in golden set of ``task``: sample name -> OIP v2 infer request body."""
    if task not in contract.TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(contract.TASKS)}")
    samples: dict[str, dict[str, Any]] = {}
    if task == contract.TASK_ASR:
        for i, clip in enumerate(_clips()):
            samples[f"audio-{i:02d}"] = {"inputs": [_bytes_input("audio", [_b64(clip)])]}
        return samples
    for i, image in enumerate(_images()):
        encoded = _b64(image)
        inputs = [_bytes_input("image", [encoded])]
        if task == contract.TASK_IMAGE_TEXT_EMBEDDING:
            inputs.append(_bytes_input("text", [_TEXTS[i % len(_TEXTS)]]))
        elif task == contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION:
            inputs.append(_bytes_input("labels", list(_LABEL_SETS[i % len(_LABEL_SETS)])))
        elif task == contract.TASK_IMAGE_TO_TEXT and _PROMPTS[i % len(_PROMPTS)]:
            inputs.append(_bytes_input("prompt", [_PROMPTS[i % len(_PROMPTS)]]))
        samples[f"image-{i:02d}"] = {"inputs": inputs}
    return samples


class GoldenSetError(ValueError):
    """A golden-set sample that is not an OIP v2 infer request body."""


def parse_golden_set(data: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """A golden-set ConfigMap's ``data`` -> sample name -> request body, checked for the OIP v2
    shape (``inputs``: a non-empty list of tensors with name, shape, datatype and data).

    Raises GoldenSetError naming the first bad key, or when there is no sample at all.
    """
    if not data:
        raise GoldenSetError("the golden set has no samples (the ConfigMap's data is empty)")
    samples: dict[str, dict[str, Any]] = {}
    for key in sorted(data):
        try:
            body = json.loads(data[key])
        except ValueError as error:
            raise GoldenSetError(f"sample {key!r} is not JSON: {error}") from None
        problem = _request_problem(body)
        if problem:
            raise GoldenSetError(f"sample {key!r} is not an OIP v2 infer request: {problem}")
        samples[key] = body
    return samples


def _request_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "expected a JSON object"
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "'inputs' must be a non-empty list"
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            return f"inputs[{i}] must be an object"
        for key, kind in (("name", str), ("datatype", str), ("shape", list), ("data", list)):
            if not isinstance(tensor.get(key), kind):
                return f"inputs[{i}].{key} must be a {'string' if kind is str else 'list'}"
    return None
