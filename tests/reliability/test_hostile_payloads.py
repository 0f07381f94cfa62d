"""A corpus of hostile requests against real runtime servers: corrupt and truncated media,
decompression bombs, bodies over the byte limit, pathological JSON, wrong types and unicode
edge cases. Every one is answered with the status the design names (400 bad input, 413 too
large) and a JSON error that says what is wrong; unusual but valid unicode is served, and
labels come back exactly as sent; the servers stay ready and correct afterwards.

(tests/integration/runtime/test_runtime_bad_input.py covers the everyday mistakes; this is
the adversarial side.)
"""

from __future__ import annotations

import base64
import gzip
import io
import struct
import wave
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import soundfile
from PIL import Image

from mmop.runtime import contract
from tests.support.runtime import MIB, RuntimeServer

PNG = contract.tiny_png()
WAV = contract.tiny_wav()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- crafted files ---------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(width: int, height: int, *, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    """A PNG whose header claims ``width`` x ``height``; its pixel data need not match."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + extra
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64) if idat is None else idat)
        + _png_chunk(b"IEND", b"")
    )


def png_text_bomb() -> bytes:
    """A 1x1 PNG with a compressed text chunk that inflates to 64 MiB."""
    inflated = zlib.compress(b"\0" * (64 * MIB), 9)
    return png(1, 1, extra=_png_chunk(b"zTXt", b"Comment\0\0" + inflated))


def png_bad_crc() -> bytes:
    data = bytearray(PNG)
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


def jpeg() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is rewritten to claim another size."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16


def wav(
    *, rate: int = 16000, channels: int = 1, frames: int = 800, declared: int | None = None
) -> bytes:
    """A PCM16 WAV; ``declared`` rewrites the data chunk's size to claim more samples."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\1" * frames * channels)
    data = bytearray(buffer.getvalue())
    if declared is not None:
        at = data.index(b"data") + 4
        data[at : at + 4] = struct.pack("<I", declared)
    return bytes(data)


def wav_with_rate(rate: int) -> bytes:
    data = bytearray(wav())
    data[24:28] = struct.pack("<I", rate)
    return bytes(data)


def float_wav(values: list[float]) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(
        buffer, np.array(values, dtype=np.float32), 16000, format="WAV", subtype="FLOAT"
    )
    return buffer.getvalue()


def flac() -> bytes:
    buffer = io.BytesIO()
    tone = (0.3 * np.sin(np.linspace(0, 300, 16000))).astype(np.float32)
    soundfile.write(buffer, tone, 16000, format="FLAC")
    return buffer.getvalue()


def flac_corrupt() -> bytes:
    data = bytearray(flac())
    data[8:40] = b"\xff" * 32  # STREAMINFO: block sizes, rate, channels, sample count
    return bytes(data)


# --- requests ---------------------------------------------------------------------------------


def bytes_input(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


def zero_shot(
    image: str = b64(PNG), labels: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "inputs": [bytes_input("image", [image]), bytes_input("labels", labels or ["cat", "dog"])],
        **extra,
    }


def zero_shot_shape(shape: list[int]) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": "BYTES", "data": []}]}


def speech(audio: bytes) -> dict[str, Any]:
    return {"inputs": [bytes_input("audio", [b64(audio)])]}


@dataclass(frozen=True)
class Case:
    id: str
    expected: int
    message: str  # a fragment of the error message
    body: Callable[[], Any]  # a JSON document, or raw bytes
    server: str = "hostile_server"
    headers: dict[str, str] = field(default_factory=dict)


NUMERIC_LABELS = {"name": "labels", "shape": [2], "datatype": "BYTES", "data": [1, 2]}


def _nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


CASES = [
    # images: truncated, corrupt, bombs, refused formats
    Case("png-truncated", 400, "image[0] could not be decoded", lambda: zero_shot(b64(PNG[:60]))),
    Case("png-bad-crc", 400, "image[0]", lambda: zero_shot(b64(png_bad_crc()))),
    Case(
        "png-corrupt-pixels",
        400,
        "image[0] could not be decoded",
        lambda: zero_shot(b64(png(32, 32, idat=b"\x78\x9c" + b"\xde\xad\xbe\xef" * 8))),
    ),
    Case(
        "png-bomb-50000x50000",
        400,
        "over the limit of 40000000 pixels",
        lambda: zero_shot(b64(png(50_000, 50_000))),
    ),
    Case(
        "png-text-bomb",
        400,
        "image[0] is not a readable image",
        lambda: zero_shot(b64(png_text_bomb())),
    ),
    Case("png-1x20000", 400, "aspect ratio is over 100:1", lambda: zero_shot(b64(png(1, 20_000)))),
    Case("png-0x0", 400, "image[0]", lambda: zero_shot(b64(png(0, 0)))),
    Case("jpeg-truncated", 400, "image[0]", lambda: zero_shot(b64(jpeg()[:300]))),
    Case(
        "jpeg-garbage",
        400,
        "image[0]",
        lambda: zero_shot(b64(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)),
    ),
    Case(
        "jpeg-bomb-65000x65000",
        400,
        "over the limit of 40000000 pixels",
        lambda: zero_shot(b64(jpeg_claiming(65_000, 65_000))),
    ),
    Case(
        "gif-bomb",
        400,
        "over the limit of 40000000 pixels",
        lambda: zero_shot(b64(gif_claiming(60_000, 60_000))),
    ),
    Case(
        "bmp-bomb",
        400,
        "image[0]",
        lambda: zero_shot(b64(bmp_claiming(40_000, 40_000))),
    ),
    Case(
        "eps-refused",
        400,
        "not an image in a supported format",
        lambda: zero_shot(b64(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")),
    ),
    Case(
        "svg-refused",
        400,
        "not an image in a supported format",
        lambda: zero_shot(b64(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>')),
    ),
    Case(
        "base64-non-ascii",
        400,
        "not valid base64 (non-ASCII",
        lambda: zero_shot("iVBOR\u00e9w0KGgo="),
    ),
    Case("base64-bad-padding", 400, "not valid base64", lambda: zero_shot("iVBORw0KGgo")),
    Case("image-empty", 400, "image[0] is empty", lambda: zero_shot("")),
    # audio
    Case(
        "wav-truncated-header",
        400,
        "audio[0] is not a readable audio file",
        lambda: speech(WAV[:20]),
        "speech_server",
    ),
    Case("wav-rate-0", 400, "audio[0]", lambda: speech(wav_with_rate(0)), "speech_server"),
    Case(
        "wav-nan",
        400,
        "not finite numbers",
        lambda: speech(float_wav([0.1, float("nan")] * 400)),
        "speech_server",
    ),
    Case(
        "wav-inf",
        400,
        "not finite numbers",
        lambda: speech(float_wav([0.1, float("inf")] * 400)),
        "speech_server",
    ),
    Case(
        "wav-too-long",
        400,
        "over the limit of 5 s",
        lambda: speech(wav(frames=16000 * 6)),
        "speech_server",
    ),
    Case("flac-corrupt", 400, "audio[0]", lambda: speech(flac_corrupt()), "speech_server"),
    Case("flac-magic-only", 400, "audio[0]", lambda: speech(b"fLaC" + b"\0" * 40), "speech_server"),
    Case(
        "mp3-refused",
        400,
        "audio[0]",
        lambda: speech(b"ID3\x04\0\0\0\0\0\0" + b"\xff\xfb" * 200),
        "speech_server",
    ),
    Case(
        "image-sent-as-audio",
        400,
        "audio[0] is not a readable audio file",
        lambda: speech(PNG),
        "speech_server",
    ),
    # size
    Case(
        "base64-over-the-byte-limit",
        413,
        f"at most {2 * MIB}",
        lambda: zero_shot("A" * (3 * MIB)),
    ),
    Case(
        "gzip-bomb",
        413,
        "decompressed body is over the limit",
        lambda: gzip.compress(b" " * (16 * MIB)),
        headers={"content-encoding": "gzip"},
    ),
    Case(
        "too-many-images",
        400,
        "at most 64",
        lambda: {"inputs": [bytes_input("image", [b64(PNG)] * 65), bytes_input("labels", ["a"])]},
    ),
    Case(
        "too-many-labels",
        400,
        "65 elements; at most 64",
        lambda: zero_shot(labels=[str(i) for i in range(65)]),
    ),
    # JSON structure
    Case(
        "nested-arrays-100k",
        400,
        "100000 JSON arrays and objects; at most 4096",
        lambda: b"[" * 100_000 + b"]" * 100_000,
    ),
    Case("nested-arrays-2000", 400, "not valid JSON", lambda: b"[" * 2_000 + b"]" * 2_000),
    Case("nested-objects-3000", 400, "not valid JSON", lambda: _nested_objects(3000)),
    Case(
        "data-nested-1000-deep",
        400,
        "nested deeper than its shape",
        lambda: (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": '
            + b"[" * 1000
            + b'"x"'
            + b"]" * 1000
            + b"}]}"
        ),
    ),
    Case("empty-body", 400, "body is empty", lambda: b""),
    Case("json-null", 400, "must be a JSON object, not null", lambda: b"null"),
    Case("nan-literal", 400, "not valid JSON", lambda: b'{"inputs": NaN}'),
    Case("number-overflow", 400, "not valid JSON", lambda: b'{"inputs": [1e400]}'),
    Case(
        "shape-beyond-64-bit",
        400,
        "shape must hold non-negative integers",
        lambda: (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", '
            b'"shape": [18446744073709551616], "data": []}]}'
        ),
    ),
    Case(
        "shape-2**62",
        400,
        "at most 64 are accepted",
        lambda: zero_shot() | {"inputs": [bytes_input("image", ["x"]) | {"shape": [2**62]}]},
    ),
    Case(
        "shape-negative",
        400,
        "non-negative integers",
        lambda: {"inputs": [bytes_input("image", ["x"]) | {"shape": [-1]}]},
    ),
    Case(
        "shape-rank-5",
        400,
        "shape must be a list of 1 to 4",
        lambda: {"inputs": [bytes_input("image", ["x"]) | {"shape": [1, 1, 1, 1, 1]}]},
    ),
    Case(
        "shape-bools",
        400,
        "non-negative integers",
        lambda: {"inputs": [bytes_input("image", ["x"]) | {"shape": [True]}]},
    ),
    Case("inputs-a-string", 400, "'inputs' must be a non-empty list", lambda: {"inputs": "image"}),
    Case(
        "datatype-unknown",
        400,
        "datatype must be one of",
        lambda: {"inputs": [bytes_input("image", ["x"]) | {"datatype": "STRING"}]},
    ),
    Case(
        "data-an-object",
        400,
        "data must be a list, not an object",
        lambda: {"inputs": [bytes_input("image", ["x"]) | {"data": {"a": 1}}]},
    ),
    Case(
        "labels-numbers",
        400,
        "BYTES data must hold strings",
        lambda: zero_shot() | {"inputs": [bytes_input("image", [b64(PNG)]), NUMERIC_LABELS]},
    ),
    Case(
        "parameters-nested",
        400,
        "must be a string, number or boolean",
        lambda: zero_shot(parameters={"hypothesis_template": {"x": 1}}),
    ),
    Case("outputs-a-string", 400, "'outputs' must be a list", lambda: zero_shot(outputs="label")),
    Case("id-1mb", 400, "'id' must be a string of at most 256", lambda: zero_shot(id="x" * MIB)),
    Case(
        "binary-header-negative",
        400,
        "Inference-Header-Content-Length is -1",
        lambda: zero_shot(),
        headers={"inference-header-content-length": "-1"},
    ),
    Case(
        "binary-header-not-a-number",
        400,
        "is not a number",
        lambda: zero_shot(),
        headers={"inference-header-content-length": "1e3"},
    ),
    Case(
        "encoding-unsupported",
        400,
        "Content-Encoding 'br' is not supported",
        lambda: zero_shot(),
        headers={"content-encoding": "br"},
    ),
    # unicode
    Case("invalid-utf8", 400, "not valid JSON", lambda: b'{"inputs": "\xff\xfe"}'),
    Case("utf8-bom", 400, "not valid JSON", lambda: b"\xef\xbb\xbf" + b'{"inputs": []}'),
    Case(
        "lone-surrogate-label",
        400,
        "not valid JSON",
        lambda: (
            b'{"inputs": [{"name": "labels", "shape": [1], "datatype": "BYTES", '
            b'"data": ["\\ud800"]}]}'
        ),
    ),
    Case(
        "label-1mb",
        400,
        "has 1048576 characters; at most 4096",
        lambda: zero_shot(labels=["x" * MIB]),
    ),
    Case(
        "template-1mb",
        400,
        "characters; at most 4096",
        lambda: zero_shot(parameters={"hypothesis_template": "{}" + "x" * MIB}),
    ),
    Case("label-whitespace", 400, "is empty", lambda: zero_shot(labels=["cat", " \t\u3000 "])),
    # client strings echoed in messages are cut (issue 14)
    Case(
        "parameter-key-1mb",
        400,
        "(1048576 characters)",
        lambda: {**zero_shot(), "parameters": {"k" * MIB: [1]}},
    ),
    Case(
        "output-name-1mb",
        400,
        "unknown output 'oooo",
        lambda: {**zero_shot(), "outputs": [{"name": "o" * MIB}]},
    ),
    Case(
        "shape-of-huge-numbers",
        400,
        "shape must hold non-negative integers",
        lambda: zero_shot_shape([-(2**63)] * 4),
    ),
    Case(
        "labels-repeated", 400, "same label twice", lambda: zero_shot(labels=["\u00e9", "\u00e9"])
    ),
]


def _send(client: httpx.Client, server: RuntimeServer, case: Case) -> httpx.Response:
    body = case.body()
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **case.headers}
    return client.post(server.infer_path, content=content, headers=headers)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_the_right_4xx(case: Case, request: pytest.FixtureRequest) -> None:
    server: RuntimeServer = request.getfixturevalue(case.server)
    with server.client() as client:
        response = _send(client, server, case)
    assert response.status_code == case.expected, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert case.message in error, error
    assert " at 0x" not in error  # no object reprs (memory addresses) in what clients read
    assert len(error) <= 300, error[:1000]  # client strings and exception text come back cut


# Files whose headers lie about their length are decoded for what they hold: libsndfile
# counts the frames that are there, so nothing is allocated for the claimed size (what ffmpeg
# and browsers do with a cut-off WAV too). Finite samples of absurd size are garbage in,
# garbage out, but not an error.
SERVED = [
    Case(
        "wav-claims-an-hour",
        200,
        "",
        lambda: speech(wav(declared=16000 * 3600 * 2)),
        "speech_server",
    ),
    Case("wav-cut-mid-data", 200, "", lambda: speech(wav(frames=8000)[:5000]), "speech_server"),
    Case(
        "wav-huge-samples",
        200,
        "",
        lambda: speech(float_wav([3.0e38, -3.0e38] * 400)),
        "speech_server",
    ),
]


@pytest.mark.parametrize("case", SERVED, ids=[c.id for c in SERVED])
def test_lying_headers_are_decoded_for_what_the_file_holds(
    case: Case, request: pytest.FixtureRequest
) -> None:
    server: RuntimeServer = request.getfixturevalue(case.server)
    with server.client() as client:
        response = _send(client, server, case)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["outputs"][0]["shape"] == [1]


# Unusual but valid text: served, and the label comes back exactly as sent.
UNICODE_LABELS = [
    "\u202ecat",  # right-to-left override
    "\u05d7\u05ea\u05d5\u05dc",  # Hebrew (RTL) "cat"
    "c\u0000a\u0000t",  # NULs inside
    "\U0001f408\u200d\u2b1b",  # emoji with a zero-width joiner
    "e\u0301\u0301\u0301",  # stacked combining marks
    "\ufeffdog",  # a BOM inside a string is just a character
    "x" * 4096,  # exactly the limit
]


def test_unicode_edge_cases_are_served_and_echoed(hostile_server: RuntimeServer) -> None:
    with hostile_server.client() as client:
        response = client.post(hostile_server.infer_path, json=zero_shot(labels=UNICODE_LABELS))
    assert response.status_code == 200, response.text[:500]
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["scores"]["shape"] == [1, len(UNICODE_LABELS)]
    assert outputs["label"]["data"][0] in UNICODE_LABELS


def test_servers_are_ready_and_correct_after_the_corpus(
    hostile_server: RuntimeServer, speech_server: RuntimeServer
) -> None:
    with hostile_server.client() as client:
        for case in CASES:
            if case.server == "hostile_server":
                assert _send(client, hostile_server, case).status_code == case.expected
        assert client.get(contract.READY_PATH).json() == {"ready": True}
        answer = client.post(hostile_server.infer_path, json=zero_shot(labels=["cat", "dog"]))
    assert answer.status_code == 200
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    scores = outputs["scores"]["data"]
    assert outputs["label"]["data"][0] in ("cat", "dog")
    assert abs(sum(scores) - 1.0) < 1e-4
    with speech_server.client() as client:
        assert client.get(contract.READY_PATH).json() == {"ready": True}
        answer = client.post(speech_server.infer_path, json=speech(WAV))
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["datatype"] == "BYTES"
    assert hostile_server.alive() and speech_server.alive()
    assert "Traceback" not in hostile_server.log() + speech_server.log()
