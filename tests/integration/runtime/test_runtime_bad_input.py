"""Everything a client can get wrong is a 4xx JSON error that says what is wrong, and the
server stays healthy (and does not grow) afterwards."""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import soundfile

from mmop.runtime import contract
from tests.support.runtime import RuntimeServer, raw_exchange


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images(*values: str) -> dict[str, Any]:
    return {"name": "image", "shape": [len(values)], "datatype": "BYTES", "data": list(values)}


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header that claims a huge size with a few bytes of data."""
    return contract.png_file(width, height, b"\0" * 99)


PNG = b64(contract.tiny_png())


@pytest.fixture
def client(classification_server: RuntimeServer) -> Iterator[httpx.Client]:
    with classification_server.client() as http:
        yield http


def _post(client: httpx.Client, server: RuntimeServer, body: Any, **kwargs: Any) -> httpx.Response:
    path = contract.infer_path(server.name)
    if isinstance(body, bytes):
        return client.post(
            path, content=body, headers={"content-type": "application/json"}, **kwargs
        )
    return client.post(path, json=body, **kwargs)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [images("!!not base64!!")]}, "image[0] is not valid base64"),
        ({"inputs": [images(b64(b"just some text"))]}, "image[0] is not an image"),
        ({"inputs": [images(PNG, b64(bomb_png(2000, 2000)))]}, "over the limit of 1000000 pixels"),
        (
            {"inputs": [images(b64(bomb_png(1100, 1000)))]},
            "image[0] is 1100x1000 = 1100000 pixels, over the limit of 1000000 pixels",
        ),
        (
            {"inputs": [{**images(PNG), "datatype": "FP32", "data": [1.0]}]},
            "input 'image' must have datatype BYTES, got FP32",
        ),
        ({"inputs": [{**images(PNG), "shape": [2]}]}, "shape [2] needs 2 elements, but data has 1"),
        ({"inputs": [{**images(PNG), "name": "picture"}]}, "unknown input 'picture'; model"),
        ({"inputs": [images(PNG), {**images(PNG), "name": "text"}]}, "unknown input 'text'"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"id": "x"}, "'inputs' must be a non-empty list"),
        ({"inputs": {"image": PNG}}, "'inputs' must be a non-empty list"),
        (
            {"inputs": [{**images(PNG), "data": [5]}]},
            "BYTES data must hold strings, found a number",
        ),
        ({"inputs": [images(*[PNG] * 9)]}, "has 9 elements; at most 8"),
        ({"inputs": [images(PNG)], "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
        ({"inputs": [images(PNG)], "id": 7}, "'id' must be a string"),
        (
            {"inputs": [images(PNG)], "parameters": {"a": [1]}},
            "must be a string, number or boolean",
        ),
        ([1, 2, 3], "must be a JSON object, not a list"),
        (b"{not json", "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "50000 JSON arrays and objects; at most 4096"),
        (b"[" * 2_000 + b"]" * 2_000, "not valid JSON"),
        ({"inputs": [{**images("x"), "data": [[[[["x"]]]]]}]}, "deeper than its shape"),
    ],
)
def test_bad_requests_are_400_with_a_message(
    client: httpx.Client, classification_server: RuntimeServer, body: Any, message: str
) -> None:
    response = _post(client, classification_server, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_zero_shot_label_limits(zero_shot_server: RuntimeServer) -> None:
    def labels(values: list[str]) -> dict[str, Any]:
        return {"name": "labels", "shape": [len(values)], "datatype": "BYTES", "data": values}

    with zero_shot_server.client() as client:
        path = contract.infer_path(zero_shot_server.name)
        too_many = client.post(path, json={"inputs": [images(PNG), labels(list("abcdef"))]})
        twice = client.post(path, json={"inputs": [images(PNG), labels(["a", "a"])]})
        missing = client.post(path, json={"inputs": [images(PNG)]})
        template = client.post(
            path,
            json={
                "inputs": [images(PNG), labels(["a"])],
                "parameters": {"hypothesis_template": "no slot"},
            },
        )
    assert too_many.status_code == 400
    assert "6 labels; at most 5" in too_many.json()["error"]
    assert "same label twice" in twice.json()["error"]
    assert missing.status_code == 400
    assert "input 'labels' is missing" in missing.json()["error"]
    assert "'{}'" in template.json()["error"]


def test_audio_limits(asr_server: RuntimeServer) -> None:
    def audio(value: str) -> dict[str, Any]:
        return {"name": "audio", "shape": [1], "datatype": "BYTES", "data": [value]}

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(8000 * 6, dtype=np.float32), 8000, format="WAV")
    with asr_server.client() as client:
        path = contract.infer_path(asr_server.name)
        too_long = client.post(path, json={"inputs": [audio(b64(buffer.getvalue()))]})
        not_audio = client.post(path, json={"inputs": [audio(PNG)]})
        bad_tokens = client.post(
            path,
            json={
                "inputs": [audio(b64(contract.tiny_wav()))],
                "parameters": {"max_new_tokens": "x"},
            },
        )
        too_many_tokens = client.post(
            path,
            json={"inputs": [audio(b64(contract.tiny_wav()))], "parameters": {"max_new_tokens": 9}},
        )
    assert too_long.status_code == 400
    assert "audio[0] is 6.0 s long, over the limit of 5 s" in too_long.json()["error"]
    assert not_audio.status_code == 400
    assert "audio[0] is not a readable audio file" in not_audio.json()["error"]
    assert "'max_new_tokens' must be an integer" in bad_tokens.json()["error"]
    assert "between 1 and 8" in too_many_tokens.json()["error"]


class TestBodySize:
    def test_declared_too_large_is_refused_before_the_body_is_sent(
        self, classification_server: RuntimeServer
    ) -> None:
        path = contract.infer_path(classification_server.name)
        status, body = raw_exchange(
            classification_server.port,
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000000\r\n\r\n".encode(),
        )
        assert status.startswith("HTTP/1.1 413")
        assert "at most 262144" in body

    def test_streamed_body_over_the_limit(self, classification_server: RuntimeServer) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["'
            for _ in range(40):
                yield b"A" * 8192
            yield b'"]}]}'

        with classification_server.client() as client:
            response = client.post(
                contract.infer_path(classification_server.name), content=chunks()
            )
        assert response.status_code == 413
        assert "over the limit of 262144 bytes" in response.json()["error"]

    def test_compressed_bomb(self, classification_server: RuntimeServer) -> None:
        bomb = zlib.compress(b" " * 5_000_000)
        with classification_server.client() as client:
            response = client.post(
                contract.infer_path(classification_server.name),
                content=bomb,
                headers={"content-encoding": "deflate", "content-type": "application/json"},
            )
        assert response.status_code == 413
        assert "decompressed body is over the limit" in response.json()["error"]


class TestRouting:
    def test_unknown_model_is_404(self, client: httpx.Client) -> None:
        for response in (
            client.post(contract.infer_path("nope"), json={"inputs": [images(PNG)]}),
            client.get(contract.model_path("nope")),
            client.get(contract.model_ready_path("nope")),
        ):
            assert response.status_code == 404
            assert "'nope' is not served here" in response.json()["error"]

    def test_unknown_route_and_method_are_json(self, client: httpx.Client) -> None:
        missing = client.get("/v3/whatever")
        assert missing.status_code == 404
        assert missing.json() == {"error": "Not Found"}
        wrong = client.get(contract.infer_path("x"))
        assert wrong.status_code == 405
        assert "error" in wrong.json()

    def test_embeddings_need_an_embedding_model(self, client: httpx.Client) -> None:
        response = client.post(contract.EMBEDDINGS_PATH, json={"model": "x", "input": "hi"})
        assert response.status_code == 404
        assert "image-text-embedding" in response.json()["error"]

    def test_embeddings_bad_input(self, embedding_server: RuntimeServer) -> None:
        with embedding_server.client() as client:
            tokens = client.post(
                contract.EMBEDDINGS_PATH, json={"model": "clip", "input": [[1, 2]]}
            )
            not_image = client.post(
                contract.EMBEDDINGS_PATH,
                json={"model": "clip", "input": ["data:image/png;base64," + b64(b"nope")]},
            )
        assert tokens.status_code == 400
        assert "token-id inputs are not supported" in tokens.json()["error"]
        assert not_image.status_code == 400
        assert "input[0] is not an image" in not_image.json()["error"]


def test_bad_input_neither_crashes_nor_grows_the_server(
    classification_server: RuntimeServer,
) -> None:
    process = psutil.Process(classification_server.process.pid)
    hostile = [
        {"inputs": [images(b64(bomb_png(30_000, 30_000)))]},
        {"inputs": [images(b64(bomb_png(999, 1000)))]},
        {"inputs": [images(b64(contract.tiny_png()[:40]))]},
        {"inputs": [images(b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 500))]},
        {"inputs": [images(b64(contract.tiny_wav()))]},
    ]
    with classification_server.client() as client:
        path = contract.infer_path(classification_server.name)
        for body in hostile:  # warm up allocator pools before measuring
            client.post(path, json=body)
        before = process.memory_info().rss
        for _ in range(30):
            for body in hostile:
                assert client.post(path, json=body).status_code == 400
        after = process.memory_info().rss
        assert client.get(contract.READY_PATH).status_code == 200
        assert client.post(path, json={"inputs": [images(PNG)]}).status_code == 200
    assert after - before < 50 * 1024 * 1024
