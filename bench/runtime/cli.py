"""``python -m bench.runtime``: the whole runtime benchmark in one run, then the report.

For each model (a ViT-B/32-sized CLIP with random weights, a small and a tiny one), it measures the
in-process limit, then starts each server in turn (only one runs at a time) and drives it with
the load generator at each concurrency. Before every measurement it waits for the machine to be
quiet; a measurement during which other processes took CPU is repeated (and flagged if it
stays contended). Results: ``bench/results/runtime-<label>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench import log, machine
from bench.runtime import inputs, servers

MODELS: Final = ("base", "small", "tiny")
SERVERS: Final = ("mmop", "litserve", "naive-async", "naive-sync")
CONCURRENCY: Final = (1, 8, 32, 64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.runtime", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short windows, fewer configs")
    parser.add_argument("--models", default=",".join(MODELS), help="base,small,tiny")
    parser.add_argument("--servers", default=",".join(SERVERS), help=",".join(SERVERS))
    add_shared_arguments(
        parser,
        concurrency=",".join(map(str, CONCURRENCY)),
        warmup=4.0,
        retries=2,
        max_foreign=0.25,
        quiet_wait=900.0,
    )
    parser.add_argument("--limit-seconds", type=float, default=12.0)
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    parser.add_argument(
        "--mmop-arg", action="append", default=[], help="extra mmop-runtime option (repeatable)"
    )
    parser.add_argument(
        "--mmop-env", action="append", default=[], help="KEY=VALUE for mmop-runtime"
    )
    parser.add_argument(
        "--mmop-baseline",
        default="",
        metavar="GIT_REV",
        help="also measure mmop-runtime as of this commit (before/after tuning, same run)",
    )
    parser.add_argument("--server-cpus", default="", help="affinity of the servers, e.g. 0-1")
    parser.add_argument("--max-load", type=float, default=0.7, help="1-min load to start at")
    parser.add_argument("--no-render", action="store_true", help="skip docs/benchmarks.md")
    return parser


def add_shared_arguments(
    parser: argparse.ArgumentParser,
    *,
    concurrency: str,
    warmup: float,
    retries: int,
    max_foreign: float,
    quiet_wait: float,
) -> None:
    """The options of every benchmark that drives servers with ``run_level`` (this one and
    ``bench.runtime.backends``): the servers' batching and device, the windows, the rounds, the
    retry and contention policy ``run_level`` reads, and where results go. The defaults that
    differ between the two are arguments."""
    parser.add_argument("--concurrency", default=concurrency)
    parser.add_argument("--warmup", type=float, default=warmup, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=15.0, help="measurement window, s")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in every server (0: all CPUs)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--loadgen-cpus", default="", help="affinity of the load generator")
    parser.add_argument("--loadgen-nice", type=int, default=10)
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=max_foreign,
        help="others' cores during a window before it is repeated (--retries times), then "
        "kept and flagged",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=quiet_wait, help="longest wait for quiet, s"
    )
    parser.add_argument("--retries", type=int, default=retries)
    parser.add_argument(
        "--rounds", type=int, default=2, help="repeat the whole matrix; tables show medians"
    )
    parser.add_argument("--label", default="", help="name of the result file (default: time)")
    parser.add_argument("--work-dir", type=Path, default=machine.RESULTS / "work")


def cpu_list(text: str) -> tuple[int, ...]:
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return tuple(cpus)


def ensure_model(size: str, work: Path) -> Path:
    directory = work / "models" / f"clip-{size}"
    if not (directory / "model.safetensors").exists():
        log(f"building the {size} CLIP model in {directory}")
        from mmop.runtime.tinymodels import create_tiny_model

        create_tiny_model("image-text-embedding", directory, size=size)
    return directory


def baseline_kind(revision: str, work: Path) -> servers.ServerKind:
    """mmop-runtime as of ``revision``: its ``runtime/`` exported and put first on the path."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=machine.REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = work / f"baseline-{commit}"
    if not (target / "runtime").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit, "runtime"], cwd=machine.REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return dataclasses.replace(
        servers.KINDS["mmop"],
        name=f"mmop@{commit}",
        label=f"mmop-runtime @{commit} (before tuning)",
        bodies=("oip-json",),
        env={"PYTHONPATH": str(target / "runtime")},
    )


def run_limit(
    model_dir: Path, *, args: argparse.Namespace, threads: int, work: Path
) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    out = work / f"limit-{model_dir.name}.json"
    references = work / f"references-{model_dir.name}.npy"
    env = dict(os.environ) | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "bench.runtime.limit",
        "--model",
        str(model_dir),
        "--batch-size",
        str(args.max_batch_size),
        "--seconds",
        str(args.limit_seconds),
        "--threads",
        str(threads),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--out",
        str(out),
        "--references",
        str(references),
    ]
    subprocess.run(
        command, check=True, env=env, cwd=machine.REPO, preexec_fn=_pin(args.server_cpus)
    )
    return json.loads(out.read_text()), np.load(references)


def _pin(cpus_text: str, nice: int = 0) -> Any:
    cpus = cpu_list(cpus_text)

    def apply() -> None:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        if nice:
            os.nice(nice)

    return apply


def quiet_enough(args: argparse.Namespace) -> dict[str, Any]:
    """Wait until other processes leave the cores alone (measured over 2 s while ours idle).

    The 1-minute load average is checked once, before the run: between measurements it mostly
    shows our own previous measurement, so here the CPU others use is measured directly.
    """
    load = machine.loadavg()[0]
    deadline = time.monotonic() + args.quiet_wait
    busy = machine.busy_cores(2.0)
    while busy > args.max_foreign and time.monotonic() < deadline:
        log(f"  others use {busy:.2f} cores; waiting")
        time.sleep(5.0)
        busy = machine.busy_cores(2.0)
    return {"loadavg_1m": load, "idle_busy_cores": busy}


def run_level(
    server: servers.RunningServer,
    *,
    bodies: Path,
    concurrency: int,
    warmup: float,
    duration: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = []
    for attempt in range(args.retries + 1):
        before = quiet_enough(args)
        command = [
            sys.executable,
            "-m",
            "bench.runtime.loadgen",
            "--url",
            server.infer_url,
            "--bodies",
            str(bodies),
            "--concurrency",
            str(concurrency),
            "--warmup",
            f"{warmup:.1f}",
            "--duration",
            f"{duration:.1f}",
            "--watch-pid",
            str(server.process.pid),
        ]
        done = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            cwd=machine.REPO,
            preexec_fn=_pin(args.loadgen_cpus, args.loadgen_nice),
        )
        result: dict[str, Any] = json.loads(done.stdout) | before | {"attempt": attempt}
        attempts.append(result)
        if result.get("foreign_cpu_cores", 0.0) <= args.max_foreign:
            result["contended"] = False
            return result
        log(f"  others took {result['foreign_cpu_cores']:.2f} cores during the window; again")
    best = min(attempts, key=lambda r: r.get("foreign_cpu_cores", 0.0))
    best["contended"] = True
    return best


def describe_level(result: dict[str, Any]) -> str:
    nan = float("nan")
    return (
        f"c={result['concurrency']:>3}: {result['throughput_rps']:7.2f} req/s "
        f"p50 {result.get('p50_ms', nan):8.1f} ms p99 {result.get('p99_ms', nan):8.1f} ms "
        f"err {result['errors']} | server {result.get('server_cpu_cores', 0):.2f} cores, "
        f"loadgen {result['loadgen_cpu_cores']:.3f}, "
        f"others {result.get('foreign_cpu_cores', 0):.2f}"
    )


def _median_level(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """One concurrency level over several rounds: medians of the numbers, errors summed."""
    merged: dict[str, Any] = {}
    for key, value in levels[0].items():
        values = [level.get(key) for level in levels]
        if key == "errors":
            merged[key] = sum(int(v or 0) for v in values)
        elif isinstance(value, bool):
            merged[key] = any(bool(v) for v in values)
        elif isinstance(value, int | float):
            numbers = [float(v) for v in values if isinstance(v, int | float)]
            merged[key] = statistics.median(numbers) if numbers else None
        else:
            merged[key] = value
    merged["rounds_throughput_rps"] = [level["throughput_rps"] for level in levels]
    merged["rounds_p99_ms"] = [level.get("p99_ms") for level in levels]
    return merged


def _median_tree(trees: list[Any]) -> Any:
    """Median of numeric leaves across same-shaped JSON trees (the limit over rounds)."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: _median_tree([tree[key] for tree in trees]) for key in first}
    if isinstance(first, int | float) and not isinstance(first, bool):
        return statistics.median(float(tree) for tree in trees)
    return first


def summarise(raw: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per model: the limit and each server's levels as medians over the rounds so far."""
    models: dict[str, Any] = {}
    for size, data in raw.items():
        if not data["limit"]:
            continue
        limit = _median_tree(data["limit"])
        limit["rounds_b64_images_per_s"] = [r["b64"]["images_per_s"] for r in data["limit"]]
        servers_out: dict[str, Any] = {}
        for key, entry in data["servers"].items():
            rounds = entry["rounds"]
            levels = [
                _median_level([runs[i] for runs in rounds if i < len(runs)])
                for i in range(max(len(runs) for runs in rounds))
            ]
            servers_out[key] = {k: v for k, v in entry.items() if k != "rounds"} | {
                "check": data["checks"].get(key),
                "levels": levels,
                "rounds": len(rounds),
            }
        models[size] = {"model_dir": data.get("model_dir"), "limit": limit, "servers": servers_out}
    return models


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine.exit_on_sigterm()
    if args.quick:
        args.warmup, args.duration, args.limit_seconds, args.rounds = 2.0, 6.0, 4.0, 1
        if args.servers == ",".join(SERVERS):
            args.servers = "mmop,litserve,naive-async"
        if args.concurrency == ",".join(map(str, CONCURRENCY)):
            args.concurrency = "1,32"
    threads = args.threads or len(cpu_list(args.server_cpus)) or len(os.sched_getaffinity(0))
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    kinds = [servers.KINDS[name] for name in args.servers.split(",")]
    if args.mmop_baseline:
        kinds.insert(1, baseline_kind(args.mmop_baseline, work))
    images = inputs.make_images()
    bodies: dict[str, Path] = {
        kind: inputs.write_bodies(images, kind, work / "bodies" / kind) for kind in inputs.BUILDERS
    }
    label = args.label or time.strftime("%Y%m%d-%H%M%S")
    log(f"waiting for a quiet machine (1-min load < {args.max_load})")
    machine.wait_for_quiet(max_load=args.max_load, max_wait=args.quiet_wait, log=log)
    report: dict[str, Any] = {
        "kind": "runtime",
        "label": label,
        "quick": args.quick,
        "command": "python -m bench.runtime "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine.describe(torch_threads=threads),
        "config": {
            "max_batch_size": args.max_batch_size,
            "max_delay_ms": args.max_delay_ms,
            "torch_threads": threads,
            "device": args.device,
            "dtype": args.dtype,
            "concurrency": levels,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "mmop_args": args.mmop_arg,
            "mmop_env": args.mmop_env,
            "mmop_baseline": args.mmop_baseline,
            "server_cpus": args.server_cpus or "all",
            "loadgen_cpus": args.loadgen_cpus or "all",
            "loadgen_nice": args.loadgen_nice,
            "images": {
                "count": len(images),
                "side": inputs.IMAGE_SIDE,
                "png_bytes": [len(i) for i in images],
            },
        },
        "models": {},
    }
    mmop_env = tuple((key, value) for key, _, value in (e.partition("=") for e in args.mmop_env))
    out = machine.RESULTS / f"runtime-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    sizes = args.models.split(",")
    raw: dict[str, dict[str, Any]] = {
        size: {"limit": [], "servers": {}, "checks": {}} for size in sizes
    }
    for round_index in range(args.rounds):
        for size in sizes:
            model_dir = ensure_model(size, work)
            tag = f"[round {round_index + 1}/{args.rounds}, {size}]"
            log(f"{tag} in-process limit")
            quiet = quiet_enough(args)
            limit, reference = run_limit(model_dir, args=args, threads=threads, work=work)
            raw[size]["limit"].append(limit | quiet)
            raw[size]["model_dir"] = str(model_dir)
            log(
                f"{tag} limit: {limit['b64']['images_per_s']:.2f} img/s (base64 PNG), "
                f"{limit['tensor']['images_per_s']:.2f} img/s (forward only)"
            )
            config = servers.ServeConfig.from_args(
                args,
                model_dir=model_dir,
                torch_threads=threads,
                dtype=args.dtype,
                mmop_args=tuple(args.mmop_arg),
                mmop_env=mmop_env,
                server_cpus=cpu_list(args.server_cpus),
            )
            rate = limit["b64"]["images_per_s"]
            for kind in kinds:
                log(f"{tag} {kind.label}")
                with servers.running(kind, config, log_dir=work / "logs") as server:
                    for body_kind in kind.bodies:
                        key = f"{kind.name}/{body_kind}"
                        if round_index == 0:
                            raw[size]["checks"][key] = servers.check_answers(
                                server, body_kind=body_kind, images=images, reference=reference
                            )
                        runs: list[dict[str, Any]] = []
                        for concurrency in levels:
                            # Long enough to reach a steady state at this server's latency.
                            expected = concurrency / max(rate, 1e-3)
                            result = run_level(
                                server,
                                bodies=bodies[body_kind],
                                concurrency=concurrency,
                                warmup=max(args.warmup, min(20.0, 2.0 * expected)),
                                duration=max(args.duration, min(60.0, 4.0 * expected)),
                                args=args,
                            )
                            log(f"  {body_kind:12} {describe_level(result)}")
                            runs.append(result)
                        entry = raw[size]["servers"].setdefault(
                            key,
                            {
                                "server": kind.name,
                                "label": kind.label,
                                "body": body_kind,
                                "notes": kind.notes,
                                "rounds": [],
                            },
                        )
                        entry["rounds"].append(runs)
                report["models"] = summarise(raw)
                out.write_text(json.dumps(report, indent=2))  # partial results survive a crash
    report["models"] = summarise(raw)
    report["complete"] = True
    out.write_text(json.dumps(report, indent=2))
    log(f"wrote {out}")
    if not args.no_render:
        from bench import report as renderer

        renderer.render_default()
    return 0
