"""Canary -> stable mirroring between real runtime processes: scores in /metrics, the receiver's
``endpoint="mirror"`` count, and a client that never waits for a stuck or vanished target."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mmop.runtime import contract
from mmop.runtime.tinymodels import create_tiny_model
from tests.support.runtime import AUTH_TOKEN, SMOKE_TOKEN, ModelStore, RuntimeServer, metric_value
from tests.support.wait import wait_until

TASK = contract.TASK_IMAGE_TEXT_EMBEDDING
DEADLINE = 90.0
COSINE = {contract.LABEL_METRIC: "embedding_cosine"}


def _request(index: int) -> dict[str, Any]:
    image = base64.b64encode(contract.tiny_png(width=24 + index, height=32)).decode()
    texts = [f"photo number {index}", "a dog"]
    return {
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]},
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": texts},
        ]
    }


ROWS_PER_REQUEST = 3  # one image and two texts: three embeddings compared per request


def _mirror_results(server: RuntimeServer) -> dict[str, float]:
    page = server.metrics()
    name = contract.METRIC_MIRROR_REQUESTS + "_total"
    return {
        result: metric_value(page, name, **{contract.LABEL_RESULT: result})
        for result in contract.MIRROR_RESULTS
    }


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, within=DEADLINE, what=what, every=0.1)


@dataclass
class Servers:
    stable: RuntimeServer  # default weights, with auth
    stable_other: RuntimeServer  # other random weights
    canary: RuntimeServer  # default weights, mirrors everything to ``stable``
    canary_other: RuntimeServer  # default weights, mirrors everything to ``stable_other``
    canary_stuck: RuntimeServer  # mirrors to a socket that never answers, one at a time
    black_hole: socket.socket


@pytest.fixture(scope="module")
def servers(
    models: ModelStore, start_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    weights = models.get(TASK)
    other_weights = create_tiny_model(TASK, tmp_path_factory.mktemp("seed7") / "clip", seed=7)
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)  # connections complete, nothing is ever read or answered
    name = ("--name", "clip", "--max-delay-ms", "5")
    # Both versions of one model share its smoke-test token (the operator's per-model Secret).
    auth = {contract.ENV_AUTH_TOKEN: AUTH_TOKEN, contract.ENV_SMOKE_TEST_TOKEN: SMOKE_TOKEN}

    def canary(target: str, **env: str) -> RuntimeServer:
        mirror = {contract.ENV_MIRROR_URL: target, contract.ENV_MIRROR_PERCENT: "100"}
        return start_server(model=weights, task=TASK, args=name, env=auth | mirror | env)

    stable = start_server(model=weights, task=TASK, args=name, env=auth)
    stable_other = start_server(model=other_weights, task=TASK, args=name)
    started = Servers(
        stable=stable,
        stable_other=stable_other,
        canary=canary(stable.url),
        canary_other=canary(stable_other.url),
        canary_stuck=canary(
            f"http://127.0.0.1:{black_hole.getsockname()[1]}",
            MMOP_MIRROR_MAX_INFLIGHT="1",
            MMOP_MIRROR_TIMEOUT_SECONDS="3",
        ),
        black_hole=black_hole,
    )
    for server in (stable, stable_other, started.canary, started.canary_other):
        server.wait_ready()
    started.canary_stuck.wait_ready()
    yield started
    black_hole.close()


def _infer(server: RuntimeServer, index: int) -> httpx.Response:
    with server.client(headers={"Authorization": f"Bearer {AUTH_TOKEN}"}) as client:
        return client.post(contract.infer_path("clip"), json=_request(index))


def test_same_weights_score_perfectly_and_stable_counts_them_as_mirror(servers: Servers) -> None:
    # The operator's own request (smoke-test header) first: it is never mirrored.
    with servers.canary.client(headers={"Authorization": f"Bearer {AUTH_TOKEN}"}) as client:
        smoke = client.post(
            contract.infer_path("clip"),
            json=_request(9),
            headers={contract.SMOKE_TEST_HEADER: SMOKE_TOKEN},
        )
    assert smoke.status_code == 200
    requests = 4
    for index in range(requests):
        assert _infer(servers.canary, index).status_code == 200
    _wait_for(
        lambda: _mirror_results(servers.canary)[contract.MIRROR_COMPARED] >= requests,
        "4 compared mirrors",
    )
    assert sum(_mirror_results(servers.canary).values()) == requests
    page = servers.canary.metrics()
    count = metric_value(page, contract.METRIC_QUALITY_SCORE + "_count", **COSINE)
    total = metric_value(page, contract.METRIC_QUALITY_SCORE + "_sum", **COSINE)
    assert count == requests * ROWS_PER_REQUEST
    assert total / count > 0.9999
    assert _mirror_results(servers.canary)[contract.MIRROR_ERROR] == 0

    # The receiver counted them apart from user traffic (and let them in with the client's token).
    stable_page = servers.stable.metrics()
    requests_total = contract.METRIC_REQUESTS + "_total"
    mirrored = metric_value(stable_page, requests_total, endpoint=contract.ENDPOINT_MIRROR)
    assert mirrored == requests
    assert metric_value(stable_page, requests_total, endpoint=contract.ENDPOINT_MIRROR, code="200")
    assert metric_value(stable_page, requests_total, endpoint="infer") == 0
    # The canary's own user traffic is plain infer.
    assert metric_value(page, requests_total, endpoint="infer", code="200") == requests

    # A client sending the header without the token is user traffic: it cannot hide requests.
    with servers.stable.client(
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", contract.MIRROR_HEADER: "1"}
    ) as client:
        assert client.post(contract.infer_path("clip"), json=_request(9)).status_code == 200
    forged = servers.stable.metrics()
    assert metric_value(forged, requests_total, endpoint="infer") == 1
    assert metric_value(forged, requests_total, endpoint=contract.ENDPOINT_MIRROR) == requests


def test_other_weights_score_worse(servers: Servers) -> None:
    requests = 4
    for index in range(requests):
        assert _infer(servers.canary_other, index).status_code == 200
    _wait_for(
        lambda: _mirror_results(servers.canary_other)[contract.MIRROR_COMPARED] == requests,
        "4 compared mirrors",
    )
    page = servers.canary_other.metrics()
    count = metric_value(page, contract.METRIC_QUALITY_SCORE + "_count", **COSINE)
    total = metric_value(page, contract.METRIC_QUALITY_SCORE + "_sum", **COSINE)
    assert count == requests * ROWS_PER_REQUEST
    assert total / count < 0.9  # the default gate threshold is 0.99


def test_the_client_never_waits_for_a_stuck_or_vanished_target(servers: Servers) -> None:
    canary = servers.canary_stuck
    reference = _infer(servers.canary, 0).json()["outputs"]

    # The first mirror hangs on the black hole until its 3 s timeout. A client that waited for
    # it could never see a drop: each next request would find the one slot free again.
    def answered_while_stuck() -> bool:
        response = _infer(canary, 0)
        assert response.status_code == 200
        assert response.json()["outputs"] == reference
        return _mirror_results(canary)[contract.MIRROR_DROPPED] > 0

    _wait_for(answered_while_stuck, "a dropped mirror (the client waited for the mirror?)")
    _wait_for(lambda: _mirror_results(canary)[contract.MIRROR_ERROR] >= 1, "the mirror timeout")

    # The target goes away (a promoted canary whose stable was deleted): one connection error,
    # then the mirror backs off (dropped, not sent) while clients are still answered.
    servers.black_hole.close()
    errors = _mirror_results(canary)[contract.MIRROR_ERROR]

    def refused() -> bool:
        assert _infer(canary, 1).status_code == 200
        return _mirror_results(canary)[contract.MIRROR_ERROR] > errors

    _wait_for(refused, "a refused mirror connection")
    before = _mirror_results(canary)
    for index in range(3):
        assert _infer(canary, index).status_code == 200
    after = _mirror_results(canary)
    assert after[contract.MIRROR_ERROR] == before[contract.MIRROR_ERROR]
    assert after[contract.MIRROR_DROPPED] == before[contract.MIRROR_DROPPED] + 3
    assert after[contract.MIRROR_COMPARED] == 0
