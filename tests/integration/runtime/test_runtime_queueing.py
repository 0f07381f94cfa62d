"""Bounded queue, dynamic batching and timeouts, seen from outside through HTTP and /metrics."""

from __future__ import annotations

import concurrent.futures

import httpx

from mmop.runtime import contract
from tests.support.runtime import AUTH_TOKEN, RuntimeServer, image_request, raw_exchange
from tests.support.runtime import metric_value as sample

BODY = image_request()


def test_a_flood_gets_429_and_the_server_stays_healthy(guarded_server: RuntimeServer) -> None:
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    path = contract.infer_path(guarded_server.name)
    before = guarded_server.metrics()

    # The queue holds 4 and every request keeps its slot for 300 ms: 40 at once overflow it.
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    with (
        guarded_server.client(headers=headers, limits=limits) as client,
        concurrent.futures.ThreadPoolExecutor(40) as pool,
    ):
        responses = list(pool.map(lambda _: client.post(path, json=BODY), range(40)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) > 0
    assert 0 < codes.count(200) < 40
    for response in responses:
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
            assert "queue is full" in response.json()["error"]

    after = guarded_server.metrics()
    rejected = sample(after, "mmop_rejected_requests_total", reason="queue_full") - sample(
        before, "mmop_rejected_requests_total", reason="queue_full"
    )
    assert rejected == codes.count(429)
    counted = sample(after, "mmop_requests_total", endpoint="infer", code="429") - sample(
        before, "mmop_requests_total", endpoint="infer", code="429"
    )
    assert counted == codes.count(429)
    assert sample(after, "mmop_queue_depth") == 0
    with guarded_server.client(headers=headers) as client:
        assert client.get(contract.LIVE_PATH).status_code == 200
        assert client.get(contract.READY_PATH).json() == {"ready": True}
        assert client.post(path, json=BODY).status_code == 200


def test_concurrent_requests_are_batched(classification_server: RuntimeServer) -> None:
    before = classification_server.metrics()
    path = contract.infer_path(classification_server.name)

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with (
        classification_server.client(limits=limits) as client,
        concurrent.futures.ThreadPoolExecutor(16) as pool,
    ):
        codes = list(pool.map(lambda _: client.post(path, json=BODY).status_code, range(16)))
    assert codes == [200] * 16
    after = classification_server.metrics()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    batches = delta("mmop_batch_size_count")
    samples = delta("mmop_batch_size_sum")
    assert samples == 16
    # Fewer forward passes than requests: some batch held more than one request.
    assert batches < 16
    assert delta("mmop_batch_size_bucket", le="1.0") < batches
    assert delta("mmop_inference_duration_seconds_count") == batches
    assert delta("mmop_queue_wait_seconds_count") == 16


def test_requests_older_than_the_queue_timeout_get_504(slow_server: RuntimeServer) -> None:
    with slow_server.client() as client:
        response = client.post(contract.infer_path(slow_server.name), json=BODY)
        assert response.status_code == 504
        assert "waited over 0.2 s in the queue" in response.json()["error"]
        assert client.get(contract.READY_PATH).status_code == 200
    assert (
        sample(slow_server.metrics(), "mmop_rejected_requests_total", reason="queue_timeout") >= 1
    )


def test_a_body_that_trickles_in_gets_408(slow_server: RuntimeServer) -> None:
    path = contract.infer_path(slow_server.name)
    status, body = raw_exchange(  # the rest of the body never comes
        slow_server.port,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{".encode(),
    )
    assert status.startswith("HTTP/1.1 408")
    assert "did not arrive within 0.2 s" in body
    assert sample(slow_server.metrics(), "mmop_queue_depth") == 0
