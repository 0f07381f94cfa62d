"""The servers under test, one at a time: how to start each, wait for it, check it, stop it.

Every server runs as its own process group (``start_new_session``), so stopping it ends the
API-server and worker processes LitServe forks too, and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np

from bench.runtime.inputs import BUILDERS
from mmop.devcluster.cluster import free_port
from tests.support.processes import affinity, stop_process_group, wait_http_ready

MODEL_NAME: Final = "clip"
READY_TIMEOUT = 300.0  # bench.runtime.backends raises it for torch.compile


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What every server gets alike: model, batching, threads, device."""

    model_dir: Path
    max_batch_size: int
    max_delay_ms: float
    torch_threads: int
    device: str = "cpu"
    dtype: str = "auto"
    mmop_args: tuple[str, ...] = ()  # extra mmop-runtime options (tuning experiments)
    mmop_env: tuple[tuple[str, str], ...] = ()
    server_cpus: tuple[int, ...] = ()  # an affinity mask for the server, empty: all

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, *, model_dir: Path, torch_threads: int, **overrides: Any
    ) -> ServeConfig:
        """The config the shared benchmark options give (``cli.add_shared_arguments``: batching
        and device) for ``model_dir``, with ``overrides`` of the other fields."""
        config = cls(
            model_dir=model_dir,
            max_batch_size=args.max_batch_size,
            max_delay_ms=args.max_delay_ms,
            torch_threads=torch_threads,
            device=args.device,
        )
        return replace(config, **overrides)


def _embedding_oip(document: dict[str, Any]) -> list[float]:
    output = next(o for o in document["outputs"] if o["name"] == "image_embeds")
    return [float(v) for v in output["data"]]


def _embedding_simple(document: dict[str, Any]) -> list[float]:
    return [float(v) for v in document["embedding"]]


@dataclass(frozen=True, slots=True)
class ServerKind:
    name: str
    label: str
    bodies: tuple[str, ...]  # body kinds (inputs.BUILDERS) this server is measured with
    ready_path: str
    infer_path: str
    command: Callable[[int, ServeConfig], list[str]]
    embedding: Callable[[dict[str, Any]], list[float]]
    notes: str = ""
    env: dict[str, str] = field(default_factory=dict)


def _mmop_command(port: int, config: ServeConfig) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmop.runtime.cli",
        "--model",
        str(config.model_dir),
        "--task",
        "image-text-embedding",
        "--name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        "0",  # HTTP only: the benchmark's clients speak HTTP
        "--max-batch-size",
        str(config.max_batch_size),
        "--max-delay-ms",
        str(config.max_delay_ms),
        "--max-queue-size",
        "1024",
        "--device",
        config.device,
        "--dtype",
        config.dtype,
        "--log-level",
        "warning",
        *config.mmop_args,
    ]


def _mmop_processes_command(port: int, config: ServeConfig) -> list[str]:
    """mmop-runtime preprocessing in one worker process per server CPU."""
    cpus = len(config.server_cpus) or len(os.sched_getaffinity(0))
    return [*_mmop_command(port, config), "--preprocess-processes", str(cpus)]


def _litserve_command(port: int, config: ServeConfig) -> list[str]:
    accelerator = "cuda" if config.device.startswith("cuda") else "cpu"
    return [
        sys.executable,
        "-m",
        "bench.runtime.litserve_server",
        "--port",
        str(port),
        "--max-batch-size",
        str(config.max_batch_size),
        "--batch-timeout-ms",
        str(config.max_delay_ms),
        "--accelerator",
        accelerator,
    ]


def _naive_command(sync: bool) -> Callable[[int, ServeConfig], list[str]]:
    def command(port: int, config: ServeConfig) -> list[str]:
        flags = ["--sync"] if sync else []
        return [sys.executable, "-m", "bench.runtime.naive_server", "--port", str(port), *flags]

    return command


KINDS: Final = {
    "mmop": ServerKind(
        name="mmop",
        label="mmop-runtime",
        bodies=("oip-json", "oip-binary"),
        ready_path="/v2/health/ready",
        infer_path=f"/v2/models/{MODEL_NAME}/infer",
        command=_mmop_command,
        embedding=_embedding_oip,
        notes="dynamic batching; decoding pool; one forward thread",
    ),
    "mmop-procs": ServerKind(
        name="mmop-procs",
        label="mmop-runtime, preprocessing processes",
        bodies=("oip-json",),
        ready_path="/v2/health/ready",
        infer_path=f"/v2/models/{MODEL_NAME}/infer",
        command=_mmop_processes_command,
        embedding=_embedding_oip,
        notes="as mmop-runtime, with --preprocess-processes = the server's CPUs",
    ),
    "litserve": ServerKind(
        name="litserve",
        label="LitServe",
        bodies=("simple-json",),
        ready_path="/health",
        infer_path="/predict",
        command=_litserve_command,
        embedding=_embedding_simple,
        notes="1 API server process + 1 inference worker; decode_request in the worker",
    ),
    "naive-async": ServerKind(
        name="naive-async",
        label="naive FastAPI (async def)",
        bodies=("simple-json",),
        ready_path="/health",
        infer_path="/predict",
        command=_naive_command(False),
        embedding=_embedding_simple,
        notes="one forward per request on the event loop",
    ),
    "naive-sync": ServerKind(
        name="naive-sync",
        label="naive FastAPI (def)",
        bodies=("simple-json",),
        ready_path="/health",
        infer_path="/predict",
        command=_naive_command(True),
        embedding=_embedding_simple,
        notes="one forward per request in FastAPI's thread pool (40 threads)",
    ),
}


@dataclass(slots=True)
class RunningServer:
    kind: ServerKind
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def infer_url(self) -> str:
        return self.base_url + self.kind.infer_path


def server_env(kind: ServerKind, config: ServeConfig) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(config.torch_threads)
    # OMP_NUM_THREADS sizes torch's pool in every process the same way (mmop-runtime then
    # leaves it alone); BENCH_* configure the peers' pipeline.
    env |= {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "BENCH_MODEL": str(config.model_dir),
        "BENCH_DEVICE": config.device,
        "BENCH_DTYPE": config.dtype,
        "BENCH_TORCH_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
    }
    env |= kind.env
    if kind.name == "mmop":
        env |= dict(config.mmop_env)
    return env


@contextlib.contextmanager
def running(kind: ServerKind, config: ServeConfig, *, log_dir: Path) -> Iterator[RunningServer]:
    """Start ``kind``, wait until it answers its readiness path, stop it afterwards."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{kind.name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            kind.command(port, config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(kind, config),
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
            preexec_fn=affinity(config.server_cpus),
        )
    server = RunningServer(kind, port, process, log_path)
    try:
        wait_http_ready(
            server.base_url + kind.ready_path,
            process=process,
            log=log_path,
            timeout=READY_TIMEOUT,
            what=kind.label,
            every=0.25,
        )
        yield server
    finally:
        # LitServe's workers may outlive their parent: the whole group ends.
        stop_process_group(process)


def check_answers(
    server: RunningServer, *, body_kind: str, images: list[bytes], reference: np.ndarray[Any, Any]
) -> dict[str, float]:
    """Send each image once; the answers must match the in-process embeddings."""
    worst_cosine, worst_abs = 1.0, 0.0
    with httpx.Client(timeout=120.0) as client:
        for index, image in enumerate(images):
            body = BUILDERS[body_kind](image)
            response = client.post(server.infer_url, content=body.data, headers=body.headers)
            response.raise_for_status()
            got = np.asarray(server.kind.embedding(response.json()), dtype=np.float32)
            want = reference[index]
            cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
            worst_cosine = min(worst_cosine, cosine)
            worst_abs = max(worst_abs, float(np.abs(got - want).max()))
    return {"min_cosine": worst_cosine, "max_abs_diff": worst_abs}
