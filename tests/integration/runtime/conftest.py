"""Real ``mmop-runtime`` processes on loopback ports, shared by the whole session.

Each server configuration below starts once per session (in parallel with the others that the
selected tests need) from tiny models built once into a session temp folder. The harness is
:mod:`tests.support.runtime`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mmop.runtime import contract
from tests.support.runtime import (
    AUTH_TOKEN,
    RUNTIME_BIN,
    SMOKE_TOKEN,
    ModelStore,
    RuntimeServer,
    ServerPool,
    ServerSpec,
)

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


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def server_pool(
    request: pytest.FixtureRequest, models: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerPool]:
    if not RUNTIME_BIN.exists():
        pytest.fail(f"{RUNTIME_BIN} not found: install the project (scripts/setup)")
    pool = ServerPool(SPECS, models=models, logs=tmp_path_factory.mktemp("runtime-logs"))
    # Start every server the selected tests use now, so their start-ups overlap.
    pool.start_wanted(
        {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    )
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
def start_server(server_pool: ServerPool) -> Any:
    """Start a one-off server (a test that stops or breaks it); stopped at session end."""
    return server_pool.one_off
