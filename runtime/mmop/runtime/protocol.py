"""Wire formats, transport-neutral: Open Inference Protocol v2 and OpenAI embeddings.

Request bodies are parsed with orjson from raw bytes and checked field by field (no pydantic
model of megabyte-sized base64 strings). Before parsing, the raw bytes are counted: a body with
more JSON values or containers than any valid request needs is refused, because a 2.9 MB
``{"inputs":[[],[],...]}`` becomes some 70 MB of Python objects. After parsing, the structure
is validated exactly, so nesting deeper than a tensor's shape is refused; orjson itself refuses
documents nested over 1024 levels.
The OIP binary tensor extension (``Inference-Header-Content-Length``) is accepted on input.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

from mmop.runtime.errors import InvalidInput, detail, echo

Scalar = str | int | float | bool
Value = str | bytes  # one element of a BYTES tensor: str from JSON, bytes from binary data

DATATYPES: Final = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
MAX_INPUTS: Final = 16
MAX_RANK: Final = 4
MAX_NAME_CHARS: Final = 128
MAX_ID_CHARS: Final = 256
MAX_PARAMETERS: Final = 64
# Numeric tensors are parsed for completeness; none of the tasks takes a large one. As Python
# numbers each element costs some 32 bytes, whatever its size on the wire.
MAX_NUMERIC_ELEMENTS: Final = 65_536
# The most JSON values (of any kind) and arrays/objects a request body may hold: a numeric tensor
# at its limit plus room for names, shapes and parameters. Each value or container is at least
# some 30 to 60 bytes of Python object, so these bound the parsed document to a few MB.
MAX_JSON_VALUES: Final = MAX_NUMERIC_ELEMENTS + 16_384
MAX_JSON_CONTAINERS: Final = 4_096
# A JSON string (escapes included): the pre-scan takes brackets and commas in strings out.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NUMERIC_TYPES: Final = (int, float)


@dataclass(frozen=True, slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]  # flattened row-major; Value items for BYTES
    parameters: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: Mapping[str, InputTensor]
    outputs: tuple[str, ...] | None  # None: every output the task produces
    parameters: Mapping[str, Scalar]


@dataclass(frozen=True, slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any] | list[str]


@dataclass(frozen=True, slots=True)
class EmbeddingItem:
    kind: str  # "image" or "text"
    value: str | bytes  # text, or the image file's bytes


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    items: list[EmbeddingItem]
    encoding_format: str  # "float" or "base64"
    dimensions: int | None


# --- OIP v2 request -------------------------------------------------------------------------


def parse_infer_request(
    body: bytes, *, header_length: int | None = None, max_items: int
) -> InferRequest:
    """Parse and validate an OIP v2 infer request body.

    ``header_length`` comes from the ``Inference-Header-Content-Length`` header: the JSON part
    is then followed by binary tensor data. ``max_items`` bounds the elements of a BYTES input.
    """
    binary = b""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length}, but the body has "
                f"{len(body)} bytes"
            )
        body, binary = body[:header_length], body[header_length:]
    document = loads_object(body)
    request_id = document.get("id")
    if request_id is not None and not (
        isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS
    ):
        raise InvalidInput(f"'id' must be a string of at most {MAX_ID_CHARS} characters")
    parameters = _parameters(document.get("parameters"), where="'parameters'")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    if len(raw_inputs) > MAX_INPUTS:
        raise InvalidInput(f"'inputs' has {len(raw_inputs)} tensors; at most {MAX_INPUTS}")
    inputs: dict[str, InputTensor] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        tensor, offset = _input_tensor(
            raw, position=position, binary=binary, offset=offset, max_items=max_items
        )
        if tensor.name in inputs:
            raise InvalidInput(f"input {echo(tensor.name)} appears twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(document.get("outputs")),
        parameters=parameters,
    )


def loads_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object from raw bytes."""
    if not body:
        raise InvalidInput("the request body is empty; a JSON object is expected")
    check_json_size(body)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {detail(exc)}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"the request body must be a JSON object, not {_json_type(document)}")
    return document


_OPEN_ARRAY, _OPEN_OBJECT, _COMMA = b"[{,"
_COUNT_CHUNK: Final = 1 << 20  # bytes counted at a time by check_json_size


def check_json_size(body: bytes) -> None:
    """Refuse a body holding more JSON values or containers than a request needs, before parsing.

    Counting ``[``, ``{`` and ``,`` (numpy, vectorised and without the GIL) over-counts only
    those inside strings; only a body over a limit by that count is counted again without what
    its strings hold, string by string, without copying (each string is a value too, so that
    loop stops after ``MAX_JSON_VALUES`` strings).
    """
    containers = commas = 0
    view = np.frombuffer(body, dtype=np.uint8)
    for start in range(0, len(view), _COUNT_CHUNK):  # comparison temporaries stay small
        chunk = view[start : start + _COUNT_CHUNK]
        containers += int(np.count_nonzero(chunk == _OPEN_ARRAY))
        containers += int(np.count_nonzero(chunk == _OPEN_OBJECT))
        commas += int(np.count_nonzero(chunk == _COMMA))
    if containers <= MAX_JSON_CONTAINERS and containers + commas <= MAX_JSON_VALUES:
        return
    for position, match in enumerate(_JSON_STRING.finditer(body)):
        if position >= MAX_JSON_VALUES:
            raise InvalidInput(
                f"the request body holds over {MAX_JSON_VALUES} JSON strings; at most "
                f"{MAX_JSON_VALUES} values are accepted"
            )
        start, end = match.span()
        containers -= body.count(b"[", start, end) + body.count(b"{", start, end)
        commas -= body.count(b",", start, end)
    values = containers + commas
    if containers > MAX_JSON_CONTAINERS:
        raise InvalidInput(
            f"the request body holds {containers} JSON arrays and objects; at most "
            f"{MAX_JSON_CONTAINERS} are accepted"
        )
    if values > MAX_JSON_VALUES:
        raise InvalidInput(
            f"the request body holds about {values} JSON values; at most {MAX_JSON_VALUES} are "
            "accepted"
        )


def _input_tensor(
    raw: Any, *, position: int, binary: bytes, offset: int, max_items: int
) -> tuple[InputTensor, int]:
    where = f"inputs[{position}]"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object, not {_json_type(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"{where}.name must be a non-empty string")
    where = f"input {echo(name)}"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
    shape = _shape(raw.get("shape"), where=where)
    count = math.prod(shape)
    limit = max_items if datatype == "BYTES" else MAX_NUMERIC_ELEMENTS
    if count > limit:
        raise InvalidInput(f"{where} has {count} elements; at most {limit} are accepted")
    parameters = _parameters(raw.get("parameters"), where=f"{where}.parameters")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if "data" in raw:
            raise InvalidInput(f"{where} has both 'data' and binary_data_size")
        if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
        if offset + binary_size > len(binary):
            raise InvalidInput(f"{where}: binary_data_size runs past the end of the body")
        chunk = binary[offset : offset + binary_size]
        values = _binary_values(chunk, datatype=datatype, count=count, where=where)
        offset += binary_size
    else:
        if "data" not in raw:
            raise InvalidInput(f"{where} has no 'data'")
        values = _flatten(raw["data"], shape=shape, datatype=datatype, where=where)
    if len(values) != count:
        raise InvalidInput(
            f"{where}: shape {list(shape)} needs {count} elements, but data has {len(values)}"
        )
    return InputTensor(name, datatype, shape, values, parameters), offset


def _shape(raw: Any, *, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_RANK:
        raise InvalidInput(f"{where}: shape must be a list of 1 to {MAX_RANK} sizes")
    for size in raw:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: shape must hold non-negative integers, got {echo(raw)}")
    return tuple(raw)


def _flatten(data: Any, *, shape: tuple[int, ...], datatype: str, where: str) -> list[Any]:
    """Accept flat row-major data or data nested exactly like the shape."""
    if not isinstance(data, list):
        if len(shape) == 1 and shape[0] == 1 and not isinstance(data, dict):
            data = [data]  # a lone scalar for a one-element tensor
        else:
            raise InvalidInput(f"{where}: data must be a list, not {_json_type(data)}")
    flat: list[Any]
    if all(not isinstance(item, list) for item in data):
        flat = data
    else:
        flat = []
        _collect(data, depth=0, shape=shape, out=flat, where=where)
    check = _is_bytes_element if datatype == "BYTES" else _is_number_element
    for item in flat:
        if not check(item):
            expected = "strings" if datatype == "BYTES" else "numbers"
            raise InvalidInput(
                f"{where}: {datatype} data must hold {expected}, found {_json_type(item)}"
            )
    return flat


def _collect(
    data: list[Any], *, depth: int, shape: tuple[int, ...], out: list[Any], where: str
) -> None:
    if depth >= len(shape) or len(data) != shape[depth]:
        raise InvalidInput(f"{where}: nested data does not match shape {list(shape)}")
    last = depth == len(shape) - 1
    for item in data:
        if isinstance(item, list):
            if last:
                raise InvalidInput(f"{where}: data is nested deeper than its shape {list(shape)}")
            _collect(item, depth=depth + 1, shape=shape, out=out, where=where)
        elif not last:
            raise InvalidInput(f"{where}: nested data does not match shape {list(shape)}")
        else:
            out.append(item)


def _is_bytes_element(item: Any) -> bool:
    return isinstance(item, str)


def _is_number_element(item: Any) -> bool:
    return isinstance(item, _NUMERIC_TYPES)  # bool is an int: fine for BOOL tensors


def _binary_values(chunk: bytes, *, datatype: str, count: int, where: str) -> list[Any]:
    if datatype != "BYTES":
        # Numeric binary tensors: decode to Python numbers like their JSON form.
        dtype = _NUMPY_TYPES[datatype]
        if len(chunk) != count * dtype.itemsize:
            raise InvalidInput(f"{where}: binary data has {len(chunk)} bytes for {count} values")
        return np.frombuffer(chunk, dtype=dtype).tolist()  # type: ignore[no-any-return]
    values: list[Any] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise InvalidInput(f"{where}: binary BYTES data ends inside a length prefix")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise InvalidInput(f"{where}: binary BYTES element runs past its data")
        values.append(chunk[position : position + length])
        position += length
        if len(values) > count:
            break
    return values


_NUMPY_TYPES: Final = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def _parameters(raw: Any, *, where: str) -> dict[str, Scalar]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object, not {_json_type(raw)}")
    if len(raw) > MAX_PARAMETERS:
        raise InvalidInput(f"{where} has {len(raw)} entries; at most {MAX_PARAMETERS}")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(
                f"{where}[{echo(key)}] must be a string, number or boolean, not {_json_type(value)}"
            )
    return raw


def _requested_outputs(raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput(f"'outputs' must be a list, not {_json_type(raw)}")
    if len(raw) > MAX_INPUTS:
        raise InvalidInput(f"'outputs' has {len(raw)} entries; at most {MAX_INPUTS}")
    names: list[str] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{position}] must be an object with a string 'name'")
        _parameters(item.get("parameters"), where=f"outputs[{position}].parameters")
        names.append(item["name"])
    return tuple(names) if names else None


# --- OIP v2 response ------------------------------------------------------------------------


def infer_response(
    *, model_name: str, model_version: str, request_id: str | None, outputs: Sequence[OutputTensor]
) -> dict[str, Any]:
    """The OIP v2 response document; numpy data is serialized by orjson as is."""
    response: dict[str, Any] = {"model_name": model_name}
    if model_version:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = [
        {
            "name": output.name,
            "shape": list(output.shape),
            "datatype": output.datatype,
            "data": output.data.reshape(-1) if isinstance(output.data, np.ndarray) else output.data,
        }
        for output in outputs
    ]
    return response


def dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def raw_tensor(datatype: str, data: Any) -> bytes:
    """Flat tensor data in the OIP binary layout (``raw_*_contents`` in gRPC, binary tensor
    data over HTTP): little-endian row-major values; BYTES as 4-byte length + bytes each."""
    if datatype == "BYTES":
        items = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    if datatype not in _NUMPY_TYPES:
        raise InvalidInput(f"datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    return np.ascontiguousarray(data, dtype=_NUMPY_TYPES[datatype]).reshape(-1).tobytes()


# --- OpenAI embeddings ----------------------------------------------------------------------


def parse_embeddings_request(
    body: bytes, *, max_items: int, max_text_chars: int
) -> EmbeddingsRequest:
    """Parse ``POST /v1/embeddings``: text inputs, and images as ``data:image/...;base64,``."""
    document = loads_object(body)
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInput("'model' must be a non-empty string")
    raw = document.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'input' must be a string or a non-empty list of strings")
    if len(raw) > max_items:
        raise InvalidInput(f"'input' has {len(raw)} items; at most {max_items} are accepted")
    items: list[EmbeddingItem] = []
    for position, value in enumerate(raw):
        if isinstance(value, int | list):
            raise InvalidInput(
                "token-id inputs are not supported; send text or data:image/...;base64, URLs"
            )
        if not isinstance(value, str):
            raise InvalidInput(f"input[{position}] must be a string, not {_json_type(value)}")
        if not value:
            raise InvalidInput(f"input[{position}] is an empty string")
        if value.startswith("data:"):
            items.append(_image_item(value, position=position))
        else:
            if len(value) > max_text_chars:
                raise InvalidInput(
                    f"input[{position}] has {len(value)} characters; at most {max_text_chars}"
                )
            items.append(EmbeddingItem("text", value))
    encoding = document.get("encoding_format", "float")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise InvalidInput("'encoding_format' must be 'float' or 'base64'")
    dimensions = _integral(document.get("dimensions"))
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidInput("'dimensions' must be a positive integer")
    user = document.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidInput("'user' must be a string")
    return EmbeddingsRequest(model, items, encoding, dimensions)


def _image_item(value: str, *, position: int) -> EmbeddingItem:
    from mmop.runtime.media import decode_base64, split_data_url

    media_type, _ = split_data_url(value)
    if media_type is None and not value.lower().startswith("data:;base64,"):
        raise InvalidInput(
            f"input[{position}] is a data URL but not base64 (data:image/png;base64,... expected)"
        )
    if media_type is not None and not media_type.startswith("image/"):
        raise InvalidInput(
            f"input[{position}] has media type {media_type}; only image/* is embedded"
        )
    return EmbeddingItem("image", decode_base64(value, what=f"input[{position}]"))


def embeddings_response(
    *,
    model_name: str,
    vectors: Sequence[np.ndarray[Any, Any]],
    encoding_format: str,
    prompt_tokens: int,
) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        values = np.ascontiguousarray(vector, dtype="<f4")
        embedding: Any = (
            base64.b64encode(values.tobytes()).decode("ascii")
            if encoding_format == "base64"
            else values
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model_name,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _integral(value: Any) -> Any:
    """JSON has one number type: 16.0 is an integer as far as JSON Schema goes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
