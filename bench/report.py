"""Render ``docs/benchmarks.md`` and ``docs/benchmarks/*.png`` from the JSON results.

    python -m bench.report [--runtime FILE] [--operator FILE]

Without arguments it takes the newest full (not ``--quick``) result of each benchmark under
``bench/results/``, or the newest quick one when no full one exists. The prose lives in
``bench/benchmarks.template.md``; this module fills in its ``{{placeholders}}`` with tables
and plot links, so the numbers in the document always come from one recorded run.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.machine import REPO, RESULTS

DOCS: Final = REPO / "docs"
PLOTS: Final = DOCS / "benchmarks"
TEMPLATE: Final = Path(__file__).with_name("benchmarks.template.md")
MODEL_TITLES: Final = {
    "base": "CLIP ViT-B/32 size (random weights)",
    "small": "small CLIP (224x224 input, 4 layers of 256; forward about as costly as decoding)",
    "tiny": "tiny CLIP (32x32 input, 2 layers; server overhead dominates)",
}
PEER: Final = "litserve/simple-json"
NAIVE: Final = ("naive-async/simple-json", "naive-sync/simple-json")
MMOP: Final = "mmop/oip-json"


# --- loading -------------------------------------------------------------------------------


def newest(kind: str) -> Path | None:
    """The newest full result of ``kind`` (``runtime``, ``operator``); else the newest quick."""
    found = sorted(RESULTS.glob(f"{kind}-*.json"), key=lambda p: p.stat().st_mtime)
    documents = {path: json.loads(path.read_text()) for path in found}
    complete = [p for p in found if documents[p].get("complete", kind != "runtime")]
    full = [p for p in complete if not documents[p].get("quick")]
    chosen = full or complete or found
    return chosen[-1] if chosen else None


def load(path: Path | None) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path is not None else None


# --- formatting ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- runtime -------------------------------------------------------------------------------


def _level(entry: dict[str, Any] | None, concurrency: int) -> dict[str, Any] | None:
    if entry is None:
        return None
    for level in entry["levels"]:
        if level["concurrency"] == concurrency:
            return level  # type: ignore[no-any-return]
    return None


def _rate(entry: dict[str, Any] | None, concurrency: int) -> float | None:
    level = _level(entry, concurrency)
    return None if level is None else float(level["throughput_rps"])


def _limit_for(model: dict[str, Any], body: str) -> float:
    key = "binary" if body == "oip-binary" else "b64"
    return float(model["limit"][key]["images_per_s"])


def _best_naive(model: dict[str, Any], concurrency: int) -> tuple[float | None, str]:
    best: tuple[float | None, str] = (None, "")
    for key in NAIVE:
        rate = _rate(model["servers"].get(key), concurrency)
        if rate is not None and (best[0] is None or rate > best[0]):
            best = (rate, model["servers"][key]["label"])
    return best


def _divide(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def runtime_headline(result: dict[str, Any]) -> str:
    """One row per model and concurrency: mmop's throughput against limit, LitServe, naive."""
    rows: list[list[str]] = []
    for size, model in result["models"].items():
        mmop = model["servers"].get(MMOP)
        peer = model["servers"].get(PEER)
        for concurrency in result["config"]["concurrency"]:
            rate = _rate(mmop, concurrency)
            naive, _ = _best_naive(model, concurrency)
            forward = float(model["limit"]["tensor"]["images_per_s"])
            rows.append(
                [
                    size,
                    str(concurrency),
                    fmt(rate),
                    fmt(_limit_for(model, "oip-json")),
                    percent(_divide(rate, _limit_for(model, "oip-json"))),
                    # the tiny model's forward pass is free: a ratio to it says nothing
                    percent(_divide(rate, forward))
                    if forward < 10 * _limit_for(model, "oip-json")
                    else "n/a",
                    fmt(_rate(peer, concurrency)),
                    ratio(_divide(rate, _rate(peer, concurrency))),
                    fmt(naive),
                    ratio(_divide(rate, naive)),
                ]
            )
    return table(
        [
            "model",
            "concurrency",
            "mmop img/s",
            "limit img/s",
            "mmop / limit",
            "mmop / forward-only",
            "LitServe img/s",
            "mmop / LitServe",
            "best naive img/s",
            "mmop / naive",
        ],
        rows,
    )


def runtime_limit_table(model: dict[str, Any], config: dict[str, Any]) -> str:
    limit = model["limit"]
    stages = limit["stages"]
    batch = config["max_batch_size"]
    rows = [
        [f"base64 PNG -> embeddings, batch {batch}", fmt(limit["b64"]["images_per_s"])],
        [f"raw PNG bytes -> embeddings, batch {batch}", fmt(limit["binary"]["images_per_s"])],
        [
            f"pixel tensors -> embeddings (forward only), batch {batch}",
            fmt(limit["tensor"]["images_per_s"]),
        ],
        ["pixel tensors -> embeddings, batch 1", fmt(limit["forward_batch1"]["images_per_s"])],
    ]
    text = table(["in-process pipeline", "images/s"], rows)
    text += (
        f"\n\nPer image: base64 decode {fmt(stages['base64_ms'], 2)} ms, PNG decode "
        f"{fmt(stages['png_decode_ms'], 2)} ms, image processor "
        f"{fmt(stages['preprocess_ms'], 2)} ms, "
        f"forward {fmt(stages['forward_ms_per_image_at_batch'], 2)} ms at batch {batch} and "
        f"{fmt(stages['forward_ms_at_batch1'], 2)} ms at batch 1 (one thread for the decode "
        f"stages, {limit['torch_threads']} torch threads for the forward pass)."
    )
    return text


def runtime_server_table(model: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    peer = model["servers"].get(PEER)
    for key, entry in model["servers"].items():
        limit = _limit_for(model, entry["body"])
        for level in entry["levels"]:
            concurrency = level["concurrency"]
            rate = float(level["throughput_rps"])
            naive, _ = _best_naive(model, concurrency)
            flag = " (contended)" if level.get("contended") else ""
            spread = level.get("rounds_throughput_rps") or []
            if len(spread) > 1:
                flag = f" ({fmt(min(spread))}-{fmt(max(spread))})" + flag
            rows.append(
                [
                    entry["label"],
                    entry["body"],
                    str(concurrency),
                    fmt(rate) + flag,
                    percent(rate / limit),
                    ratio(_divide(rate, _rate(peer, concurrency))) if key != PEER else "1.00x",
                    ratio(_divide(rate, naive)),
                    fmt(level.get("p50_ms"), 0),
                    fmt(level.get("p90_ms"), 0),
                    fmt(level.get("p99_ms"), 0),
                    str(level["errors"]),
                    fmt(level.get("server_cpu_cores"), 2),
                    fmt(level["loadgen_cpu_cores"], 3),
                    fmt(level.get("foreign_cpu_cores"), 2)
                    + " / "
                    + fmt(level.get("steal_cores"), 2),
                ]
            )
    return table(
        [
            "server",
            "input",
            "conc.",
            "img/s",
            "of limit",
            "vs LitServe",
            "vs naive",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "server CPU",
            "loadgen CPU",
            "others / steal",
        ],
        rows,
    )


def runtime_checks(model: dict[str, Any]) -> str:
    parts = []
    for entry in model["servers"].values():
        check = entry["check"]
        parts.append(
            f"{entry['label']} ({entry['body']}): cosine >= {check['min_cosine']:.6f}, "
            f"max |diff| {check['max_abs_diff']:.1e}"
        )
    return "; ".join(parts)


def plot_runtime(result: dict[str, Any]) -> list[str]:
    """Throughput and p99 latency against concurrency, one figure per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for size, model in result["models"].items():
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for entry in model["servers"].values():
            levels = entry["levels"]
            xs = [level["concurrency"] for level in levels]
            label = f"{entry['label']} ({entry['body']})"
            left.plot(xs, [level["throughput_rps"] for level in levels], marker="o", label=label)
            right.plot(
                xs, [level.get("p99_ms", float("nan")) for level in levels], marker="o", label=label
            )
        limit = model["limit"]
        left.axhline(
            limit["b64"]["images_per_s"],
            color="black",
            linestyle="--",
            label="limit (in-process, base64 PNG)",
        )
        left.axhline(
            limit["tensor"]["images_per_s"],
            color="grey",
            linestyle=":",
            label="forward only (tensors)",
        )
        levels = result["config"]["concurrency"]
        for axis in (left, right):
            axis.set_xscale("log", base=2)
            axis.set_xticks(levels, [str(level) for level in levels])
            axis.set_xlabel("concurrent clients")
            axis.grid(True, alpha=0.3)
        left.set_ylim(bottom=0)
        if limit["tensor"]["images_per_s"] > 5 * limit["b64"]["images_per_s"]:
            left.set_ylim(0, limit["b64"]["images_per_s"] * 2.2)  # keep the servers readable
            left.annotate(
                f"forward only: {limit['tensor']['images_per_s']:,.0f} img/s (off the chart)",
                xy=(0.02, 0.97),
                xycoords="axes fraction",
                fontsize=7,
                va="top",
            )
        left.set_ylabel("images/s")
        left.set_title(f"{MODEL_TITLES.get(size, size)}: throughput", fontsize=9)
        right.set_yscale("log")
        right.set_ylabel("p99 latency, ms")
        right.set_title("p99 latency", fontsize=9)
        left.legend(fontsize=6.5, loc="lower right")
        figure.tight_layout()
        name = f"runtime-{size}.png"
        figure.savefig(PLOTS / name, dpi=110)
        plt.close(figure)
        written.append(name)
    return written


def runtime_models(result: dict[str, Any]) -> str:
    plots = plot_runtime(result)
    sections: list[str] = []
    for (size, model), plot in zip(result["models"].items(), plots, strict=True):
        sections.append(
            f"### {MODEL_TITLES.get(size, size)}\n\n"
            + runtime_limit_table(model, result["config"])
            + "\n\n"
            + runtime_server_table(model)
            + f"\n\n![{size}: throughput and p99 latency](benchmarks/{plot})\n\n"
            + "Answers checked against the in-process embeddings before each server was "
            + "measured: "
            + runtime_checks(model)
            + "."
        )
    return "\n\n".join(sections)


def runtime_tuning(result: dict[str, Any]) -> str:
    """Before/after rows: the baseline server (``mmop@REV``) against the current one."""
    rows: list[list[str]] = []
    for size, model in result["models"].items():
        before_key = next((k for k in model["servers"] if k.startswith("mmop@")), None)
        if before_key is None:
            continue
        before = model["servers"][before_key]
        after = model["servers"].get(MMOP)
        peer = model["servers"].get(PEER)
        for concurrency in result["config"]["concurrency"]:
            b, a = _rate(before, concurrency), _rate(after, concurrency)
            lb, la = _level(before, concurrency), _level(after, concurrency)
            rows.append(
                [
                    size,
                    str(concurrency),
                    fmt(b),
                    fmt(a),
                    ratio(_divide(a, b)),
                    fmt(lb.get("p99_ms") if lb else None, 0),
                    fmt(la.get("p99_ms") if la else None, 0),
                    ratio(_divide(b, _rate(peer, concurrency))),
                    ratio(_divide(a, _rate(peer, concurrency))),
                ]
            )
    if not rows:
        return "_This run did not measure a baseline (`--mmop-baseline REV`)._"
    return table(
        [
            "model",
            "concurrency",
            "before img/s",
            "after img/s",
            "after / before",
            "before p99 ms",
            "after p99 ms",
            "before / LitServe",
            "after / LitServe",
        ],
        rows,
    )


def machine_section(result: dict[str, Any]) -> str:
    info = result["machine"]
    rows = [
        ["CPU", f"{info['cpu_model']} ({', '.join(info.get('cpu_flags', []))})"],
        ["cores", f"{info['logical_cpus']} logical, {info.get('physical_cpus')} physical"],
        ["memory", f"{info['memory_gib']} GiB"],
        ["GPU", info.get("gpu", "none in this session")],
        ["Python", info["python"]],
        ["torch", f"{info.get('torch', '?')}, {result['config']['torch_threads']} threads"],
        ["transformers / LitServe", f"{info.get('transformers')} / {info.get('litserve')}"],
        [
            "FastAPI / uvicorn / aiohttp",
            f"{info.get('fastapi')} / {info.get('uvicorn')} / {info.get('aiohttp')}",
        ],
        ["1-min load before the run", f"{info['loadavg_at_start'][0]:.2f}"],
        ["run", f"{info['time']}, commit {info['git']['commit'][:10]}"],
    ]
    return table(["", ""], rows)


def runtime_config(result: dict[str, Any]) -> str:
    config = result["config"]
    images = config["images"]
    sizes = ", ".join(f"{b // 1024} KiB" for b in images["png_bytes"])
    return (
        f"Max batch size {config['max_batch_size']}, max delay {fmt(config['max_delay_ms'])} ms "
        f"(LitServe: `max_batch_size`, `batch_timeout` alike), {config['torch_threads']} torch "
        f"threads in every server, device `{config['device']}`, dtype `{config['dtype']}`. "
        f"Inputs: {images['count']} different {images['side']}x{images['side']} PNG images "
        f"({sizes}), one image per request, sent round-robin. Windows: at least "
        f"{fmt(config['warmup_s'], 0)} s warm-up and {fmt(config['duration_s'], 0)} s measured per "
        f"concurrency (longer where the expected latency is long). Servers on CPUs "
        f"`{config['server_cpus']}`, load generator on CPUs `{config['loadgen_cpus']}` at nice "
        f"{config['loadgen_nice']}. Command: `{result['command']}`. {_rounds_done(result)}"
    )


def _rounds_done(result: dict[str, Any]) -> str:
    """How many of the planned rounds the recorded numbers come from."""
    planned = int(result["config"].get("rounds", 1))
    done = min(
        (
            len(level.get("rounds_throughput_rps") or [None])
            for model in result["models"].values()
            for entry in model["servers"].values()
            for level in entry["levels"]
        ),
        default=0,
    )
    if result.get("complete", False) or done >= planned:
        return f"Rounds: {done}."
    return (
        f"Rounds: {done} of the {planned} planned (the run was stopped during round {done + 1}; "
        "the numbers are round 1's)."
        if done == 1
        else f"Rounds: {done} of the {planned} planned (the run was stopped before the end)."
    )


def loadgen_cost(result: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for size, model in result["models"].items():
        for entry in model["servers"].values():
            for level in entry["levels"]:
                rows.append(
                    [
                        size,
                        entry["label"],
                        entry["body"],
                        str(level["concurrency"]),
                        fmt(level["throughput_rps"]),
                        fmt(level["loadgen_cpu_cores"], 3),
                        fmt(level["loadgen_cpu_ms_per_request"], 2),
                    ]
                )
    worst = max((float(r[5].replace(",", "")) for r in rows if r[5] != "-"), default=0.0)
    summary = (
        f"The load generator never used more than {worst:.3f} of a core "
        "(psutil CPU time of its process over the window's wall time)."
    )
    return (
        summary
        + "\n\n<details><summary>per measurement</summary>\n\n"
        + table(
            [
                "model",
                "server",
                "input",
                "conc.",
                "req/s",
                "loadgen cores",
                "loadgen CPU ms/request",
            ],
            rows,
        )
        + "\n\n</details>"
    )


# --- operator ------------------------------------------------------------------------------


def operator_section(result: dict[str, Any] | None) -> str:
    if result is None:
        return "_No operator benchmark result yet: run `python -m bench.operator`._"
    from bench.operator import report as operator_report

    return operator_report.render(result, plots=PLOTS)


# --- the document --------------------------------------------------------------------------


def render(runtime: dict[str, Any] | None, operator: dict[str, Any] | None) -> str:
    values: dict[str, str] = {}
    if runtime is not None:
        values |= {
            "machine": machine_section(runtime),
            "runtime_config": runtime_config(runtime),
            "runtime_headline": runtime_headline(runtime),
            "runtime_models": runtime_models(runtime),
            "runtime_tuning": runtime_tuning(runtime),
            "loadgen_cost": loadgen_cost(runtime),
        }
    else:
        missing = "_No runtime benchmark result yet: run `python -m bench.runtime`._"
        for key in (
            "machine",
            "runtime_config",
            "runtime_headline",
            "runtime_models",
            "runtime_tuning",
            "loadgen_cost",
        ):
            values[key] = missing
    values["operator"] = operator_section(operator)
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def render_default(*, runtime: Path | None = None, operator: Path | None = None) -> Path:
    runtime = runtime or newest("runtime")
    operator = operator or newest("operator")
    document = render(load(runtime), load(operator))
    out = DOCS / "benchmarks.md"
    out.write_text(document)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--runtime", type=Path)
    parser.add_argument("--operator", type=Path)
    args = parser.parse_args(argv)
    print(render_default(runtime=args.runtime, operator=args.operator))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
