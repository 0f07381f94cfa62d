"""Requests built to make the runtime allocate far more than they weigh (issue 14), against
real servers, with the peak memory each one caused (the server's VmHWM, reset before each):

- a nested-JSON bomb: 8 MiB of ``{"inputs":[[],[],...]}`` parsed to ~190 MB of lists before
  the structure was counted on the raw bytes;
- an audio bomb: 28 KB of 8-channel FLAC at 655,350 Hz, 5 s, decoded to 105 MB of float32
  (and more for mixing and resampling) before rate and channels were checked in the header;
- a bearer token configured with a trailing newline (a Secret made from a file);
- the memory plan the server derived from its memory limit.

The memory bounds are generous (a bounded request grows the server by a few MB here); the
figures go to docs/reliability.md (``-s`` prints them).
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import soundfile

from mmop.runtime import contract
from tests.support.runtime import BOMB_MEMORY_LIMIT, BOMB_TOKEN, MIB, RuntimeServer, peak_growth

AUTH = {"Authorization": f"Bearer {BOMB_TOKEN}"}
BOUND = 48 * MIB


def json_bomb(size: int) -> bytes:
    return b'{"inputs":[' + b"[]," * (size // 3 - 8) + b"[]]}"


def flac_bomb(*, seconds: float, rate: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    with soundfile.SoundFile(
        buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16"
    ) as file:
        block = np.zeros((65_536, channels), dtype=np.int16)
        left = int(seconds * rate)
        while left > 0:
            file.write(block[: min(left, len(block))])
            left -= len(block)
    return buffer.getvalue()


def test_a_token_with_a_trailing_newline_is_honoured(bomb_server: RuntimeServer) -> None:
    path = contract.model_path(bomb_server.name)
    with bomb_server.client() as client:
        assert client.get(path, headers=AUTH).status_code == 200
        assert client.get(path, headers={"Authorization": f"bearer  {BOMB_TOKEN}"}).is_success
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer bomb-toke"}).status_code == 401


def test_the_memory_plan_fits_the_limit(bomb_server: RuntimeServer) -> None:
    with bomb_server.client(headers=AUTH) as client:
        parameters = client.get(contract.model_path(bomb_server.name)).json()["parameters"]
    print("memory plan:", {k: v for k, v in parameters.items() if "bytes" in k or "queue" in k})
    assert parameters["memory_limit_bytes"] == BOMB_MEMORY_LIMIT
    assert 0 < parameters["max_admitted_bytes"] < BOMB_MEMORY_LIMIT
    assert parameters["worst_case_memory_bytes"] <= BOMB_MEMORY_LIMIT
    assert "worst case" in bomb_server.log()


def test_a_nested_json_bomb_is_refused_before_parsing(bomb_server: RuntimeServer) -> None:
    body = json_bomb(8 * MIB - 1024)
    with bomb_server.client(headers=AUTH) as client:

        def send() -> httpx.Response:
            return client.post(
                bomb_server.infer_path,
                content=body,
                headers={"content-type": "application/json"},
            )

        response, growth = peak_growth(bomb_server.process.pid, send)
    print(
        f"nested-JSON bomb: {len(body)} bytes, status {response.status_code}, "
        f"peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert response.status_code == 400
    assert "JSON arrays and objects; at most 4096" in response.json()["error"]
    assert growth < BOUND


def test_an_audio_bomb_is_refused_before_decoding(speech_server: RuntimeServer) -> None:
    bomb = flac_bomb(seconds=5, rate=655_350, channels=8)
    document = {
        "inputs": [
            {
                "name": "audio",
                "shape": [4],
                "datatype": "BYTES",
                "data": [base64.b64encode(bomb).decode()] * 4,
            }
        ]
    }
    with speech_server.client() as client:

        def send() -> httpx.Response:
            return client.post(speech_server.infer_path, json=document)

        response, growth = peak_growth(speech_server.process.pid, send)
    print(
        f"audio bomb: 4 x {len(bomb)} bytes, status {response.status_code}, "
        f"peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert response.status_code == 400
    assert "sample rate of 655350 Hz, over the limit of 192000 Hz" in response.json()["error"]
    assert growth < BOUND
    with speech_server.client() as client:
        assert client.get(contract.READY_PATH).json() == {"ready": True}
