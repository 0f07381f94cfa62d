"""The operator part of ``docs/benchmarks.md``: tables and a plot from one operator result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _plot(result: dict[str, Any], plots: Path) -> str | None:
    scale = result.get("scale") or []
    if not scale:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    counts = [s["models"] for s in scale]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6))
    left.plot(counts, [s["all_ready_s"] for s in scale], marker="o", label="all Ready")
    left.plot(counts, [s["all_children_s"] for s in scale], marker="o", label="all children")
    left.set_ylabel("seconds after the first create")
    left.legend(fontsize=8)
    middle.plot(counts, [s["operator_cpu_s"] for s in scale], marker="o", label="to settle")
    middle.set_ylabel("operator CPU seconds")
    middle.legend(fontsize=8)
    right.plot(counts, [s["rss_peak_mib"] for s in scale], marker="o", label="peak")
    right.plot(counts, [s["rss_steady_mib"] for s in scale], marker="o", label="settled")
    right.set_ylabel("operator RSS, MiB")
    right.legend(fontsize=8)
    for axis in (left, middle, right):
        axis.set_xlabel("MultimodalModels applied at once")
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    name = "operator-scale.png"
    figure.savefig(plots / name, dpi=110)
    plt.close(figure)
    return name


def render(result: dict[str, Any], *, plots: Path) -> str:
    parts: list[str] = []
    config = result["config"]
    latency = result["create_latency"]
    children = latency["to_all_children_s"]
    ready = latency["to_ready_s"]
    parts.append(
        f"Run {result['machine']['time']} (1-min load before: "
        f"{result['machine']['loadavg_before_measuring']:.2f}); operator resync period "
        f"{config['resync_seconds']:g} s; command `{result['command']}`.\n\n"
        f"**Create latency** ({latency['count']} models applied one at a time; each makes "
        f"{latency['children_per_model']} children: Deployment, 2 Services, HPA, "
        "VirtualService, DestinationRule; times are the API server's own timestamps):\n\n"
        + table(
            ["from the create of the MultimodalModel to", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [
                    "its last child created",
                    _ms(children["p50"]),
                    _ms(children["p90"]),
                    _ms(children["p99"]),
                    _ms(children["max"]),
                ],
                [
                    "status Ready (Deployment marked available by the stand-in)",
                    _ms(ready["p50"]),
                    _ms(ready["p90"]),
                    _ms(ready["p99"]),
                    _ms(ready["max"]),
                ],
            ],
        )
    )
    noop = result["noop_resync"]
    kinds = ", ".join(f"{k}: {v}" for k, v in noop["writes_by_kind"].items()) or "none"
    parts.append(
        f"**No-op resync**: with the {latency['count']} models settled, over "
        f"{noop['window_s']:.0f} s the operator ran {noop['reconcile_passes']:.0f} reconcile "
        f"passes (its `mmop_operator_reconciles_total`) and made "
        f"**{noop['operator_writes']} API writes** ({kinds}), counted in the API server's "
        "audit log (requests with the operator's or kopf's user agent)."
    )
    rows = []
    for s in result.get("scale") or []:
        rows.append(
            [
                str(s["models"]),
                f"{s['all_children_s']:.1f}",
                f"{s['all_ready_s']:.1f}",
                f"{s['operator_cpu_s']:.1f}",
                f"{s['writes_per_model']:.1f}",
                f"{s['settle_passes_per_model']:.1f}" if "settle_passes_per_model" in s else "-",
                f"{s['rss_before_mib']:.0f} / {s['rss_peak_mib']:.0f} / {s['rss_steady_mib']:.0f}",
                f"{s['idle_cpu_cores']:.3f}",
                f"{s['idle_reconcile_passes']:.0f}",
                str(s["idle_operator_writes"]),
            ]
        )
    plot = _plot(result, plots)
    parts.append(
        "**Scale** (N models applied at once, 8 creates in flight; a fresh API server and "
        "operator for each N):\n\n"
        + table(
            [
                "N",
                "all children, s",
                "all Ready, s",
                "operator CPU to settle, s",
                "writes / model",
                "passes / model",
                "RSS MiB before / peak / settled",
                f"idle CPU, cores (resync {config['resync_seconds']:g} s)",
                "idle passes",
                "idle writes",
            ],
            rows,
        )
        + (f"\n\n![operator scale](benchmarks/{plot})" if plot else "")
    )
    rollout = result.get("rollout")
    if rollout:
        rows = [
            [
                f"{i['from']} % -> {i['to']}{' %' if i['to'] != 'promoted' else ''}",
                f"{i['seconds']:.2f}",
                f"{i['seconds'] - rollout['step_interval_s']:+.2f}",
                str(i.get("inconclusive_checks", 0)),
            ]
            for i in rollout["intervals"]
        ]
        parts.append(
            f"**Rollout decisions** (real `DevCluster`, real tiny runtime pods, traffic about "
            f"20 requests/s through the local router; steps 10/25/50/100, `stepInterval: "
            f"{rollout['step_interval_s']:g}s`, operator rollout tick "
            f"{rollout['rollout_tick_s']:g} s). v2 applied at t = 0; first weight at "
            f"{rollout['to_first_weight_s']:.1f} s (canary pod start, model load, readiness, "
            f"test inference); promoted at {rollout['to_promoted_s']:.1f} s; "
            f"{rollout['requests']} requests, {rollout['failed_requests']} failed.\n\n"
            + table(
                ["weight change", "observed s", "vs stepInterval", "inconclusive checks held"],
                rows,
            )
        )
    return "\n\n".join(parts)
