"""Server processes on loopback ports: wait until one answers its readiness path, stop its whole
process group. Shared by the runtime harness (:mod:`tests.support.runtime`) and the benchmarks'
servers (``bench.runtime.servers``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


class ServerFailed(AssertionError):
    """A server process exited or did not become ready in time (the message has its log)."""


def wait_http_ready(
    url: str,
    *,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
    what: str,
    every: float = 0.1,
) -> None:
    """Poll ``url`` until it answers 200; ``ServerFailed`` with the log's tail when the process
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{what} exited ({process.returncode}):\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(every)
    raise ServerFailed(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 30.0) -> None:
    """SIGTERM ``process`` (it drains), SIGKILL it after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_process_group(process: subprocess.Popen[bytes], *, grace: float = 20.0) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session``), SIGKILL
    the group after ``grace`` seconds: workers a server forks end with it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def affinity(cpus: tuple[int, ...]) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to ``cpus`` (None: all CPUs)."""
    if not cpus:
        return None

    def apply() -> None:
        os.sched_setaffinity(0, set(cpus))

    return apply


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
