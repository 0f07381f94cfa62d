"""Real ``mmop-runtime`` processes on loopback ports, shared by the whole session.

Each server configuration below starts once per session (in parallel with the others that the
selected tests need) from tiny models built once into a session temp folder.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.devcluster.cluster import free_port
from mmop.runtime import contract
from mmop.runtime.tinymodels import create_tiny_model

AUTH_TOKEN = "test-token-123"
SMOKE_TOKEN = "smoke-token-456"  # what the operator puts in a per-model Secret
START_TIMEOUT = 180.0
RUNTIME_BIN = Path(sys.executable).with_name("mmop-runtime")


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration: which tiny model, which options, which env."""

    task: str
    family: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


# fixture name -> configuration. Limits are small where tests need to cross them.
SPECS: dict[str, ServerSpec] = {
    "embedding_server": ServerSpec(
        contract.TASK_IMAGE_TEXT_EMBEDDING,
        args=("--max-delay-ms", "20", "--name", "clip"),
        env={contract.ENV_SMOKE_TEST_TOKEN: SMOKE_TOKEN},
    ),
    "zero_shot_server": ServerSpec(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
        args=("--max-delay-ms", "20"),
        env={contract.ENV_MAX_LABELS: "5", contract.ENV_SMOKE_TEST_TOKEN: SMOKE_TOKEN},
    ),
    "caption_server": ServerSpec(
        contract.TASK_IMAGE_TO_TEXT,
        family="blip",
        args=("--max-delay-ms", "20", "--model-version", "v3"),
        env={contract.ENV_MAX_NEW_TOKENS: "8"},
    ),
    "asr_server": ServerSpec(
        contract.TASK_ASR,
        args=("--max-delay-ms", "20"),
        env={contract.ENV_MAX_NEW_TOKENS: "8", contract.ENV_MAX_AUDIO_SECONDS: "5"},
    ),
    "classification_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        args=("--max-delay-ms", "100", "--max-batch-size", "8"),
        env={
            contract.ENV_MAX_REQUEST_BYTES: str(256 * 1024),
            contract.ENV_MAX_IMAGE_PIXELS: "1000000",
            contract.ENV_MAX_ITEMS_PER_REQUEST: "8",
        },
    ),
    # Auth, and a queue that a flood overflows: every request holds its slot 300 ms.
    "guarded_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        args=("--max-queue-size", "4", "--max-batch-size", "4"),
        env={contract.ENV_AUTH_TOKEN: AUTH_TOKEN, contract.ENV_FAULT_LATENCY_MS: "300"},
    ),
    "faulty_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        env={
            contract.ENV_FAULT_ERROR_RATE: "1",
            contract.ENV_FAULT_SPARE_SMOKE_TEST: "true",
            contract.ENV_SMOKE_TEST_TOKEN: SMOKE_TOKEN,
        },
    ),
    # Stopped by its test (SIGTERM drain); started with the others so their start-ups overlap.
    "drain_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION, env={contract.ENV_FAULT_LATENCY_MS: "1500"}
    ),
    # Requests are older than the queue timeout before they could start: 504.
    "slow_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        args=("--queue-timeout-seconds", "0.2"),
        env={contract.ENV_FAULT_LATENCY_MS: "400", contract.ENV_BODY_TIMEOUT_SECONDS: "0.2"},
    ),
}


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
        self, *, model: Path | str, task: str, args: tuple[str, ...], env: dict[str, str], log: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
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
        environment |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | env
        self._log = log.open("wb")
        # A session of its own: signals meant for pytest's process group do not reach it.
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"mmop-runtime exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if httpx.get(self.url + contract.READY_PATH, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"mmop-runtime not ready after {timeout} s:\n{self.log()[-3000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"mmop-runtime did not exit within {timeout} s:\n{self.log()[-3000:]}")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def metrics(self) -> str:
        return httpx.get(self.url + contract.METRICS_PATH, timeout=10).text


class ServerPool:
    """Starts the configured servers (several at once) and stops them at session end."""

    def __init__(self, models: ModelStore, logs: Path) -> None:
        self.models = models
        self.logs = logs
        self.servers: dict[str, RuntimeServer] = {}

    def start(self, key: str) -> RuntimeServer:
        if key not in self.servers:
            spec = SPECS[key]
            self.servers[key] = RuntimeServer(
                model=self.models.get(spec.task, spec.family),
                task=spec.task,
                args=spec.args,
                env=spec.env,
                log=self.logs / f"{key}.log",
            )
        return self.servers[key]

    def get(self, key: str) -> RuntimeServer:
        server = self.start(key)
        server.wait_ready()
        return server

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.terminate()  # all at once: they drain in parallel
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def server_pool(
    request: pytest.FixtureRequest, models: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    if not RUNTIME_BIN.exists():
        pytest.fail(f"{RUNTIME_BIN} not found: install the project (scripts/setup)")
    pool = ServerPool(models, tmp_path_factory.mktemp("runtime-logs"))
    # Start every server the selected tests use now, so their start-ups overlap.
    wanted = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for key in SPECS:
        if key in wanted:
            pool.start(key)
    yield pool
    pool.stop_all()


def _server_fixture(key: str) -> Any:
    @pytest.fixture(scope="session", name=key)
    def fixture(server_pool: ServerPool) -> RuntimeServer:
        return server_pool.get(key)

    return fixture


embedding_server = _server_fixture("embedding_server")
zero_shot_server = _server_fixture("zero_shot_server")
caption_server = _server_fixture("caption_server")
asr_server = _server_fixture("asr_server")
classification_server = _server_fixture("classification_server")
guarded_server = _server_fixture("guarded_server")
faulty_server = _server_fixture("faulty_server")
slow_server = _server_fixture("slow_server")
drain_server = _server_fixture("drain_server")


@pytest.fixture(scope="session")
def start_server(models: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start a one-off server (a test that stops or breaks it); stopped at session end."""
    started: list[RuntimeServer] = []
    logs = tmp_path_factory.mktemp("one-off-logs")

    def start(
        *,
        model: Path | str,
        task: str,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> RuntimeServer:
        server = RuntimeServer(
            model=model,
            task=task,
            args=args,
            env=env or {},
            log=logs / f"server-{len(started)}.log",
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.terminate()
    for server in started:
        server.stop()
