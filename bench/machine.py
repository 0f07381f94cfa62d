"""The machine a benchmark ran on, and how busy it is: CPU model, cores, load, foreign CPU use.

Timings on a shared box are only worth recording when nothing else runs, so every measurement
checks the 1-minute load first and the CPU time that other processes took while it ran.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit``, so ``finally`` blocks stop the servers we started."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD flags that decide CPU inference speed (AVX2, AVX-512, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
                return [flag for flag in wanted if flag in flags]
    except OSError:
        pass
    return []


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "HEAD"),
        "runtime_files_changed": sorted(f for f in changed if f.startswith("runtime/")),
    }


def describe(*, torch_threads: int | None = None) -> dict[str, Any]:
    """Everything the report prints about the machine and software."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "physical_cpus": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_revision(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = (
            torch_threads if torch_threads is not None else torch.get_num_threads()
        )
        info["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # the operator benchmark needs no torch
        pass
    for name in ("transformers", "litserve", "fastapi", "uvicorn", "aiohttp", "kopf"):
        try:
            module = __import__(name)
            info[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            continue
    return info


def wait_for_quiet(
    *, max_load: float, max_wait: float, log: Any = print, poll: float = 5.0
) -> float:
    """Wait (up to ``max_wait`` s) until the 1-minute load is below ``max_load``; the load seen.

    Returns the last load read either way: the caller records it next to the numbers.
    """
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        one = loadavg()[0]
        if one < max_load or time.monotonic() >= deadline:
            return one
        if not announced:
            log(f"  waiting for the machine to go quiet (1-min load {one:.2f} >= {max_load})")
            announced = True
        time.sleep(poll)


def busy_cores(seconds: float) -> float:
    """CPU cores busy (system-wide, all processes) over the next ``seconds``."""
    before = psutil.cpu_times()
    started = time.monotonic()
    time.sleep(seconds)
    after = psutil.cpu_times()
    return _busy(before, after) / (time.monotonic() - started)


def _steal(before: Any, after: Any) -> float:
    return max(0.0, getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0))


def _busy(before: Any, after: Any) -> float:
    idle = (after.idle - before.idle) + (
        getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0)
    )
    total = float(sum(after) - sum(before))
    return max(0.0, total - float(idle))


class CpuMeter:
    """CPU seconds of a set of processes (and their children) and of the whole machine."""

    def __init__(self, pids: Iterable[int]) -> None:
        self._roots = [psutil.Process(pid) for pid in pids]
        self._start_system = psutil.cpu_times()
        self._start = self._process_seconds()
        self._started = time.monotonic()

    def _process_seconds(self) -> dict[int, float]:
        seconds: dict[int, float] = {}
        for root in self._roots:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in family:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                seconds[process.pid] = times.user + times.system
        return seconds

    def stop(self) -> dict[str, float]:
        """``wall`` seconds, ``cores`` the processes used, ``system_cores`` all processes used,
        ``steal_cores`` the hypervisor kept from this VM (other tenants of the host)."""
        end = self._process_seconds()
        system_end = psutil.cpu_times()
        wall = time.monotonic() - self._started
        used = sum(value - self._start.get(pid, 0.0) for pid, value in end.items())
        system = _busy(self._start_system, system_end) - _steal(self._start_system, system_end)
        return {
            "wall": wall,
            "cores": used / wall,
            "system_cores": system / wall,
            "steal_cores": _steal(self._start_system, system_end) / wall,
        }
