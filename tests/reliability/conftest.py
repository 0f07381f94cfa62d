"""Runtime servers for the reliability tests: real ``mmop-runtime`` processes on loopback ports,
started once per session (all at once, so their start-ups overlap) from tiny random-weight
models built into a session temp folder.

- ``hostile_server``: zero-shot CLIP (images, labels, the OIP parser) with a 2 MiB body limit,
  for the hostile corpus, the schema-driven fuzzing and the HTTP property test;
- ``speech_server``: Whisper (audio decoding) with a 5 s audio limit;
- ``flood_server``: a queue of 8 whose requests each hold their slot 200 ms (a slow model), for
  the flood far above capacity and the slow-body flood;
- ``bomb_server``: zero-shot CLIP with an 8 MiB body limit, a 2 GiB memory limit and a bearer
  token that ends with a newline (a Secret made from a file), alone with the memory bombs so
  their peak memory is its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from mmop.devcluster.cluster import free_port
from mmop.runtime import contract
from mmop.runtime.tinymodels import create_tiny_model

T = TypeVar("T")
RUNTIME_BIN = Path(sys.executable).with_name("mmop-runtime")
START_TIMEOUT = 180.0
MIB = 1024 * 1024
FLOOD_QUEUE = 8
BOMB_TOKEN = "bomb-token"
BOMB_MEMORY_LIMIT = 2 * 1024 * MIB


@dataclass(frozen=True)
class ServerSpec:
    task: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


SPECS: dict[str, ServerSpec] = {
    "hostile_server": ServerSpec(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
        args=("--name", "clip", "--model-version", "v1", "--max-delay-ms", "2"),
        env={contract.ENV_MAX_REQUEST_BYTES: str(2 * MIB)},
    ),
    "speech_server": ServerSpec(
        contract.TASK_ASR,
        args=("--name", "whisper", "--max-delay-ms", "2"),
        env={contract.ENV_MAX_NEW_TOKENS: "4", contract.ENV_MAX_AUDIO_SECONDS: "5"},
    ),
    "flood_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        args=("--name", "vit", "--max-queue-size", str(FLOOD_QUEUE), "--max-batch-size", "8"),
        env={contract.ENV_FAULT_LATENCY_MS: "200"},
    ),
    "bomb_server": ServerSpec(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
        args=("--name", "clip", "--max-delay-ms", "2"),
        env={
            contract.ENV_MAX_REQUEST_BYTES: str(8 * MIB),
            contract.ENV_AUTH_TOKEN: BOMB_TOKEN + "\n",
            contract.ENV_MEMORY_LIMIT_BYTES: str(BOMB_MEMORY_LIMIT),
        },
    ),
}


class Server:
    """One ``mmop-runtime`` process and its log."""

    def __init__(self, *, spec: ServerSpec, model: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = spec.args[spec.args.index("--name") + 1]
        self.log_path = log
        command = [
            str(RUNTIME_BIN),
            "--model",
            str(model),
            "--task",
            spec.task,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            "0",
            *spec.args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MMOP_")}
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | spec.env
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def infer_path(self) -> str:
        return contract.infer_path(self.name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"mmop-runtime exited ({self.process.returncode}):\n{self.log()[-3000:]}"
                )
            try:
                if httpx.get(self.url + contract.READY_PATH, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"mmop-runtime not ready after {START_TIMEOUT:.0f} s:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Pool:
    """Starts servers on first use (those the selected tests use: at session start, together)."""

    def __init__(self, models: Path, logs: Path) -> None:
        self.models = models
        self.logs = logs
        self.servers: dict[str, Server] = {}
        self._built: dict[str, Path] = {}

    def start(self, key: str) -> Server:
        if key not in self.servers:
            spec = SPECS[key]
            if spec.task not in self._built:
                self._built[spec.task] = create_tiny_model(spec.task, self.models / spec.task)
            self.servers[key] = Server(
                spec=spec, model=self._built[spec.task], log=self.logs / f"{key}.log"
            )
        return self.servers[key]

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.process.terminate()  # all at once: they drain in parallel
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def reliability_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pool]:
    if not RUNTIME_BIN.exists():
        pytest.fail(f"{RUNTIME_BIN} not found: install the project (scripts/setup)")
    pool = Pool(tmp_path_factory.mktemp("reliability-models"), tmp_path_factory.mktemp("logs"))
    here = Path(__file__).parent
    wanted = {
        name
        for item in request.session.items
        if Path(str(item.path)).is_relative_to(here)
        for name in getattr(item, "fixturenames", ())
    }
    for key in SPECS:
        if key in wanted:
            pool.start(key)
    yield pool
    pool.stop_all()


def _server_fixture(key: str) -> Any:
    @pytest.fixture(scope="session", name=key)
    def fixture(reliability_pool: Pool) -> Server:
        return reliability_pool.start(key).wait_ready()

    return fixture


hostile_server = _server_fixture("hostile_server")
speech_server = _server_fixture("speech_server")
flood_server = _server_fixture("flood_server")
bomb_server = _server_fixture("bomb_server")


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
