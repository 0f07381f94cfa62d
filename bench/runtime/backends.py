"""``python -m bench.runtime.backends``: the runtime's acceleration backends against eager fp32.

One model (the ViT-B/32-sized CLIP by default), one ``mmop-runtime`` server per configuration
(eager fp32, bf16, int8, onnxruntime, compile), one at a time, in rounds that interleave the
configurations. Each is driven by the load generator at each concurrency; its throughput is a
ratio to eager fp32 in the same round. Its answers are compared with eager fp32's on more
images and label prompts: min cosine of the image and text embeddings, and top-1 agreement of
zero-shot classification done with the configuration's own embeddings. Results:
``bench/results/backends-<label>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np

from bench import log, machine
from bench.runtime import cli, inputs, servers
from mmop.runtime import contract

# name -> (label, extra mmop-runtime options)
CONFIGS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "eager": ("eager fp32", ("--dtype", "float32")),
    "bf16": ("eager bf16", ("--dtype", "bfloat16")),
    "fp16": ("eager fp16 (GPU)", ("--dtype", "float16")),
    "autocast": ("eager, autocast (GPU: bf16/fp16)", ("--dtype", "auto")),
    "int8": ("eager int8 (dynamic, Linear)", ("--dtype", "float32", "--quantization", "int8")),
    "onnxruntime": ("onnxruntime fp32", ("--dtype", "float32", "--backend", "onnxruntime")),
    "compile": ("torch.compile fp32", ("--dtype", "float32", "--backend", "compile")),
}
WORDS: Final = "cat dog bird fish horse car plane ship truck tree flower house mountain river"
LABELS: Final = tuple(f"a photo of a {word}" for word in (*WORDS.split(), "city", "person"))
QUALITY_IMAGES: Final = 32


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.runtime.backends", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", default="base", help="base or tiny CLIP")
    parser.add_argument(
        "--configs",
        default="",
        help=f"of {','.join(CONFIGS)} (default: eager,bf16,int8,onnxruntime,compile on CPU; "
        "eager,fp16,autocast,onnxruntime,compile on a GPU)",
    )
    cli.add_shared_arguments(
        parser, concurrency="8,32", warmup=5.0, retries=1, max_foreign=0.5, quiet_wait=0.0
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=900.0, help="longest start (export/compile), s"
    )
    return parser


def _one_input(name: str, values: Sequence[str]) -> dict[str, Any]:
    """An OIP v2 infer request body with one BYTES input."""
    return {"inputs": [{"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}]}


def _post(
    client: httpx.Client, url: str, body: dict[str, Any], output: str
) -> np.ndarray[Any, Any]:
    response = client.post(url, json=body)
    response.raise_for_status()
    tensor = next(o for o in response.json()["outputs"] if o["name"] == output)
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def embeddings(
    server: servers.RunningServer, images: list[bytes]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(image embeddings, label-prompt embeddings) from the served model."""
    data = [base64.b64encode(image).decode() for image in images]
    with httpx.Client(timeout=300.0) as client:
        pictures = _post(client, server.infer_url, _one_input("image", data), "image_embeds")
        texts = _post(client, server.infer_url, _one_input("text", LABELS), "text_embeds")
    return pictures, texts


def agreement(
    got: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    want: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> dict[str, float]:
    def min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float((a * b).sum(axis=1).min())

    top1 = (got[0] @ got[1].T).argmax(axis=1)
    top1_want = (want[0] @ want[1].T).argmax(axis=1)
    return {
        "min_cosine_image": min_cosine(got[0], want[0]),
        "min_cosine_text": min_cosine(got[1], want[1]),
        "top1_agreement": float((top1 == top1_want).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine.exit_on_sigterm()
    servers.READY_TIMEOUT = args.ready_timeout  # torch.compile of a base model takes minutes
    threads = args.threads or len(os.sched_getaffinity(0))
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    gpu = args.device.startswith("cuda")
    default = (
        "eager,fp16,autocast,onnxruntime,compile" if gpu else "eager,bf16,int8,onnxruntime,compile"
    )
    names = (args.configs or default).split(",")
    if names[0] != "eager":
        names = ["eager", *[n for n in names if n != "eager"]]  # the reference runs first
    levels = [int(c) for c in args.concurrency.split(",")]
    model_dir = cli.ensure_model(args.size, work)
    load_images = inputs.make_images()
    bodies = inputs.write_bodies(load_images, "oip-json", work / "bodies" / "oip-json")
    quality_images = inputs.make_images(count=QUALITY_IMAGES, seed=11)
    cache = work / "backend-cache"  # ONNX exports and inductor kernels, reused across rounds
    label = args.label or time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "kind": "backends",
        "label": label,
        "command": "python -m bench.runtime.backends "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine.describe(torch_threads=threads) | {"onnxruntime": _ort_version()},
        "config": {
            "model": f"clip-{args.size}",
            "max_batch_size": args.max_batch_size,
            "max_delay_ms": args.max_delay_ms,
            "torch_threads": threads,
            "device": args.device,
            "concurrency": levels,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "quality_images": QUALITY_IMAGES,
            "labels": len(LABELS),
        },
        "configs": {name: {"label": CONFIGS[name][0], "args": CONFIGS[name][1]} for name in names},
        "rounds": [],
    }
    machine.RESULTS.mkdir(parents=True, exist_ok=True)
    out = machine.RESULTS / f"backends-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    reference: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
    for round_index in range(args.rounds):
        this_round: dict[str, Any] = {}
        report["rounds"].append(this_round)
        for name in names:
            tag = f"[round {round_index + 1}/{args.rounds}] {CONFIGS[name][0]}"
            log(tag)
            config = servers.ServeConfig.from_args(
                args,
                model_dir=model_dir,
                torch_threads=threads,
                dtype="float32",
                mmop_args=CONFIGS[name][1],
                mmop_env=((contract.ENV_CACHE_DIR, str(cache)),),
            )
            entry: dict[str, Any] = {"levels": []}
            started = time.monotonic()
            try:
                with servers.running(
                    servers.KINDS["mmop"], config, log_dir=work / "logs"
                ) as server:
                    entry["ready_s"] = time.monotonic() - started
                    log(f"  ready in {entry['ready_s']:.1f} s")
                    if round_index == 0:
                        answers = embeddings(server, quality_images)
                        if name == "eager":
                            reference = answers
                        assert reference is not None
                        entry["quality"] = agreement(answers, reference)
                        log(f"  {entry['quality']}")
                    for concurrency in levels:
                        result = cli.run_level(
                            server,
                            bodies=bodies,
                            concurrency=concurrency,
                            warmup=args.warmup,
                            duration=args.duration,
                            args=args,
                        )
                        log(f"  {cli.describe_level(result)}")
                        entry["levels"].append(result)
            except RuntimeError as exc:  # the server did not start: record why, go on
                entry["error"] = str(exc)[-2000:]
                log(f"  failed: {str(exc)[-500:]}")
            this_round[name] = entry
            out.write_text(json.dumps(report, indent=2))
    report["summary"] = summarise(report, names=names, levels=levels)
    report["complete"] = True
    out.write_text(json.dumps(report, indent=2))
    log(f"wrote {out}")
    print(markdown(report, names=names, levels=levels))
    return 0


def rerender(path: Path) -> str:
    """The table of a finished (or partial) result file, recomputed from its rounds."""
    report = json.loads(path.read_text())
    names = list(report["configs"])
    levels = report["config"]["concurrency"]
    report["summary"] = summarise(report, names=names, levels=levels)
    return markdown(report, names=names, levels=levels)


def summarise(report: dict[str, Any], *, names: list[str], levels: list[int]) -> dict[str, Any]:
    """Per configuration and concurrency: median throughput over rounds, and the median of
    the per-round ratios to eager fp32 (each ratio from the same round)."""
    summary: dict[str, Any] = {}
    for name in names:
        per_level: dict[str, Any] = {}
        for index, concurrency in enumerate(levels):
            rates, ratios, core_ratios, contended = [], [], [], False
            for this_round in report["rounds"]:
                mine, base = this_round.get(name, {}), this_round.get("eager", {})
                if len(mine.get("levels", [])) <= index or len(base.get("levels", [])) <= index:
                    continue
                rate = mine["levels"][index]["throughput_rps"]
                rates.append(rate)
                ratios.append(rate / max(base["levels"][index]["throughput_rps"], 1e-9))
                # Per CPU-second the server used: on a machine others load, the share of the
                # cores a server gets varies from window to window; its work per core does not.
                core_ratios.append(
                    _per_core(mine["levels"][index]) / max(_per_core(base["levels"][index]), 1e-9)
                )
                contended |= bool(mine["levels"][index].get("contended"))
            per_level[str(concurrency)] = {
                "throughput_rps": statistics.median(rates) if rates else None,
                "ratio": statistics.median(ratios) if ratios else None,
                "rounds_ratio": ratios,
                "per_core_ratio": statistics.median(core_ratios) if core_ratios else None,
                "rounds_per_core_ratio": core_ratios,
                "contended": contended,
            }
        first = report["rounds"][0].get(name, {}) if report["rounds"] else {}
        summary[name] = {
            "levels": per_level,
            "quality": first.get("quality"),
            "ready_s": [
                r[name]["ready_s"] for r in report["rounds"] if "ready_s" in r.get(name, {})
            ],
            "error": first.get("error"),
        }
    return summary


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return (
        str(onnxruntime.__version__) + " (" + ", ".join(onnxruntime.get_available_providers()) + ")"
    )


def _per_core(level: dict[str, Any]) -> float:
    return float(level["throughput_rps"]) / max(float(level.get("server_cpu_cores") or 0), 1e-9)


def markdown(report: dict[str, Any], *, names: list[str], levels: list[int]) -> str:
    header = ["configuration"]
    for concurrency in levels:
        header += [
            f"c={concurrency} img/s",
            f"c={concurrency} vs eager fp32",
            f"c={concurrency} per server core vs eager",
        ]
    header += ["min cosine (image / text)", "top-1 agreement", "ready after"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in names:
        item = report["summary"][name]
        row = [report["configs"][name]["label"]]
        if item["error"]:
            row += ["failed to load"] * (3 * len(levels)) + ["", "", ""]
        else:
            for concurrency in levels:
                level = item["levels"][str(concurrency)]
                rate, ratio = level["throughput_rps"], level["ratio"]
                flag = " (contended)" if level["contended"] else ""
                row.append("" if rate is None else f"{rate:.1f}{flag}")
                rounds = ", ".join(f"{r:.2f}" for r in level["rounds_ratio"])
                row.append("" if ratio is None else f"**{ratio:.2f}x** ({rounds})")
                per_core = level.get("per_core_ratio")
                cores = ", ".join(f"{r:.2f}" for r in level.get("rounds_per_core_ratio", []))
                row.append("" if per_core is None else f"{per_core:.2f}x ({cores})")
            quality = item["quality"] or {}
            row.append(
                f"{quality.get('min_cosine_image', float('nan')):.4f} / "
                f"{quality.get('min_cosine_text', float('nan')):.4f}"
            )
            row.append(f"{100 * quality.get('top1_agreement', float('nan')):.0f} %")
            row.append(", ".join(f"{s:.0f} s" for s in item["ready_s"]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
