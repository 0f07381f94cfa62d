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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmop.runtime import contract
from tests.support.runtime import (
    BOMB_MEMORY_LIMIT,
    BOMB_TOKEN,
    FLOOD_QUEUE,
    MIB,
    RUNTIME_BIN,
    ModelStore,
    RuntimeServer,
    ServerPool,
    ServerSpec,
)

SPECS: dict[str, ServerSpec] = {
    "hostile_server": ServerSpec(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
        args=("--name", "clip", "--model-version", "v1", "--max-delay-ms", "2"),
        env={contract.ENV_MAX_REQUEST_BYTES: str(2 * MIB)},
        grpc=False,
    ),
    "speech_server": ServerSpec(
        contract.TASK_ASR,
        args=("--name", "whisper", "--max-delay-ms", "2"),
        env={contract.ENV_MAX_NEW_TOKENS: "4", contract.ENV_MAX_AUDIO_SECONDS: "5"},
        grpc=False,
    ),
    "flood_server": ServerSpec(
        contract.TASK_IMAGE_CLASSIFICATION,
        args=("--name", "vit", "--max-queue-size", str(FLOOD_QUEUE), "--max-batch-size", "8"),
        env={contract.ENV_FAULT_LATENCY_MS: "200"},
        grpc=False,
    ),
    "bomb_server": ServerSpec(
        contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION,
        args=("--name", "clip", "--max-delay-ms", "2"),
        env={
            contract.ENV_MAX_REQUEST_BYTES: str(8 * MIB),
            contract.ENV_AUTH_TOKEN: BOMB_TOKEN + "\n",
            contract.ENV_MEMORY_LIMIT_BYTES: str(BOMB_MEMORY_LIMIT),
        },
        grpc=False,
    ),
}


@pytest.fixture(scope="session")
def reliability_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    if not RUNTIME_BIN.exists():
        pytest.fail(f"{RUNTIME_BIN} not found: install the project (scripts/setup)")
    pool = ServerPool(
        SPECS,
        models=ModelStore(tmp_path_factory.mktemp("reliability-models")),
        logs=tmp_path_factory.mktemp("logs"),
    )
    here = Path(__file__).parent
    pool.start_wanted(
        {
            name
            for item in request.session.items
            if Path(str(item.path)).is_relative_to(here)
            for name in getattr(item, "fixturenames", ())
        }
    )
    yield pool
    pool.stop_all()


def _server_fixture(key: str) -> Any:
    @pytest.fixture(scope="session", name=key)
    def fixture(reliability_pool: ServerPool) -> RuntimeServer:
        return reliability_pool.get(key)

    return fixture


hostile_server = _server_fixture("hostile_server")
speech_server = _server_fixture("speech_server")
flood_server = _server_fixture("flood_server")
bomb_server = _server_fixture("bomb_server")
