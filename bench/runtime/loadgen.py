"""The load generator: a closed loop of N concurrent clients (aiohttp), in its own process.

    python -m bench.runtime.loadgen --url URL --bodies DIR --concurrency 8 \
        --warmup 3 --duration 15 [--watch-pid PID ...]

Each client sends the next prepared body as soon as its previous answer arrived. Requests that
finish inside the measurement window (after the warm-up) count, for throughput and latency; at
the end the generator waits for the requests still in flight, so the server is idle when it
exits. It measures its own CPU time against wall time (its cost on the same cores as the
server), the CPU time of the ``--watch-pid`` processes (the server) and of the whole machine
during the window, and prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil

from bench.machine import CpuMeter
from bench.runtime.inputs import Body, read_bodies


@dataclass(slots=True)
class Record:
    started: float
    finished: float
    status: int  # 0: no answer (connection error)


@dataclass(slots=True)
class Run:
    records: list[Record] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    stop: bool = False


async def _client(
    session: aiohttp.ClientSession, url: str, bodies: list[Body], offset: int, run: Run
) -> None:
    index = offset
    while not run.stop:
        body = bodies[index % len(bodies)]
        index += 1
        started = time.monotonic()
        status = 0
        try:
            async with session.post(url, data=body.data, headers=body.headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = type(exc).__name__
            run.errors[key] = run.errors.get(key, 0) + 1
        run.records.append(Record(started, time.monotonic(), status))
        if status != 200 and status != 0:
            key = f"http {status}"
            run.errors[key] = run.errors.get(key, 0) + 1
            if status in (429, 503):
                await asyncio.sleep(0.05)  # what a polite client does on backpressure


async def generate(
    *,
    url: str,
    bodies: list[Body],
    concurrency: int,
    warmup: float,
    duration: float,
    watch: list[int],
) -> dict[str, Any]:
    run = Run()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    own = psutil.Process()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clients = [
            asyncio.create_task(_client(session, url, bodies, offset, run))
            for offset in range(concurrency)
        ]
        began = time.monotonic()
        await asyncio.sleep(warmup)
        window_start = time.monotonic()
        own_start = own.cpu_times()
        meter = CpuMeter(watch) if watch else None
        await asyncio.sleep(duration)
        window_end = time.monotonic()
        own_end = own.cpu_times()
        watched = meter.stop() if meter is not None else None
        run.stop = True
        await asyncio.wait(clients, timeout=300)
    finished = [r for r in run.records if window_start <= r.finished <= window_end]
    ok = [r for r in finished if r.status == 200]
    latencies = np.array([r.finished - r.started for r in ok]) * 1000.0
    window = window_end - window_start
    own_seconds = (own_end.user - own_start.user) + (own_end.system - own_start.system)
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "window_s": window,
        "warmup_s": window_start - began,
        "completed": len(finished),
        "ok": len(ok),
        "throughput_rps": len(ok) / window,
        "errors": sum(1 for r in finished if r.status != 200),
        "error_kinds": run.errors,
        "latency_samples": int(latencies.size),
        "loadgen_cpu_cores": own_seconds / window,
        "loadgen_cpu_ms_per_request": own_seconds * 1000.0 / max(1, len(finished)),
    }
    if latencies.size:
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        result |= {
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "mean_ms": float(latencies.mean()),
            "max_ms": float(latencies.max()),
        }
    if watched is not None:
        result["server_cpu_cores"] = watched["cores"]
        result["system_cpu_cores"] = watched["system_cores"]
        result["steal_cores"] = watched["steal_cores"]
        # What neither the server nor this generator used: other people's work on the box.
        result["foreign_cpu_cores"] = max(
            0.0, watched["system_cores"] - watched["cores"] - result["loadgen_cpu_cores"]
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--watch-pid", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # the plain loop only costs the generator more CPU, which it reports
        runner = asyncio.run
    result = runner(
        generate(
            url=args.url,
            bodies=read_bodies(args.bodies),
            concurrency=args.concurrency,
            warmup=args.warmup,
            duration=args.duration,
            watch=args.watch_pid,
        )
    )
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
