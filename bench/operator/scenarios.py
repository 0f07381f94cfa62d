"""The operator measurements on a ``BarePlane`` (no pods): create latency, no-op resync, scale.

Times come from the API server's audit log (server-side timestamps of each write), so the
benchmark's own polling never sits between an event and its measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import psutil

from bench.operator.plane import BarePlane, operator_writes
from mmop.devcluster.apiserver import AuditRecord
from mmop.operator import kube
from tests.support import manifests

NAMESPACE: Final = "bench"
CHILD_RESOURCES: Final = (
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "virtualservices",
    "destinationrules",
    "httproutes",
)
CREATE_VERBS: Final = ("create", "apply")


def model_manifest(
    name: str,
    *,
    version: str = "v1",
    step_interval: str = "10s",
    source: str = "file:///models/clip",
) -> dict[str, Any]:
    """A CPU-only model with autoscaling (an HPA) behind Istio: a realistic set of children."""
    return manifests.model_manifest(
        name,
        source=source,
        version=version,
        namespace=NAMESPACE,
        replicas=None,
        batching=None,
        resources={"gpu": 0, "cpu": "1", "memory": "1Gi"},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "metrics": [{"type": "CPU", "targetUtilization": 70}],
        },
        rollout={"steps": [10, 25, 50, 100], "stepInterval": step_interval},
    )


def children_of(records: list[AuditRecord], name: str) -> list[AuditRecord]:
    """Child creates of model ``name`` (its objects are ``NAME`` or ``NAME-...``)."""
    return [
        r
        for r in records
        if r.verb in CREATE_VERBS
        and r.resource in CHILD_RESOURCES
        and r.code < 300
        and (r.name == name or (r.name or "").startswith(name + "-"))
    ]


def model_created_at(records: list[AuditRecord], name: str) -> float | None:
    for r in records:
        if (
            r.resource == "multimodalmodels"
            and r.verb in CREATE_VERBS
            and r.name == name
            and r.subresource is None
            and r.code < 300
        ):
            return r.time
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {
        "n": float(array.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean()),
    }


def reconcile_passes(plane: BarePlane) -> float:
    """``mmop_operator_reconciles_total`` summed over results, from the operator's /metrics."""
    text = httpx.get(plane.metrics_url, timeout=5.0).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mmop_operator_reconciles_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _is_ready(model: dict[str, Any]) -> bool:
    status = model.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return ready and status.get("phase") == "Ready"


async def _create(plane: BarePlane, manifest: dict[str, Any]) -> None:
    assert plane.client is not None
    await plane.client.create(kube.MULTIMODAL_MODEL, manifest, namespace=NAMESPACE)


async def _ready_names(plane: BarePlane) -> set[str]:
    assert plane.client is not None
    items = await plane.client.list_items(kube.MULTIMODAL_MODEL, namespace=NAMESPACE)
    return {item["metadata"]["name"] for item in items if _is_ready(item)}


def wait_quiet(plane: BarePlane, *, quiet: float = 2.0, timeout: float = 120.0) -> float:
    """Wait until the operator made no write for ``quiet`` seconds; the time of its last one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        writes = operator_writes(plane.audit.records())
        last = writes[-1].time if writes else 0.0
        if time.time() - last >= quiet:
            return last
        time.sleep(0.2)
    raise TimeoutError("the operator kept writing")


@dataclass
class ProcessSampler:
    """CPU seconds and RSS of one process, sampled in a thread (peak RSS)."""

    pid: int
    interval: float = 0.25
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def start(self) -> ProcessSampler:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(psutil.Error):
                    self.peak_rss = max(self.peak_rss, self.rss())

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)


# --- scenario 1 + 2: create latency, then a no-op resync ------------------------------------


def create_latency(
    plane: BarePlane, *, count: int, log: Callable[[str], None], timeout: float = 60.0
) -> dict[str, Any]:
    """Apply ``count`` models one after another; for each, the time from its create to the
    creation of its last child, and to its Ready status."""
    expected: int | None = None
    to_children: list[float] = []
    to_ready: list[float] = []
    for index in range(count):
        name = f"lat-{index:03d}"
        plane.run(_create(plane, model_manifest(name)))
        deadline = time.monotonic() + timeout
        while True:
            records = plane.audit.records()
            created = model_created_at(records, name)
            children = children_of(records, name)
            if expected is None:
                ready = name in plane.run(_ready_names(plane))
                if ready and created is not None:
                    wait_quiet(plane, quiet=1.0)
                    records = plane.audit.records()
                    children = children_of(records, name)
                    expected = len(children)
                    log(
                        f"  a model has {expected} children: "
                        + ", ".join(sorted({c.resource for c in children}))
                    )
                    break
            elif created is not None and len(children) >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {len(children)} children after {timeout} s")
            time.sleep(0.005)
        assert created is not None
        to_children.append(max(c.time for c in children) - created)
        while name not in plane.run(_ready_names(plane)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not turn Ready")
            time.sleep(0.02)
        to_ready.append(time.time() - created)
    return {
        "count": count,
        "children_per_model": expected,
        "to_all_children_s": percentiles(to_children),
        "to_ready_s": percentiles(to_ready),
        "samples_children_s": to_children,
    }


def noop_resync(plane: BarePlane, *, window: float, log: Callable[[str], None]) -> dict[str, Any]:
    """With every model settled, count the operator's writes over ``window`` seconds (which
    covers at least one periodic resync of every model)."""
    wait_quiet(plane, quiet=2.0)
    since = plane.audit.last_index
    passes_before = reconcile_passes(plane)
    log(f"  idle for {window:.0f} s")
    time.sleep(window)
    writes = operator_writes(plane.audit.records(since=since))
    passes = reconcile_passes(plane) - passes_before
    kinds: dict[str, int] = {}
    for record in writes:
        sub = f"/{record.subresource}" if record.subresource else ""
        key = f"{record.verb} {record.resource}{sub}"
        kinds[key] = kinds.get(key, 0) + 1
    return {
        "window_s": window,
        "reconcile_passes": passes,
        "operator_writes": len(writes),
        "writes_by_kind": kinds,
    }


# --- scenario 3: N models at once -------------------------------------------------------------


def scale(
    plane: BarePlane, *, count: int, idle_window: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """Create ``count`` models at once; time until all are Ready, operator CPU and memory."""
    assert plane.operator is not None
    sampler = ProcessSampler(plane.operator.pid).start()
    rss_before = sampler.rss()
    cpu_before = sampler.cpu_seconds()
    since = plane.audit.last_index
    passes_start = reconcile_passes(plane)
    names = [f"m{index:03d}" for index in range(count)]

    async def create_all() -> None:
        gate = asyncio.Semaphore(8)

        async def one(name: str) -> None:
            async with gate:
                await _create(plane, model_manifest(name))

        await asyncio.gather(*(one(name) for name in names))

    started = time.time()
    plane.run(create_all())
    created_in = time.time() - started
    deadline = time.monotonic() + max(120.0, count * 2.0)
    ready: set[str] = set()
    while len(ready) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ready)}/{count} models Ready")
        time.sleep(0.25)
        ready = plane.run(_ready_names(plane))
    all_ready = time.time() - started
    last_write = wait_quiet(plane, quiet=3.0, timeout=300)
    cpu_ramp = sampler.cpu_seconds() - cpu_before
    settle_passes = reconcile_passes(plane) - passes_start
    records = plane.audit.records(since=since)
    writes = operator_writes(records)
    child_times = [max((c.time for c in children_of(records, n)), default=started) for n in names]
    rss_steady = sampler.rss()
    # Idle: every model gets its periodic resync; what does that cost?
    idle_since = plane.audit.last_index
    idle_cpu_before = sampler.cpu_seconds()
    passes_before = reconcile_passes(plane)
    time.sleep(idle_window)
    idle_cpu = sampler.cpu_seconds() - idle_cpu_before
    idle_writes = operator_writes(plane.audit.records(since=idle_since))
    passes = reconcile_passes(plane) - passes_before
    sampler.stop()
    result = {
        "models": count,
        "create_calls_s": created_in,
        "all_children_s": max(child_times) - started,
        "all_ready_s": all_ready,
        "settled_s": last_write - started,
        "operator_cpu_s": cpu_ramp,
        "operator_writes": len(writes),
        "settle_passes_per_model": settle_passes / count,
        "writes_per_model": len(writes) / count,
        "rss_before_mib": rss_before / 2**20,
        "rss_peak_mib": max(sampler.peak_rss, rss_steady) / 2**20,
        "rss_steady_mib": rss_steady / 2**20,
        "idle_window_s": idle_window,
        "idle_cpu_cores": idle_cpu / idle_window,
        "idle_reconcile_passes": passes,
        "idle_operator_writes": len(idle_writes),
    }
    log(
        f"  N={count}: all Ready in {all_ready:.1f} s, operator CPU {cpu_ramp:.1f} s, "
        f"{settle_passes / count:.1f} passes/model, "
        f"RSS peak {result['rss_peak_mib']:.0f} MiB, idle {result['idle_cpu_cores']:.3f} cores, "
        f"{passes:.0f} idle passes, {len(idle_writes)} idle writes"
    )
    return result


def user_agents(plane: BarePlane) -> dict[str, int]:
    """Writes by user agent, to show whose writes the audit log holds."""
    counts: dict[str, int] = {}
    for record in plane.audit.records():
        agent = re.sub(r"/.*", "", record.user_agent or "?")
        counts[agent] = counts.get(agent, 0) + 1
    return counts


def operator_log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
