"""The raw limit: the same decode + preprocess + forward work in-process, batched, no server.

    python -m bench.runtime.limit --model DIR --batch-size 32 --seconds 10 --out FILE

Measures images/s for whole batches of ``--batch-size`` (base64 PNG in, embeddings out), the
same from raw PNG bytes, the forward pass alone on ready pixel tensors (the "preprocessed
tensor" limit), the forward pass at batch size 1 (what a server without batching can reach),
and the per-image cost of each stage. Also writes the reference embeddings of the inputs, which
the benchmark compares every server's answers with.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.runtime.inputs import make_images
from bench.runtime.pipeline import ClipImagePipeline, set_torch_threads


def _interleaved(
    steps: dict[str, Callable[[], int]],
    *,
    seconds: float,
    sync: Callable[[], None],
    cycles: int = 3,
) -> dict[str, dict[str, float]]:
    """Images/s of each step (each returns the images it did), measured in ``cycles`` turns.

    The measurements take turns, so a slow spell of a shared machine hits all of them alike
    instead of one.
    """
    totals = {name: {"images": 0.0, "seconds": 0.0} for name in steps}
    for step in steps.values():  # warm-up
        step()
    sync()
    for _ in range(cycles):
        for name, step in steps.items():
            images = 0
            started = time.perf_counter()
            while images == 0 or time.perf_counter() - started < seconds / cycles:
                images += step()
            sync()
            totals[name]["images"] += images
            totals[name]["seconds"] += time.perf_counter() - started
    return {
        name: {
            "images_per_s": total["images"] / total["seconds"],
            "seconds": total["seconds"],
            "images": total["images"],
        }
        for name, total in totals.items()
    }


def _per_item(function: Callable[[], Any], *, repeat: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1000.0


def measure(
    pipeline: ClipImagePipeline, *, images: list[bytes], batch_size: int, seconds: float
) -> dict[str, Any]:
    encoded = [base64.b64encode(image).decode("ascii") for image in images]
    sync = pipeline.synchronize

    def cycle(i: int) -> int:
        return i % len(images)

    def full_b64() -> int:
        pixels = [pipeline.decode_base64(encoded[cycle(i)]) for i in range(batch_size)]
        pipeline.forward(pixels)
        return batch_size

    def full_binary() -> int:
        pixels = [pipeline.decode_file(images[cycle(i)]) for i in range(batch_size)]
        pipeline.forward(pixels)
        return batch_size

    ready = [pipeline.decode_file(image) for image in images]
    import torch

    batch = torch.stack([ready[cycle(i)] for i in range(batch_size)])
    single = torch.stack([ready[0]])

    def forward_batch() -> int:
        pipeline.forward_tensor(batch)
        return batch_size

    def forward_single() -> int:
        pipeline.forward_tensor(single)
        return 1

    stages = {
        "base64_ms": _per_item(lambda: base64.b64decode(encoded[0]), repeat=50),
        "png_decode_ms": _per_item(
            lambda: Image.open(io.BytesIO(images[0])).convert("RGB"), repeat=20
        ),
        "preprocess_ms": _per_item(
            lambda: pipeline.processor(
                images=Image.open(io.BytesIO(images[0])).convert("RGB"), return_tensors="pt"
            ),
            repeat=20,
        ),
    }
    stages["preprocess_ms"] -= stages["png_decode_ms"]  # the call above decodes too
    results: dict[str, Any] = _interleaved(
        {
            "b64": full_b64,
            "binary": full_binary,
            "tensor": forward_batch,
            "forward_batch1": forward_single,
        },
        seconds=seconds,
        sync=sync,
    )
    results["stages"] = stages
    results["stages"]["forward_ms_per_image_at_batch"] = 1000.0 / results["tensor"]["images_per_s"]
    results["stages"]["forward_ms_at_batch1"] = 1000.0 / results["forward_batch1"]["images_per_s"]
    return results


def references(pipeline: ClipImagePipeline, images: list[bytes]) -> np.ndarray[Any, Any]:
    return pipeline.forward([pipeline.decode_file(image) for image in images])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--references", type=Path, required=True, help="where to save .npy")
    args = parser.parse_args(argv)
    threads = set_torch_threads(args.threads or None)
    pipeline = ClipImagePipeline(args.model, device=args.device, dtype=args.dtype)
    images = make_images()
    np.save(args.references, references(pipeline, images))
    result = measure(pipeline, images=images, batch_size=args.batch_size, seconds=args.seconds)
    result |= {"torch_threads": threads, "device": pipeline.device_name, "dtype": args.dtype}
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
