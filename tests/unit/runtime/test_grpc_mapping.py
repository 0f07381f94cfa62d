"""server/grpc_app.py without a server: protobuf <-> the data plane's wire format, status codes."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest

from mmop.runtime import protocol
from mmop.runtime.errors import (
    BodyTimeout,
    Draining,
    FaultInjected,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    QueueFull,
    QueueTimeout,
    RuntimeFailure,
    Unauthorized,
)
from mmop.runtime.server import grpc_app
from mmop.runtime.server.errors import STATUS as HTTP_STATUS
from mmop.runtime.server.oip import oip_v2_pb2 as pb


def _parse(request: pb.ModelInferRequest) -> protocol.InferRequest:
    body, header_length = grpc_app.infer_body(request)
    return protocol.parse_infer_request(body, header_length=header_length, max_items=64)


def _length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


class TestInferBody:
    def test_raw_contents_become_binary_tensor_data(self) -> None:
        request = pb.ModelInferRequest(model_name="clip", id="r1")
        request.inputs.add(name="image", datatype="BYTES", shape=[2])
        request.inputs.add(name="text", datatype="BYTES", shape=[1])
        request.raw_input_contents.extend(
            [_length_prefixed(b"\x89PNG-a", b"\x89PNG-b"), _length_prefixed(b"a chat")]
        )
        request.parameters["normalize"].bool_param = False
        request.parameters["max_new_tokens"].int64_param = 4
        request.parameters["hypothesis_template"].string_param = "a photo of {}"
        request.parameters["temperature"].double_param = 0.5
        request.outputs.add(name="text_embeds")
        parsed = _parse(request)
        assert parsed.id == "r1"
        assert parsed.inputs["image"].values == [b"\x89PNG-a", b"\x89PNG-b"]
        assert parsed.inputs["image"].shape == (2,)
        assert parsed.inputs["text"].values == [b"a chat"]
        assert parsed.outputs == ("text_embeds",)
        assert parsed.parameters == {
            "normalize": False,
            "max_new_tokens": 4,
            "hypothesis_template": "a photo of {}",
            "temperature": 0.5,
        }

    def test_typed_contents(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        text = request.inputs.add(name="labels", datatype="BYTES", shape=[2])
        text.contents.bytes_contents.extend([b"a cat", b"a dog"])
        numbers = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
        numbers.contents.fp32_contents.extend([1.0, 2.5, -3.0])
        ints = request.inputs.add(name="n", datatype="INT64", shape=[2])
        ints.contents.int64_contents.extend([7, -9])
        parsed = _parse(request)
        assert parsed.id is None
        assert parsed.outputs is None
        assert parsed.inputs["labels"].values == [b"a cat", b"a dog"]
        assert parsed.inputs["x"].values == [1.0, 2.5, -3.0]
        assert parsed.inputs["x"].shape == (1, 3)
        assert parsed.inputs["n"].values == [7, -9]

    def test_shape_and_data_must_agree(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        text = request.inputs.add(name="text", datatype="BYTES", shape=[3])
        text.contents.bytes_contents.extend([b"only one"])
        with pytest.raises(InvalidInput, match="needs 3 elements"):
            _parse(request)

    def test_raw_contents_count_must_match_inputs(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="a", datatype="BYTES", shape=[1])
        request.inputs.add(name="b", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(_length_prefixed(b"x"))
        with pytest.raises(InvalidInput, match="1 entries for 2 inputs"):
            grpc_app.infer_body(request)

    def test_fp16_needs_raw_contents_and_unknown_datatypes_are_refused(self) -> None:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="h", datatype="FP16", shape=[1])
        with pytest.raises(InvalidInput, match="raw_input_contents"):
            grpc_app.infer_body(request)
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="q", datatype="COMPLEX", shape=[1])
        with pytest.raises(InvalidInput, match="datatype must be one of"):
            _parse(request)

    def test_no_inputs(self) -> None:
        with pytest.raises(InvalidInput, match="non-empty list"):
            _parse(pb.ModelInferRequest(model_name="m"))


def test_infer_response_uses_raw_contents() -> None:
    document = protocol.infer_response(
        model_name="clip",
        model_version="v2",
        request_id="r1",
        outputs=[
            protocol.OutputTensor(
                "scores", "FP32", (1, 2), np.array([[0.25, 0.75]], dtype=np.float32)
            ),
            protocol.OutputTensor("label", "BYTES", (1,), ["a dög"]),
        ],
    )
    response = grpc_app.infer_response(document)
    assert (response.model_name, response.model_version, response.id) == ("clip", "v2", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("scores", "FP32", [1, 2]),
        ("label", "BYTES", [1]),
    ]
    scores, label = response.raw_output_contents
    np.testing.assert_array_equal(np.frombuffer(scores, dtype="<f4"), [0.25, 0.75])
    assert label == _length_prefixed("a dög".encode())


@pytest.mark.parametrize(
    ("error", "code", "http"),
    [
        (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT, 400),
        (Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED, 401),
        (ModelNotFound("x"), grpc.StatusCode.NOT_FOUND, 404),
        (PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
        (QueueFull("x"), grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (NotReady("x"), grpc.StatusCode.UNAVAILABLE, 503),
        (Draining("x"), grpc.StatusCode.UNAVAILABLE, 503),
        (QueueTimeout("x"), grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (BodyTimeout("x"), grpc.StatusCode.DEADLINE_EXCEEDED, 408),
        (InferenceFailed("x"), grpc.StatusCode.INTERNAL, 500),
        (FaultInjected("x"), grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_status_codes(error: RuntimeFailure, code: grpc.StatusCode, http: int) -> None:
    assert grpc_app.grpc_status_of(error) == code
    assert HTTP_STATUS[type(error)] == http  # the metrics' code label of the same answer


def test_every_domain_error_has_a_grpc_status() -> None:
    assert set(grpc_app.STATUS) == set(HTTP_STATUS)


@pytest.mark.parametrize(
    ("host", "address"),
    [("0.0.0.0", "0.0.0.0:8081"), ("127.0.0.5", "127.0.0.5:8081"), ("::", "[::]:8081")],
)
def test_listen_address(host: str, address: str) -> None:
    assert grpc_app.listen_address(host, 8081) == address
