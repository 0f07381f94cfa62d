"""Fault injection (a test feature for rollouts) and optional bearer-token auth."""

from __future__ import annotations

import pytest

from mmop.runtime import contract
from tests.support.runtime import AUTH_TOKEN, SMOKE_TOKEN, RuntimeServer, image_request
from tests.support.runtime import metric_value as sample

BODY = image_request()


def test_injected_errors_are_500_and_counted(faulty_server: RuntimeServer) -> None:
    with faulty_server.client() as client:
        for _ in range(3):
            response = client.post(contract.infer_path(faulty_server.name), json=BODY)
            assert response.status_code == 500
            assert "injected fault (MMOP_FAULT_ERROR_RATE=1)" in response.json()["error"]
        # Only inference is affected: probes and metadata answer normally.
        assert client.get(contract.READY_PATH).status_code == 200
        assert client.get(contract.model_path(faulty_server.name)).status_code == 200
    assert sample(faulty_server.metrics(), "mmop_requests_total", endpoint="infer", code="500") >= 3


def test_smoke_tests_can_be_spared_the_injected_errors(faulty_server: RuntimeServer) -> None:
    smoke = {contract.SMOKE_TEST_HEADER: SMOKE_TOKEN}
    with faulty_server.client() as client:
        for _ in range(3):
            response = client.post(
                contract.infer_path(faulty_server.name), json=BODY, headers=smoke
            )
            assert response.status_code == 200, response.text
        assert client.post(contract.infer_path(faulty_server.name), json=BODY).status_code == 500
        # A forged mark (any value but the pod's token) is ordinary traffic: not spared.
        for forged in ("1", SMOKE_TOKEN + "x", ""):
            response = client.post(
                contract.infer_path(faulty_server.name),
                json=BODY,
                headers={contract.SMOKE_TEST_HEADER: forged},
            )
            assert response.status_code == 500, forged


def test_injected_latency_is_added(guarded_server: RuntimeServer) -> None:
    # The latency shows in the server's own duration histogram, not in a timed assertion here.
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    before = guarded_server.metrics()
    with guarded_server.client(headers=headers) as client:
        assert client.post(contract.infer_path(guarded_server.name), json=BODY).status_code == 200
    after = guarded_server.metrics()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("mmop_request_duration_seconds_count", endpoint="infer") == 1
    # 300 ms were added: the request is not in the 0.2 s bucket (the gap leaves timer slack).
    assert delta("mmop_request_duration_seconds_bucket", endpoint="infer", le="0.2") == 0


class TestAuth:
    @pytest.mark.parametrize(
        ("headers", "message"),
        [
            ({}, "needs 'Authorization: Bearer <token>'"),
            ({"Authorization": "Bearer wrong"}, "not valid"),
            ({"Authorization": AUTH_TOKEN}, "not valid"),
            ({"Authorization": f"Basic {AUTH_TOKEN}"}, "not valid"),
        ],
    )
    def test_model_routes_need_the_token(
        self, guarded_server: RuntimeServer, headers: dict[str, str], message: str
    ) -> None:
        with guarded_server.client(headers=headers) as client:
            for response in (
                client.post(contract.infer_path(guarded_server.name), json=BODY),
                client.get(contract.model_path(guarded_server.name)),
                client.post(contract.EMBEDDINGS_PATH, json={"model": "x", "input": "y"}),
            ):
                assert response.status_code == 401
                assert message in response.json()["error"]
                assert response.headers["www-authenticate"].startswith("Bearer")

    def test_the_right_token_passes(self, guarded_server: RuntimeServer) -> None:
        headers = {"Authorization": f"bearer {AUTH_TOKEN}"}
        with guarded_server.client(headers=headers) as client:
            assert (
                client.post(contract.infer_path(guarded_server.name), json=BODY).status_code == 200
            )
            assert client.get(contract.model_ready_path(guarded_server.name)).status_code == 200

    def test_probes_and_metrics_stay_open(self, guarded_server: RuntimeServer) -> None:
        with guarded_server.client() as client:
            assert client.get(contract.LIVE_PATH).status_code == 200
            assert client.get(contract.READY_PATH).status_code == 200
            assert client.get(contract.SERVER_METADATA_PATH).status_code == 200
            assert client.get(contract.METRICS_PATH).status_code == 200
        assert (
            sample(guarded_server.metrics(), "mmop_rejected_requests_total", reason="unauthorized")
            > 0
        )


def test_no_token_configured_means_open(classification_server: RuntimeServer) -> None:
    with classification_server.client() as client:
        path = contract.infer_path(classification_server.name)
        assert client.post(path, json=BODY).status_code == 200
