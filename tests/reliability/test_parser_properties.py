"""Property-based tests of what parses client input (``protocol``, ``media``): whatever arrives,
the only exception is the domain's bad-input error (``InvalidInput``, a 400), and what parses
holds together (shape and data agree, images are RGB within the limits, audio is finite).

The examples are bounded and derandomized, so a run is short and a failure repeats.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson
import soundfile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmop.runtime import contract, protocol
from mmop.runtime.errors import InvalidInput
from mmop.runtime.media import (
    MAX_ASPECT_RATIO,
    decode_audio,
    decode_base64,
    decode_image,
    resample,
)

T = TypeVar("T")
BOUNDED = settings(
    max_examples=150,
    deadline=None,  # no timing assertions
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_ITEMS = 8
MAX_PIXELS = 1_000_000

# --- strategies ------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson reads and writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
names = st.sampled_from(["image", "labels", "text", "audio", "prompt", ""]) | json_values
shapes = st.lists(st.integers(min_value=-1, max_value=9), min_size=0, max_size=5) | json_values
datatypes = st.sampled_from(protocol.DATATYPES) | json_values
loose_tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "shape": shapes,
        "datatype": datatypes,
        "data": json_values | st.lists(st.text(max_size=12), max_size=10),
        "parameters": json_values | st.dictionaries(st.text(max_size=8), scalars, max_size=3),
    },
)
_ELEMENTS = {
    "BYTES": st.text(max_size=12),
    "BOOL": st.booleans(),
    "INT64": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "FP32": st.floats(allow_nan=False, allow_infinity=False, width=32),
}


def _nest(flat: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[k * step : (k + 1) * step], shape[1:]) for k in range(shape[0])]


@st.composite
def tensors(draw: st.DrawFn, name: str) -> Any:
    """A well-formed tensor (flat or nested data), sometimes with one field swapped for
    anything at all."""
    datatype = draw(st.sampled_from(sorted(_ELEMENTS)))
    shape = draw(st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=3))
    count = math.prod(shape)
    data = draw(st.lists(_ELEMENTS[datatype], min_size=count, max_size=count))
    tensor: dict[str, Any] = {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "data": _nest(data, shape) if draw(st.booleans()) else data,
    }
    if _sometimes(draw):
        tensor[draw(st.sampled_from(sorted(tensor)))] = draw(json_values)
    return tensor


def _sometimes(draw: st.DrawFn) -> bool:
    """True one time in four: when a well-formed part is swapped for anything at all."""
    return draw(st.integers(min_value=0, max_value=3)) == 0


@st.composite
def infer_documents(draw: st.DrawFn) -> Any:
    """Requests that are mostly right, with parts wrong or arbitrary."""
    chosen = draw(
        st.lists(
            st.sampled_from(["image", "labels", "text", "audio"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    inputs: Any = [draw(tensors(name)) for name in chosen]
    if _sometimes(draw):
        inputs = draw(st.lists(loose_tensors | json_values, max_size=4) | json_values)
    document: dict[str, Any] = {"inputs": inputs}
    optional = {
        "id": st.text(max_size=20),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=3),
        "parameters": st.dictionaries(st.text(max_size=8), scalars.filter(bool), max_size=3),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            document[key] = draw(json_values if _sometimes(draw) else strategy)
    return document


embedding_inputs = (
    st.text(max_size=30)
    | st.builds(lambda b: "data:image/png;base64," + base64.b64encode(b).decode(), st.binary())
    | st.builds(lambda t: "data:" + t, st.text(max_size=40))
)
embedding_documents = st.fixed_dictionaries(
    {
        "model": st.just("clip") | json_values,
        "input": embedding_inputs | st.lists(embedding_inputs | json_values, max_size=5),
    },
    optional={
        "encoding_format": st.sampled_from(["float", "base64", None]) | json_values,
        "dimensions": st.integers(min_value=-2, max_value=600) | json_values,
        "user": st.text(max_size=8) | json_values,
    },
)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), "RGB")
    return [
        contract.tiny_png(),
        *(_encoded(pixels, fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")),
    ]


def _seed_audio() -> list[bytes]:
    tone = (0.3 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    files = [contract.tiny_wav()]
    for fmt, subtype in (("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        buffer = io.BytesIO()
        soundfile.write(buffer, tone, 8000, format=fmt, subtype=subtype)
        files.append(buffer.getvalue())
    return files


IMAGE_SEEDS = _seed_images()
AUDIO_SEEDS = _seed_audio()
# A corruption is a small recipe (which seed, which edits) so that a failing example prints
# short; ``corrupt`` applies it: truncation, bytes overwritten, junk spliced in, and junk in
# the first bytes, where decoders read the sizes and counts they trust most.
edits = st.tuples(
    st.sampled_from(["truncate", "overwrite", "insert", "header"]),
    st.floats(min_value=0, max_value=1),
    st.binary(min_size=1, max_size=64),
)
recipes = st.tuples(st.integers(min_value=0, max_value=99), st.lists(edits, min_size=1, max_size=4))


def corrupt(seeds: list[bytes], recipe: tuple[int, list[tuple[str, float, bytes]]]) -> bytes:
    index, steps = recipe
    data = bytearray(seeds[index % len(seeds)])
    for how, where, junk in steps:
        position = int(where * max(0, len(data) - 1))
        if how == "truncate":
            del data[position:]
        elif how == "overwrite":
            data[position : position + min(len(junk), 8)] = junk[:8]
        elif how == "insert":
            data[position:position] = junk
        else:
            at = int(where * min(40, max(0, len(data) - 1)))
            data[at : at + 4] = (junk * 4)[:4]
    return bytes(data)


# --- OIP v2 -----------------------------------------------------------------------------------


def attempt(call: Callable[[], T]) -> tuple[T | None, InvalidInput | None]:
    """(result, None), or (None, the InvalidInput raised); anything else propagates. The
    outcome is a hypothesis event (``--hypothesis-show-statistics`` shows how many parsed)."""
    try:
        result = call()
    except InvalidInput as error:
        event("refused (InvalidInput)")
        return None, error
    event("accepted")
    return result, None


def _check_request(request: protocol.InferRequest) -> None:
    assert 1 <= len(request.inputs) <= protocol.MAX_INPUTS
    for name, tensor in request.inputs.items():
        assert name == tensor.name and isinstance(name, str) and name
        assert all(isinstance(size, int) and size >= 0 for size in tensor.shape)
        assert len(tensor.values) == math.prod(tensor.shape)
        if tensor.datatype == "BYTES":
            assert len(tensor.values) <= MAX_ITEMS
            assert all(isinstance(v, str | bytes) for v in tensor.values)
        else:
            assert all(isinstance(v, int | float) for v in tensor.values)


def _parse(body: bytes, header_length: int | None = None) -> None:
    request, error = attempt(
        lambda: protocol.parse_infer_request(body, header_length=header_length, max_items=MAX_ITEMS)
    )
    if error is not None:
        assert error.message  # says what is wrong
    else:
        assert request is not None
        _check_request(request)


@BOUNDED
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_are_an_infer_request_or_bad_input(body: bytes) -> None:
    _parse(body)


@BOUNDED
@given(document=json_values)
def test_arbitrary_json_is_an_infer_request_or_bad_input(document: Any) -> None:
    _parse(orjson.dumps(document))


@settings(BOUNDED, max_examples=300)
@given(document=infer_documents())
def test_request_shaped_json_is_an_infer_request_or_bad_input(document: dict[str, Any]) -> None:
    _parse(orjson.dumps(document))


@BOUNDED
@given(
    document=infer_documents(),
    binary=st.binary(max_size=64),
    header_length=st.none() | st.integers(min_value=-5, max_value=400),
)
def test_binary_tensor_bodies_are_a_request_or_bad_input(
    document: dict[str, Any], binary: bytes, header_length: int | None
) -> None:
    head = orjson.dumps(document)
    _parse(head + binary, header_length if header_length is not None else len(head))


# --- OpenAI embeddings ------------------------------------------------------------------------


@settings(BOUNDED, max_examples=200)
@given(document=embedding_documents | json_values)
def test_embedding_requests_parse_or_are_bad_input(document: Any) -> None:
    request, error = attempt(
        lambda: protocol.parse_embeddings_request(
            orjson.dumps(document), max_items=MAX_ITEMS, max_text_chars=64
        )
    )
    if error is not None:
        assert error.message
    else:
        assert request is not None
        assert 1 <= len(request.items) <= MAX_ITEMS
        for item in request.items:
            if item.kind == "text":
                assert isinstance(item.value, str) and 0 < len(item.value) <= 64
            else:
                assert item.kind == "image" and isinstance(item.value, bytes) and item.value
        assert request.encoding_format in ("float", "base64")


# --- media ------------------------------------------------------------------------------------


@BOUNDED
@given(
    value=st.text(max_size=60)
    | st.binary(max_size=60)
    | st.builds(lambda b: base64.b64encode(b).decode(), st.binary(max_size=40))
    | st.builds(lambda b: "data:image/png;base64," + base64.encodebytes(b).decode(), st.binary())
)
def test_base64_decodes_or_is_bad_input(value: str | bytes) -> None:
    data, error = attempt(lambda: decode_base64(value, what="image[0]"))
    if error is not None:
        assert "image[0]" in error.message
    else:
        assert isinstance(data, bytes) and data


def _decode_image(data: bytes) -> None:
    image, error = attempt(lambda: decode_image(data, what="image[0]", max_pixels=MAX_PIXELS))
    if error is not None:
        assert "image[0]" in error.message
    else:
        assert image is not None
        width, height = image.size
        assert image.mode == "RGB"
        assert 0 < width * height <= MAX_PIXELS
        assert max(width, height) <= MAX_ASPECT_RATIO * min(width, height)


@BOUNDED
@given(data=st.binary(min_size=1, max_size=300))
def test_arbitrary_bytes_are_an_image_or_bad_input(data: bytes) -> None:
    _decode_image(data)


@settings(BOUNDED, max_examples=400)
@given(recipe=recipes)
def test_corrupted_images_decode_or_are_bad_input(
    recipe: tuple[int, list[tuple[str, float, bytes]]],
) -> None:
    _decode_image(corrupt(IMAGE_SEEDS, recipe))


def _decode_audio(data: bytes) -> None:
    samples, error = attempt(
        lambda: decode_audio(data, what="audio[0]", sampling_rate=16000, max_seconds=5)
    )
    if error is not None:
        assert "audio[0]" in error.message
    else:
        assert samples is not None
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert 0 < samples.size <= 5 * 16000 + 1
        assert np.all(np.isfinite(samples))


@BOUNDED
@given(data=st.binary(min_size=1, max_size=300))
def test_arbitrary_bytes_are_audio_or_bad_input(data: bytes) -> None:
    _decode_audio(data)


@settings(BOUNDED, max_examples=300)
@given(recipe=recipes)
def test_corrupted_audio_decodes_or_is_bad_input(
    recipe: tuple[int, list[tuple[str, float, bytes]]],
) -> None:
    _decode_audio(corrupt(AUDIO_SEEDS, recipe))


@BOUNDED
@given(
    samples=st.lists(st.floats(min_value=-1, max_value=1, width=32), min_size=1, max_size=400),
    source=st.integers(min_value=1, max_value=96000),
    target=st.integers(min_value=1, max_value=96000),
)
def test_resampling_keeps_length_ratio_and_finite_values(
    samples: list[float], source: int, target: int
) -> None:
    out = resample(np.array(samples, dtype=np.float32), source_rate=source, target_rate=target)
    expected = len(samples) if source == target else max(1, round(len(samples) * target / source))
    assert out.shape == (expected,)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
