"""Benchmark inputs: a few deterministic photo-like PNG images and the request bodies for them.

Random noise compresses like nothing real, flat colours like nothing real either; these are
smooth gradients with shapes and mild sensor-like noise, which PNG-encode to about the size of
a photo of the same resolution. Bodies are built once, so the load generator only sends bytes.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageDraw

IMAGE_COUNT: Final = 4
IMAGE_SIDE: Final = 256
BODY_KINDS: Final = ("oip-json", "oip-binary", "simple-json")


def make_images(*, count: int = IMAGE_COUNT, side: int = IMAGE_SIDE, seed: int = 7) -> list[bytes]:
    """``count`` different RGB PNG files of ``side`` x ``side`` pixels."""
    rng = np.random.default_rng(seed)
    images: list[bytes] = []
    axis = np.linspace(0.0, 1.0, side, dtype=np.float32)
    for index in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        yy, xx = np.meshgrid(axis, axis, indexing="ij")
        channels = [
            0.5 + 0.5 * np.sin(2 * np.pi * (xx * (1 + index) + yy * 0.7) + phase[c])
            for c in range(3)
        ]
        pixels = np.stack(channels, axis=-1) * 200.0 + 20.0
        picture = Image.fromarray(pixels.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(picture)
        for _ in range(6):
            x0, y0 = (int(v) for v in rng.integers(0, side - 40, size=2))
            x1, y1 = x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))
            colour = tuple(int(v) for v in rng.integers(0, 255, size=3))
            if rng.random() < 0.5:
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            else:
                draw.rectangle((x0, y0, x1, y1), fill=colour)
        noisy = np.asarray(picture, dtype=np.float32) + rng.normal(0, 6.0, (side, side, 3))
        buffer = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "RGB").save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


@dataclass(frozen=True, slots=True)
class Body:
    """One request: its bytes and the headers it needs."""

    data: bytes
    headers: dict[str, str]


def oip_json_body(image: bytes) -> Body:
    """OIP v2 infer request with the image as a base64 BYTES element (what most clients send)."""
    document = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode("ascii")],
            }
        ]
    }
    return Body(json.dumps(document).encode(), {"content-type": "application/json"})


def oip_binary_body(image: bytes) -> Body:
    """OIP v2 infer request with the binary tensor extension: raw PNG bytes, no base64."""
    header = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(image) + 4},
            }
        ]
    }
    head = json.dumps(header).encode()
    data = head + struct.pack("<I", len(image)) + image
    return Body(
        data,
        {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )


def simple_json_body(image: bytes) -> Body:
    """``{"image": "<base64>"}``: what the LitServe and naive servers take."""
    document = {"image": base64.b64encode(image).decode("ascii")}
    return Body(json.dumps(document).encode(), {"content-type": "application/json"})


BUILDERS: Final = {
    "oip-json": oip_json_body,
    "oip-binary": oip_binary_body,
    "simple-json": simple_json_body,
}


def write_bodies(images: list[bytes], kind: str, directory: Path) -> Path:
    """Write one body per image (``N.bin`` + ``N.json`` headers) for the load generator."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        body = BUILDERS[kind](image)
        (directory / f"{index}.bin").write_bytes(body.data)
        (directory / f"{index}.json").write_text(json.dumps(body.headers))
    return directory


def read_bodies(directory: Path) -> list[Body]:
    bodies: list[Body] = []
    for path in sorted(directory.glob("*.bin"), key=lambda p: int(p.stem)):
        headers = json.loads(path.with_suffix(".json").read_text())
        bodies.append(Body(path.read_bytes(), headers))
    if not bodies:
        raise FileNotFoundError(f"no request bodies in {directory}")
    return bodies
