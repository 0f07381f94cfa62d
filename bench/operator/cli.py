"""``python -m bench.operator``: how fast the operator reconciles and how it scales.

1. Create latency: models applied one at a time; create -> last child created, -> Ready.
2. No-op resync: with those models settled, the operator's API writes over a window covering
   every model's periodic resync (must be 0), counted in the API server's audit log.
3. Scale: N models applied at once (fresh control plane each); time to all Ready, operator
   CPU seconds, peak and steady RSS, idle CPU once settled.
4. Rollout: a real canary rollout with real tiny runtime pods on ``DevCluster``; configured
   ``stepInterval`` against the observed time between weight changes.

Scenarios 1-3 run without pods (``bench.operator.plane``); results go to
``bench/results/operator-<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import log, machine
from bench.operator import rollout, scenarios
from bench.operator.plane import BarePlane


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer models, shorter windows")
    parser.add_argument("--latency-count", type=int, default=50)
    parser.add_argument("--scale", default="10,100,300", help="model counts")
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="operator setting")
    parser.add_argument("--step-interval", type=float, default=10.0, help="rollout stepInterval")
    parser.add_argument("--skip-rollout", action="store_true")
    parser.add_argument("--max-load", type=float, default=0.7)
    parser.add_argument("--quiet-wait", type=float, default=900.0)
    parser.add_argument("--label", default="")
    parser.add_argument("--work-dir", type=Path, default=machine.RESULTS / "work" / "operator")
    parser.add_argument("--no-render", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine.exit_on_sigterm()
    if args.quick:
        args.latency_count = min(args.latency_count, 10)
        if args.scale == "10,100,300":
            args.scale = "10,50"
        args.resync_seconds = min(args.resync_seconds, 5.0)
        args.step_interval = min(args.step_interval, 5.0)
    work: Path = args.work_dir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    label = args.label or time.strftime("%Y%m%d-%H%M%S")
    log(f"waiting for a quiet machine (1-min load < {args.max_load})")
    load = machine.wait_for_quiet(max_load=args.max_load, max_wait=args.quiet_wait, log=log)
    operator_env = {"MMOP_OPERATOR_RESYNC_SECONDS": f"{args.resync_seconds:g}"}
    report: dict[str, Any] = {
        "kind": "operator",
        "label": label,
        "quick": args.quick,
        "command": "python -m bench.operator "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine.describe() | {"loadavg_before_measuring": load},
        "config": {
            "resync_seconds": args.resync_seconds,
            "latency_count": args.latency_count,
            "scale": [int(n) for n in args.scale.split(",")],
            "step_interval_s": args.step_interval,
            "method": "embedded API server + real operator; Deployments marked available by "
            "a stand-in controller (no pods) for scenarios 1-3",
        },
    }

    log(f"[latency] {args.latency_count} models, one at a time")
    with BarePlane(
        work / "latency", namespace=scenarios.NAMESPACE, operator_env=operator_env
    ) as plane:
        plane.start_operator()
        report["create_latency"] = scenarios.create_latency(
            plane, count=args.latency_count, log=log
        )
        latency = report["create_latency"]["to_all_children_s"]
        log(
            f"  create -> all children: p50 {latency['p50'] * 1000:.0f} ms, "
            f"p99 {latency['p99'] * 1000:.0f} ms"
        )
        log("[no-op resync]")
        report["noop_resync"] = scenarios.noop_resync(
            plane, window=args.resync_seconds * 1.5 + 2.0, log=log
        )
        log(
            f"  {report['noop_resync']['reconcile_passes']:.0f} passes, "
            f"{report['noop_resync']['operator_writes']} writes"
        )
        report["writers"] = scenarios.user_agents(plane)

    report["scale"] = []
    for count in report["config"]["scale"]:
        log(f"[scale] {count} models at once")
        with BarePlane(
            work / f"scale-{count}", namespace=scenarios.NAMESPACE, operator_env=operator_env
        ) as plane:
            plane.start_operator()
            report["scale"].append(
                scenarios.scale(
                    plane, count=count, idle_window=args.resync_seconds * 1.2 + 2.0, log=log
                )
            )

    if not args.skip_rollout:
        log(f"[rollout] real pods, stepInterval {args.step_interval:g} s")
        from mmop.runtime.tinymodels import create_tiny_model

        model_dir = machine.RESULTS / "work" / "models" / "clip-zero-shot-tiny"
        if not (model_dir / "model.safetensors").exists():
            create_tiny_model(rollout.TASK, model_dir)
        report["rollout"] = rollout.measure_rollout(
            state_dir=work / "rollout",
            model_dir=model_dir,
            step_interval=args.step_interval,
            operator_env=operator_env,
            log=log,
        )
        for interval in report["rollout"]["intervals"]:
            log(f"  {interval['from']} -> {interval['to']}: {interval['seconds']:.2f} s")

    out = machine.RESULTS / f"operator-{label}.json"
    out.write_text(json.dumps(report, indent=2))
    log(f"wrote {out}")
    if not args.no_render:
        from bench import report as renderer

        renderer.render_default()
    return 0
