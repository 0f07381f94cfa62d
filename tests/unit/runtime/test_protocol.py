"""OIP v2 and OpenAI embeddings: parsing, validation messages, response documents."""

from __future__ import annotations

import base64
import struct
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest

from mmop.runtime import contract
from mmop.runtime.errors import InvalidInput
from mmop.runtime.protocol import (
    OutputTensor,
    embeddings_response,
    infer_response,
    parse_embeddings_request,
    parse_infer_request,
)


def _body(document: Any) -> bytes:
    return orjson.dumps(document)


def _tensor(name: str, data: list[Any], *, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(data)], "data": data}


def _parse(document: Any, **kwargs: Any) -> Any:
    return parse_infer_request(_body(document), max_items=kwargs.pop("max_items", 8), **kwargs)


class TestInferRequest:
    def test_flat_request(self) -> None:
        request = _parse(
            {"id": "r1", "inputs": [_tensor("text", ["a", "b"])], "parameters": {"k": 1}}
        )
        assert request.id == "r1"
        assert request.inputs["text"].values == ["a", "b"]
        assert request.inputs["text"].shape == (2,)
        assert request.parameters == {"k": 1}
        assert request.outputs is None

    def test_nested_data_matching_the_shape_is_flattened(self) -> None:
        request = _parse({"inputs": [_tensor("text", [["a"], ["b"]], shape=[2, 1])]})
        assert request.inputs["text"].values == ["a", "b"]

    def test_smoke_test_request_of_every_task_parses(self) -> None:
        for task in contract.TASKS:
            request = _parse(contract.smoke_test_request(task))
            assert request.id == "mmop-smoke-test"

    def test_requested_outputs(self) -> None:
        request = _parse(
            {"inputs": [_tensor("t", ["a"])], "outputs": [{"name": "x", "parameters": {}}]}
        )
        assert request.outputs == ("x",)

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ([1, 2], "must be a JSON object, not a list"),
            ({"inputs": []}, "'inputs' must be a non-empty list"),
            ({"inputs": "x"}, "'inputs' must be a non-empty list"),
            ({"inputs": [5]}, r"inputs\[0\] must be an object"),
            ({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "name"),
            ({"inputs": [{**_tensor("t", ["a"]), "datatype": "STRING"}]}, "datatype must be"),
            ({"inputs": [{**_tensor("t", ["a"]), "shape": [-1]}]}, "non-negative integers"),
            ({"inputs": [{**_tensor("t", ["a"]), "shape": "1"}]}, "shape must be a list"),
            ({"inputs": [{**_tensor("t", ["a"]), "shape": [1, 1, 1, 1, 1]}]}, "1 to 4 sizes"),
            (
                {"inputs": [_tensor("t", ["a", "b"], shape=[3])]},
                r"needs 3 elements, but data has 2",
            ),
            ({"inputs": [_tensor("t", [1, 2])]}, "BYTES data must hold strings, found a number"),
            ({"inputs": [_tensor("t", [{"a": 1}])]}, "must hold strings, found an object"),
            ({"inputs": [{**_tensor("t", ["a", "b"]), "data": None}]}, "data must be a list"),
            (
                {"inputs": [{k: v for k, v in _tensor("t", ["a"]).items() if k != "data"}]},
                "no 'data'",
            ),
            ({"inputs": [_tensor("t", ["a"]), _tensor("t", ["b"])]}, "appears twice"),
            ({"inputs": [_tensor("t", ["a"])], "id": 5}, "'id' must be a string"),
            ({"inputs": [_tensor("t", ["a"])], "parameters": []}, "'parameters' must be an object"),
            ({"inputs": [_tensor("t", ["a"])], "parameters": {"p": {"x": 1}}}, "string, number"),
            ({"inputs": [_tensor("t", ["a"])], "outputs": {}}, "'outputs' must be a list"),
            ({"inputs": [_tensor("t", ["a"])], "outputs": [{"x": 1}]}, "string 'name'"),
        ],
    )
    def test_malformed_requests_say_what_is_wrong(self, document: Any, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            _parse(document)

    def test_too_many_elements(self) -> None:
        with pytest.raises(InvalidInput, match="at most 8"):
            _parse({"inputs": [_tensor("t", ["a"] * 9)]})

    def test_data_nested_deeper_than_its_shape(self) -> None:
        with pytest.raises(InvalidInput, match="deeper than its shape"):
            _parse({"inputs": [_tensor("t", [["a"]], shape=[1])]})
        with pytest.raises(InvalidInput, match="does not match shape"):
            _parse({"inputs": [_tensor("t", [["a", "b"]], shape=[2, 1])]})

    def test_pathologically_nested_json_is_refused(self) -> None:
        deep = b"[" * 100_000 + b"]" * 100_000
        with pytest.raises(InvalidInput, match="100000 JSON arrays and objects; at most 4096"):
            parse_infer_request(deep, max_items=8)
        deep = b"[" * 2_000 + b"]" * 2_000  # within the count, over orjson's depth
        with pytest.raises(InvalidInput, match="not valid JSON"):
            parse_infer_request(deep, max_items=8)
        nested: Any = "a"
        for _ in range(200):
            nested = [nested]
        with pytest.raises(InvalidInput, match="shape"):
            _parse({"inputs": [_tensor("t", nested, shape=[1])]})

    @pytest.mark.parametrize(
        ("body", "message"),
        [(b"", "empty"), (b"{", "not valid JSON"), (b"\xff\xfe", "not valid JSON")],
    )
    def test_not_json(self, body: bytes, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            parse_infer_request(body, max_items=8)


def _binary_request(values: list[bytes], *, declared: int | None = None) -> tuple[bytes, int]:
    blob = b"".join(struct.pack("<I", len(v)) + v for v in values)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [len(values)],
                    "parameters": {
                        "binary_data_size": declared if declared is not None else len(blob)
                    },
                }
            ]
        }
    )
    return header + blob, len(header)


class TestBinaryExtension:
    def test_bytes_elements_are_raw(self) -> None:
        body, length = _binary_request([b"\x89PNG", b"xyz"])
        request = parse_infer_request(body, header_length=length, max_items=8)
        assert request.inputs["image"].values == [b"\x89PNG", b"xyz"]

    def test_header_length_past_the_body(self) -> None:
        body, _ = _binary_request([b"a"])
        with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
            parse_infer_request(body, header_length=len(body) + 1, max_items=8)

    def test_binary_size_past_the_body(self) -> None:
        body, length = _binary_request([b"abc"], declared=100)
        with pytest.raises(InvalidInput, match="runs past the end"):
            parse_infer_request(body, header_length=length, max_items=8)

    def test_unclaimed_bytes(self) -> None:
        body, length = _binary_request([b"abc"])
        with pytest.raises(InvalidInput, match="no input claims"):
            parse_infer_request(body + b"extra", header_length=length, max_items=8)

    def test_truncated_element(self) -> None:
        blob = struct.pack("<I", 10) + b"abc"
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ]
            }
        )
        with pytest.raises(InvalidInput, match="runs past its data"):
            parse_infer_request(header + blob, header_length=len(header), max_items=8)


class TestEmbeddingsRequest:
    def _parse(self, document: Any) -> Any:
        return parse_embeddings_request(_body(document), max_items=4, max_text_chars=50)

    def test_text_and_image_inputs(self) -> None:
        png = contract.tiny_png()
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        request = self._parse({"model": "m", "input": ["a cat", url], "encoding_format": "base64"})
        assert [item.kind for item in request.items] == ["text", "image"]
        assert request.items[1].value == png
        assert request.encoding_format == "base64"

    def test_single_string_and_defaults(self) -> None:
        request = self._parse({"model": "m", "input": "hello"})
        assert [item.value for item in request.items] == ["hello"]
        assert request.encoding_format == "float"
        assert request.dimensions is None

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ({"input": "x"}, "'model' must be"),
            ({"model": "m"}, "'input' must be"),
            ({"model": "m", "input": []}, "'input' must be"),
            ({"model": "m", "input": [1, 2]}, "token-id inputs are not supported"),
            ({"model": "m", "input": [[1, 2]]}, "token-id inputs are not supported"),
            ({"model": "m", "input": [None]}, r"input\[0\] must be a string"),
            ({"model": "m", "input": [""]}, "empty string"),
            ({"model": "m", "input": ["x" * 51]}, "at most 50"),
            ({"model": "m", "input": ["a"] * 5}, "at most 4"),
            ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
            ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
            ({"model": "m", "input": ["data:text/plain;base64,aGk="]}, "only image"),
            ({"model": "m", "input": ["data:image/png,rawdata"]}, "not base64"),
            ({"model": "m", "input": ["data:image/png;base64,@@@"]}, "not valid base64"),
        ],
    )
    def test_malformed(self, document: Any, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            self._parse(document)


def test_infer_response_document() -> None:
    scores = np.arange(6, dtype=np.float32).reshape(2, 3)
    document = infer_response(
        model_name="m",
        model_version="v2",
        request_id="abc",
        outputs=[
            OutputTensor("scores", "FP32", (2, 3), scores),
            OutputTensor("label", "BYTES", (2,), ["x", "y"]),
        ],
    )
    decoded = orjson.loads(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))
    assert decoded == {
        "model_name": "m",
        "model_version": "v2",
        "id": "abc",
        "outputs": [
            {"name": "scores", "shape": [2, 3], "datatype": "FP32", "data": [0, 1, 2, 3, 4, 5]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]},
        ],
    }


def test_embeddings_response_base64_is_little_endian_float32() -> None:
    vector = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    document = embeddings_response(
        model_name="m", vectors=[vector], encoding_format="base64", prompt_tokens=3
    )
    raw = base64.b64decode(document["data"][0]["embedding"])
    assert np.frombuffer(raw, dtype="<f4").tolist() == [0.5, -1.25, 3.0]
    assert document["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert document["object"] == "list"


class TestJsonStructureBound:
    """The structure of a body is counted on its raw bytes before orjson builds objects."""

    @staticmethod
    def _peak(body: bytes) -> int:
        tracemalloc.start()
        try:
            with pytest.raises(InvalidInput):
                parse_infer_request(body, max_items=8)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak

    @pytest.mark.parametrize(
        ("element", "message"),
        [
            (b"[]", "JSON arrays and objects; at most 4096"),
            (b"{}", "JSON arrays and objects; at most 4096"),
            (b"0.5", "JSON values; at most 81920"),
            (b'"ab"', "JSON strings; at most 81920 values"),
        ],
    )
    def test_a_bomb_of_small_values_is_refused_before_parsing(
        self, element: bytes, message: str
    ) -> None:
        # 2.9 MB of "[]," became ~70 MB of Python lists (the figure) before any check.
        count = 2_900_000 // (len(element) + 1)
        body = b'{"inputs":[' + b",".join([element] * count) + b"]}"
        with pytest.raises(InvalidInput, match=message):
            parse_infer_request(body, max_items=8)
        # The recount with strings removed costs about two copies of the body; parsing it
        # cost over 20 times the body.
        assert self._peak(body) < 3 * len(body)

    def test_the_count_spans_the_whole_body_chunk_by_chunk(self) -> None:
        # 3 MB: the pre-count reads it in 1 MiB chunks; every comma and bracket counts once
        count = 1_500_000
        body = b'{"inputs":[' + b",".join([b"1"] * count) + b"]}"
        with pytest.raises(InvalidInput, match=f"about {count + 1} JSON values"):
            parse_infer_request(body, max_items=8)

    def test_commas_and_brackets_inside_strings_do_not_count(self) -> None:
        text = "[{,}]" * 4000  # 20,000 structural characters, all inside strings
        request = _parse(
            {"inputs": [_tensor("text", [text] * 8)], "parameters": {"q": 'a\\"[,' * 100}}
        )
        assert request.inputs["text"].values == [text] * 8

    def test_a_numeric_tensor_at_its_limit_is_parsed(self) -> None:
        count = 65_536
        request = _parse(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [count], "data": [0.5] * count}]}
        )
        assert len(request.inputs["x"].values) == count
        with pytest.raises(InvalidInput, match="65537 elements; at most 65536"):
            _parse(
                {"inputs": [{"name": "x", "datatype": "FP32", "shape": [count + 1], "data": [0.5]}]}
            )


class TestEchoedStringsAreCapped:
    """Client strings come back in messages cut to a few dozen characters."""

    HUGE = "k" * 1_000_000

    @pytest.mark.parametrize(
        "document",
        [
            {"inputs": [_tensor("t", ["a"])], "parameters": {HUGE: [1]}},
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}] * 2},
            {"inputs": [_tensor("t", ["a"]), {**_tensor("t", ["a"]), "parameters": {HUGE: {}}}]},
            {"inputs": [{"name": "t", "datatype": "BYTES", "shape": [-1, 2], "data": []}]},
            {"inputs": [_tensor("t", ["a"])], "outputs": [{"name": "x"}] * 17},
        ],
    )
    def test_parser_messages_stay_short(self, document: Any) -> None:
        with pytest.raises(InvalidInput) as caught:
            _parse(document)
        assert len(caught.value.message) <= 200, caught.value.message[:300]

    def test_a_huge_parameter_key_is_cut_with_its_size(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            _parse({"inputs": [_tensor("t", ["a"])], "parameters": {self.HUGE: [1]}})
        assert "(1000000 characters)" in caught.value.message
        assert "k" * 65 not in caught.value.message
