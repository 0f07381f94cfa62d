"""OpenAPI fragments for the routes whose bodies are parsed by hand (orjson, not pydantic).

They document the wire format for clients and for schema-based fuzzing (schemathesis).
"""

from __future__ import annotations

from typing import Any, Final

from mmop.runtime.protocol import DATATYPES, MAX_INPUTS, MAX_RANK

_SCALAR: Final = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_PARAMETERS: Final = {"type": "object", "additionalProperties": _SCALAR}
ERROR: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}

INFER_REQUEST: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_INPUTS,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "shape": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_RANK,
                        "items": {"type": "integer", "minimum": 0},
                    },
                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                    "parameters": _PARAMETERS,
                    "data": {
                        "type": "array",
                        "description": "row-major, flat or nested like shape; BYTES elements are "
                        "strings (base64 for image and audio files)",
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
    },
}

INFER_RESPONSE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "data": {"type": "array"},
                },
            },
        },
    },
}

EMBEDDINGS_REQUEST: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "description": "texts, and images as data:image/...;base64, URLs",
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ],
        },
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
}

EMBEDDINGS_RESPONSE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "model": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"type": "string"},
                    "index": {"type": "integer"},
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string"},
                        ]
                    },
                },
            },
        },
        "usage": {
            "type": "object",
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }


def responses(ok: dict[str, Any] | None, *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses``: the 200 schema plus the JSON error codes a route can answer."""
    documented: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        documented[200] = {"description": "OK", "content": {"application/json": {"schema": ok}}}
    for code in codes:
        documented[code] = {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": ERROR}},
        }
    return documented


_DESCRIPTIONS: Final = {
    400: "bad input",
    401: "missing or wrong bearer token",
    404: "unknown model",
    408: "the request body arrived too slowly",
    413: "request body too large",
    429: "queue full (see Retry-After)",
    500: "inference failed",
    503: "not ready or draining",
    504: "queue timeout",
}
