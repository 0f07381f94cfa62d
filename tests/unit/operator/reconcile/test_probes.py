"""reconcile/probes.py: test inference, pod scrapes and Prometheus queries (HTTP mocked with
httpx.MockTransport; the real runtime answers them in tests/e2e)."""

from __future__ import annotations

import json

import httpx

from mmop.operator import models
from mmop.operator.reconcile import probes
from mmop.operator.reconcile.observe import PodInfo
from mmop.runtime import contract

POD = PodInfo(name="clip-v2-abc", version="v2", revision="r2", ip="10.1.2.3", ready=True)
POD_B = PodInfo(name="clip-v2-def", version="v2", revision="r2", ip="10.1.2.4", ready=True)


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_smoke_test_sends_a_real_request_and_marks_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "model_name": "clip",
                "outputs": [
                    {"name": "scores", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.5]}
                ],
            },
        )

    async with _client(httpx.MockTransport(handler)) as http:
        result = await probes.smoke_test(
            http,
            pod=POD,
            model="clip",
            task=models.Task.ZERO_SHOT_IMAGE_CLASSIFICATION,
            token="s3cret",
            smoke_token="per-model-token",
        )
    assert result.ok, result.message
    (request,) = seen
    assert str(request.url) == "http://10.1.2.3:8080/v2/models/clip/infer"
    assert request.headers[contract.SMOKE_TEST_HEADER] == "per-model-token"
    assert request.headers["Authorization"] == "Bearer s3cret"
    body = json.loads(request.content)
    assert {i["name"] for i in body["inputs"]} == {"image", "labels"}


def test_operator_headers_mark_only_with_a_token() -> None:
    assert probes.operator_headers(token=None, smoke_token=None) == {}
    assert probes.operator_headers(token="t", smoke_token="s") == {
        contract.SMOKE_TEST_HEADER: "s",
        "Authorization": "Bearer t",
    }


async def test_smoke_test_failures() -> None:
    for response in (httpx.Response(500, json={"error": "boom"}), httpx.Response(200, json={})):
        async with _client(httpx.MockTransport(lambda r, resp=response: resp)) as http:
            result = await probes.smoke_test(
                http, pod=POD, model="clip", task=models.Task.IMAGE_TO_TEXT
            )
        assert not result.ok

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _client(httpx.MockTransport(refuse)) as http:
        result = await probes.smoke_test(
            http, pod=POD, model="clip", task=models.Task.AUTOMATIC_SPEECH_RECOGNITION
        )
    assert not result.ok and "ConnectError" in result.message


TEXT = """\
mmop_requests_total{model="clip",endpoint="infer",code="200"} 9.0
mmop_requests_total{model="clip",endpoint="infer",code="503"} 1.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="infer",le="0.1"} 10.0
mmop_request_duration_seconds_bucket{model="clip",endpoint="infer",le="+Inf"} 10.0
"""


async def test_scrape_sums_pods_and_fails_whole() -> None:
    async with _client(httpx.MockTransport(lambda r: httpx.Response(200, text=TEXT))) as http:
        snap = await probes.scrape(http, [POD, POD_B])
    assert snap is not None
    assert (snap.requests, snap.errors, snap.pods) == (20, 2, ["clip-v2-abc", "clip-v2-def"])

    def one_down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if request.url.host == "10.1.2.4" else 200, text=TEXT)

    async with _client(httpx.MockTransport(one_down)) as http:
        assert await probes.scrape(http, [POD, POD_B]) is None


async def test_prometheus_snapshot() -> None:
    queries: list[str] = []

    def prometheus(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        queries.append(query)
        if query.startswith("sum by (le)"):
            result = [
                {"metric": {"le": "0.1"}, "value": [0, "40"]},
                {"metric": {"le": "+Inf"}, "value": [0, "42"]},
            ]
        elif query.startswith("count by (pod)"):
            result = [{"metric": {"pod": "clip-v2-abc"}, "value": [0, "2"]}]
        elif 'code=~"5..|4..",code!~"429|499"' in query:
            result = [{"metric": {}, "value": [0, "2"]}]
        else:
            result = [{"metric": {}, "value": [0, "42"]}]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    async with _client(httpx.MockTransport(prometheus)) as http:
        snap = await probes.prometheus_snapshot(
            http, url="http://prom:9090", namespace="ml", pods=[POD]
        )
    assert snap == models.MetricsSnapshot(
        requests=42, errors=2, pods=["clip-v2-abc"], buckets={"0.1": 40, "+Inf": 42}
    )
    assert all('namespace="ml"' in q and 'pod=~"clip-v2-abc"' in q for q in queries)

    async with _client(httpx.MockTransport(lambda r: httpx.Response(500))) as http:
        assert (
            await probes.prometheus_snapshot(
                http, url="http://prom:9090", namespace="ml", pods=[POD]
            )
            is None
        )
