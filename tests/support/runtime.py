"""Real ``mmop-runtime`` processes for the tests: tiny random-weight models built once
(``ModelStore``), one server process (``RuntimeServer``), a pool that starts the configured
servers together so their start-ups overlap (``ServerPool``), and helpers to talk to them."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import httpx

from mmop.devcluster.cluster import free_port
from mmop.runtime import contract
from mmop.runtime.tinymodels import create_tiny_model
from tests.support.processes import ServerFailed, stop_process, wait_http_ready

T = TypeVar("T")
RUNTIME_BIN: Final = Path(sys.executable).with_name("mmop-runtime")
START_TIMEOUT: Final = 180.0
MIB: Final = 1024 * 1024
AUTH_TOKEN: Final = "test-token-123"
SMOKE_TOKEN: Final = "smoke-token-456"  # what the operator puts in a per-model Secret
# The reliability servers' limits (tests/reliability/conftest.py), which their tests cross.
FLOOD_QUEUE: Final = 8
BOMB_TOKEN: Final = "bomb-token"
BOMB_MEMORY_LIMIT: Final = 2 * 1024 * MIB


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration: which tiny model (task, family), which options, which env."""

    task: str
    family: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    grpc: bool = True
    """Serve gRPC too (on a port of its own); False: HTTP only (``--grpc-port 0``)."""


class ModelStore:
    """Tiny models, built once per session on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple[str, str | None], Path] = {}

    def get(self, task: str, family: str | None = None) -> Path:
        key = (task, family)
        if key not in self._built:
            name = f"{family or 'default'}-{task}"
            self._built[key] = create_tiny_model(task, self.root / name, family=family)
        return self._built[key]


class RuntimeServer:
    """One ``mmop-runtime`` process with its log file."""

    def __init__(
        self,
        *,
        model: Path | str,
        task: str,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        log: Path,
        grpc: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"  # tritonclient.grpc's form
        self.log_path = log
        self.model = model
        self.task = task
        self.name = next(
            (args[i + 1] for i, a in enumerate(args) if a == "--name"), Path(str(model)).name
        )
        command = [
            str(RUNTIME_BIN),
            "--model",
            str(model),
            "--task",
            task,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            *args,
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MMOP_")}
        environment |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | dict(env or {})
        self._log = log.open("wb")
        # A session of its own: signals meant for pytest's process group do not reach it.
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )

    @classmethod
    def from_spec(cls, spec: ServerSpec, *, model: Path, log: Path) -> RuntimeServer:
        return cls(
            model=model, task=spec.task, args=spec.args, env=spec.env, log=log, grpc=spec.grpc
        )

    @property
    def infer_path(self) -> str:
        return contract.infer_path(self.name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> RuntimeServer:
        wait_http_ready(
            self.url + contract.READY_PATH,
            process=self.process,
            log=self.log_path,
            timeout=timeout,
            what="mmop-runtime",
        )
        return self

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ServerFailed(
                f"mmop-runtime did not exit within {timeout} s:\n{self.log()[-3000:]}"
            ) from None

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def metrics(self) -> str:
        return httpx.get(self.url + contract.METRICS_PATH, timeout=10).text


class ServerPool:
    """Starts the configured servers (several at once) and stops them at session end."""

    def __init__(self, specs: Mapping[str, ServerSpec], *, models: ModelStore, logs: Path) -> None:
        self.specs = specs
        self.models = models
        self.logs = logs
        self.servers: dict[str, RuntimeServer] = {}
        self._one_off = 0

    def start(self, key: str) -> RuntimeServer:
        """Start server ``key`` of the specs (once); do not wait for it."""
        if key not in self.servers:
            spec = self.specs[key]
            self.servers[key] = RuntimeServer.from_spec(
                spec, model=self.models.get(spec.task, spec.family), log=self.logs / f"{key}.log"
            )
        return self.servers[key]

    def get(self, key: str) -> RuntimeServer:
        """Server ``key``, ready."""
        return self.start(key).wait_ready()

    def start_wanted(self, wanted: set[str]) -> None:
        """Start now every configured server in ``wanted`` (fixture names the tests use)."""
        for key in self.specs:
            if key in wanted:
                self.start(key)

    def one_off(self, **options: Any) -> RuntimeServer:
        """A server outside the specs (a test that stops or breaks it), stopped with the pool."""
        self._one_off += 1
        server = RuntimeServer(log=self.logs / f"one-off-{self._one_off}.log", **options)
        self.servers[f"one-off-{self._one_off}"] = server
        return server

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.terminate()  # all at once: they drain in parallel
        for server in self.servers.values():
            server.stop()


def image_request(image: bytes | None = None, *, count: int = 1) -> dict[str, Any]:
    """An OIP infer body with ``count`` copies of an image (the contract's tiny PNG by default)."""
    data = base64.b64encode(image or contract.tiny_png()).decode()
    return {
        "inputs": [{"name": "image", "shape": [count], "datatype": "BYTES", "data": [data] * count}]
    }


def metric_value(page: str, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` matching ``labels`` in a Prometheus text page."""
    total = 0.0
    for line in page.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def raw_exchange(port: int, request: bytes) -> tuple[str, str]:
    """Send raw bytes (a request the client never finishes, say) and read one whole response:
    (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            ),
            0,
        )
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return lines[0], body.decode()


def peak_growth(pid: int, action: Callable[[], T]) -> tuple[T, int]:
    """Run ``action``; return its result and how far the process's peak resident memory rose
    above its resident memory before (the peak is reset first: /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _status_bytes(pid, "VmRSS")
    result = action()
    return result, _status_bytes(pid, "VmHWM") - before


def _status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")
