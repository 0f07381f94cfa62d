"""``python -m bench.runtime.backends_inprocess``: the backends' forward pass, in one process.

The runtime's own loading path (``loading.load_model`` + ``tasks.create_task``, so the same
export, compile, quantization and dtype as a server) for each configuration, then many short
interleaved windows of the task's ``forward`` on a batch of preprocessed images: eager fp32,
bf16, int8, onnxruntime, compile, eager fp32, bf16, ... so a burst of load from other processes
hits every configuration alike. The server-side comparison is ``bench.runtime.backends``; this
one isolates the model from HTTP, decoding and batching.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench import log, machine
from bench.runtime import cli, inputs

CONFIGS: Final[dict[str, dict[str, Any]]] = {
    "eager": {"dtype": "float32"},
    "bf16": {"dtype": "bfloat16"},
    "int8": {"dtype": "float32", "quantization": "int8"},
    "onnxruntime": {"dtype": "float32", "backend": "onnxruntime"},
    "compile": {"dtype": "float32", "backend": "compile"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime.backends_inprocess")
    parser.add_argument("--size", default="base")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=float, default=3.0, help="seconds per window")
    parser.add_argument("--windows", type=int, default=6, help="windows per configuration")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument("--work-dir", type=Path, default=machine.RESULTS / "work")
    args = parser.parse_args(argv)

    import torch

    from mmop.runtime import contract, loading, tasks
    from mmop.runtime.settings import RuntimeSettings
    from mmop.runtime.tasks.base import Sample

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.configs.split(",")
    if names[0] != "eager":
        names = ["eager", *[n for n in names if n != "eager"]]
    model_dir = cli.ensure_model(args.size, args.work_dir)
    task_name = contract.TASK_IMAGE_TEXT_EMBEDDING
    images = inputs.make_images(count=args.batch_size, seed=11)
    loaded_tasks: dict[str, Any] = {}
    batches: dict[str, list[Any]] = {}
    load_seconds: dict[str, float] = {}
    for name in names:
        settings = RuntimeSettings(
            model=str(model_dir),
            task=task_name,
            device="cpu",
            cache_dir=args.work_dir / "backend-cache",
            **CONFIGS[name],
        )
        started = time.perf_counter()
        loaded = loading.load_model(settings, loading.preflight(settings))
        task = tasks.create_task(task_name, loaded, settings)
        load_seconds[name] = time.perf_counter() - started
        log(f"{name}: {loaded.describe()}, loaded in {load_seconds[name]:.1f} s")
        loaded_tasks[name] = task
        batches[name] = [Sample("image", (task.images(i, what="image"), True)) for i in images]

    def forward(name: str) -> np.ndarray[Any, Any]:
        task = loaded_tasks[name]
        with task.loaded.inference_context():
            return np.stack([r[0] for r in task.forward(batches[name])])

    reference = forward("eager")
    quality: dict[str, float] = {}
    for name in names:
        got = forward(name)
        cosines = (got * reference).sum(axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
        )
        quality[name] = float(cosines.min())
    rates: dict[str, list[float]] = {name: [] for name in names}
    for window in range(args.windows):
        for name in names:
            forward(name)  # one unmeasured batch: caches warm after the other configurations
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.window:
                forward(name)
                count += args.batch_size
            rates[name].append(count / (time.perf_counter() - started))
        log(
            f"window {window + 1}/{args.windows}: "
            + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names)
        )
    summary = {
        name: {
            "images_per_s": statistics.median(rates[name]),
            # each window's rate over the eager window of the same pass, then the median
            "ratio": statistics.median(
                r / e for r, e in zip(rates[name], rates["eager"], strict=True)
            ),
            "windows": rates[name],
            "min_cosine": quality[name],
            "load_s": load_seconds[name],
        }
        for name in names
    }
    label = args.label or time.strftime("%Y%m%d-%H%M%S")
    report = {
        "kind": "backends-inprocess",
        "label": label,
        "command": "python -m bench.runtime.backends_inprocess "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine.describe(torch_threads=torch.get_num_threads()),
        "config": {"batch_size": args.batch_size, "window_s": args.window, "size": args.size},
        "summary": summary,
    }
    machine.RESULTS.mkdir(parents=True, exist_ok=True)
    out = machine.RESULTS / f"backends-inprocess-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    log(f"wrote {out}")
    print("| configuration | img/s | vs eager fp32 (paired windows) | min cosine | load |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        item = summary[name]
        print(
            f"| {name} | {item['images_per_s']:.1f} | **{item['ratio']:.2f}x** | "
            f"{item['min_cosine']:.4f} | {item['load_s']:.0f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
