"""The mirror's pure parts (sampling, bounded concurrency, back-off) and its outcomes against a
mock target: compared, incomparable, error, dropped, and what it sends."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import orjson
import pytest

from mmop.runtime import contract, mirror
from mmop.runtime.metrics import Metrics
from mmop.runtime.settings import RuntimeSettings


class TestSampler:
    def test_zero_never_and_hundred_always(self) -> None:
        never, always = mirror.Sampler(0), mirror.Sampler(100)
        assert not any(never() for _ in range(1000))
        assert all(always() for _ in range(1000))

    def test_percentage_of_draws(self) -> None:
        draws = iter([0.0, 0.099, 0.1, 0.5, 0.999])
        sample = mirror.Sampler(10, draw=lambda: next(draws))
        assert [sample() for _ in range(5)] == [True, True, False, False, False]

    def test_random_share_is_near_the_percentage(self) -> None:
        sample = mirror.Sampler(25, draw=random.Random(7).random)
        hits = sum(sample() for _ in range(10_000))
        assert 2300 < hits < 2700

    @pytest.mark.parametrize("percent", [-1, 100.5])
    def test_out_of_range(self, percent: float) -> None:
        with pytest.raises(ValueError, match="within 0-100"):
            mirror.Sampler(percent)


class TestGate:
    def test_bounded_inflight(self) -> None:
        gate = mirror.Gate(max_inflight=2)
        assert gate.try_enter(0.0)
        assert gate.try_enter(0.0)
        assert not gate.try_enter(0.0)
        gate.leave(1.0, target_gone=False)
        assert gate.try_enter(1.0)
        assert gate.inflight == 2

    def test_backs_off_after_a_connection_failure_doubling_to_the_cap(self) -> None:
        gate = mirror.Gate(max_inflight=1, backoff_initial=5.0, backoff_max=12.0)
        assert gate.try_enter(100.0)
        gate.leave(100.0, target_gone=True)
        assert not gate.try_enter(104.9)
        assert gate.try_enter(105.0)
        gate.leave(105.0, target_gone=True)  # 10 s now
        assert not gate.try_enter(114.9)
        assert gate.try_enter(115.0)
        gate.leave(115.0, target_gone=True)  # capped at 12 s
        assert gate.delay == 12.0
        assert not gate.try_enter(126.9)
        assert gate.try_enter(127.0)

    def test_an_answer_ends_the_back_off(self) -> None:
        gate = mirror.Gate(max_inflight=2)
        assert gate.try_enter(0.0)
        assert gate.try_enter(0.0)
        gate.leave(0.0, target_gone=True)
        assert gate.backing_off(1.0)
        gate.leave(1.0, target_gone=False)  # the other request got an answer
        assert not gate.backing_off(1.0)
        assert gate.delay == 0.0

    def test_at_least_one_slot(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            mirror.Gate(max_inflight=0)


def _embeddings(rows: list[list[float]]) -> bytes:
    flat = [value for row in rows for value in row]
    output = {"name": "image_embeds", "datatype": "FP32", "shape": [len(rows), 2], "data": flat}
    return orjson.dumps({"model_name": "clip", "outputs": [output]})


CANARY_ANSWER = _embeddings([[1.0, 0.0], [0.0, 1.0]])


def _counts(metrics: Metrics) -> dict[str, float]:
    page = metrics.render().decode()
    counts: dict[str, float] = {}
    for result in contract.MIRROR_RESULTS:
        line = f'{contract.METRIC_MIRROR_REQUESTS}_total{{result="{result}"}}'
        counts[result] = next(
            float(row.rpartition(" ")[2]) for row in page.splitlines() if row.startswith(line)
        )
    return counts


def _quality(metrics: Metrics, suffix: str) -> float:
    line = f'{contract.METRIC_QUALITY_SCORE}_{suffix}{{metric="embedding_cosine"}}'
    page = metrics.render().decode()
    return next(float(row.rpartition(" ")[2]) for row in page.splitlines() if row.startswith(line))


def _mirror(handler: Any, *, max_inflight: int = 4) -> tuple[mirror.Mirror, Metrics]:
    metrics = Metrics(model="clip")
    return (
        mirror.Mirror(
            url="http://stable.example:8080/",
            task=contract.TASK_IMAGE_TEXT_EMBEDDING,
            model_name="clip",
            percent=100,
            max_inflight=max_inflight,
            timeout_seconds=5,
            metrics=metrics,
            token="smoke-secret",
            transport=httpx.MockTransport(handler),
        ),
        metrics,
    )


async def _settle(m: mirror.Mirror) -> None:
    while m._tasks:
        await asyncio.gather(*m._tasks)


CLIENT_HEADERS = {
    "authorization": "Bearer t0ken",
    "content-type": "application/json",
    "cookie": "session=private",
    "x-request-id": "abc",
}


async def test_same_answers_are_compared_with_what_was_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=CANARY_ANSWER)

    m, metrics = _mirror(handler)
    assert _counts(metrics) == dict.fromkeys(contract.MIRROR_RESULTS, 0.0)  # visible from 0
    await m.submit(body=b'{"inputs": []}', headers=CLIENT_HEADERS, answer=CANARY_ANSWER)
    await _settle(m)
    assert _counts(metrics)[contract.MIRROR_COMPARED] == 1
    assert _quality(metrics, "count") == 2  # one observation per row
    assert _quality(metrics, "sum") == pytest.approx(2.0)
    (request,) = seen
    assert str(request.url) == "http://stable.example:8080/v2/models/clip/infer"
    assert request.content == b'{"inputs": []}'
    # the per-model token: the target counts the copy as mirror only with it
    assert request.headers[contract.MIRROR_HEADER] == "smoke-secret"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert "cookie" not in request.headers
    assert "x-request-id" not in request.headers
    await m.close()


async def test_different_answers_score_lower() -> None:
    stable = _embeddings([[1.0, 0.0], [0.0, -1.0]])  # same, then opposite
    m, metrics = _mirror(lambda request: httpx.Response(200, content=stable))
    await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    await _settle(m)
    assert _quality(metrics, "sum") == pytest.approx(0.0)  # 1 + (-1)
    await m.close()


@pytest.mark.parametrize(
    ("response", "result"),
    [
        (httpx.Response(200, content=_embeddings([[1.0, 0.0]])), contract.MIRROR_INCOMPARABLE),
        (httpx.Response(200, content=b"not json"), contract.MIRROR_INCOMPARABLE),
        (httpx.Response(401, content=b"{}"), contract.MIRROR_ERROR),
        (httpx.Response(503, content=CANARY_ANSWER), contract.MIRROR_ERROR),
        (
            httpx.Response(200, content=b"x" * (mirror.MAX_RESPONSE_BYTES + 1)),
            contract.MIRROR_ERROR,
        ),
    ],
)
async def test_outcomes(response: httpx.Response, result: str) -> None:
    m, metrics = _mirror(lambda request: response)
    await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    await _settle(m)
    counts = _counts(metrics)
    assert counts.pop(result) == 1
    assert set(counts.values()) == {0.0}
    assert _quality(metrics, "count") == 0
    assert not m.gate.backing_off(0.0)
    await m.close()


async def test_unreachable_target_backs_off_and_drops() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    m, metrics = _mirror(handler)
    await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    await _settle(m)
    for _ in range(3):
        await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    await _settle(m)
    assert calls == 1
    assert _counts(metrics) == {
        contract.MIRROR_COMPARED: 0,
        contract.MIRROR_DROPPED: 3,
        contract.MIRROR_ERROR: 1,
        contract.MIRROR_INCOMPARABLE: 0,
    }
    await m.close()


async def test_full_mirror_drops_instead_of_queueing() -> None:
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, content=CANARY_ANSWER)

    m, metrics = _mirror(handler, max_inflight=2)
    for _ in range(5):
        await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    assert _counts(metrics)[contract.MIRROR_DROPPED] == 3
    release.set()
    await _settle(m)
    assert _counts(metrics)[contract.MIRROR_COMPARED] == 2
    await m.close()


async def test_close_cancels_what_is_in_flight() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # never answers
        raise AssertionError

    m, _ = _mirror(handler)
    await m.submit(body=b"{}", headers={}, answer=CANARY_ANSWER)
    await asyncio.sleep(0)
    await m.close()
    assert not m._tasks


def test_off_unless_url_and_percent() -> None:
    metrics = Metrics(model="m")
    base = {"model": "/m", "task": contract.TASK_IMAGE_CLASSIFICATION}
    assert mirror.Mirror.from_settings(RuntimeSettings(**base), metrics=metrics) is None
    off = RuntimeSettings(**base, mirror_url="http://stable:8080", mirror_percent=0)
    assert mirror.Mirror.from_settings(off, metrics=metrics) is None
    on = RuntimeSettings(**base, mirror_url="http://stable:8080/", mirror_percent=5)
    made = mirror.Mirror.from_settings(on, metrics=metrics)
    assert made is not None
    assert made.url == "http://stable:8080/v2/models/m/infer"
    assert made.metric == "label_agreement"


@pytest.mark.parametrize(
    "url", ["stable:8080", "ftp://stable", "http://", "http://stable:8080/?q=1", "http://s/#x"]
)
def test_mirror_url_is_checked(url: str) -> None:
    with pytest.raises(ValueError, match="mirror_url"):
        RuntimeSettings(model="/m", task=contract.TASK_ASR, mirror_url=url)
