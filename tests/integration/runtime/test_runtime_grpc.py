"""OIP v2 over gRPC with the real ``tritonclient.grpc`` client against real runtime processes:
the task families, the answers HTTP gives for the same input, status codes, auth, limits and the
metrics the operator's analysis reads."""

from __future__ import annotations

import base64
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from mmop.runtime import contract
from tests.support.runtime import AUTH_TOKEN, SMOKE_TOKEN, ModelStore, RuntimeServer, metric_value
from tests.support.wait import wait_until

AUTH = {"authorization": f"Bearer {AUTH_TOKEN}"}


def _client(server: RuntimeServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.grpc_url)


def _bytes_input(name: str, values: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=np.object_))
    return tensor


def _image(count: int = 1, image: bytes | None = None) -> triton.InferInput:
    return _bytes_input("image", [image or contract.tiny_png()] * count)


def _status(error: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(error.value.status())


def _http_infer(server: RuntimeServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.url + contract.infer_path(server.name), json=body, timeout=60)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in outputs}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json_bytes(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


class TestHealthAndMetadata:
    def test_server_and_model(self, embedding_server: RuntimeServer) -> None:
        client = _client(embedding_server)
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(embedding_server.name)
        with pytest.raises(InferenceServerException) as error:
            client.is_model_ready(embedding_server.name, model_version="v9")
        assert _status(error) == "StatusCode.NOT_FOUND"
        server = client.get_server_metadata()
        assert server.name == "mmop-runtime"
        assert list(server.extensions) == ["binary_tensor_data"]
        metadata = client.get_model_metadata(embedding_server.name)
        http = httpx.get(embedding_server.url + contract.model_path(embedding_server.name)).json()
        assert metadata.name == embedding_server.name
        assert metadata.platform == http["platform"]
        assert [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs] == [
            (i["name"], i["datatype"], i["shape"]) for i in http["inputs"]
        ]
        assert [(o.name, list(o.shape)) for o in metadata.outputs] == [
            ("image_embeds", [-1, 16]),
            ("text_embeds", [-1, 16]),
        ]

    def test_unknown_model_is_not_found(self, embedding_server: RuntimeServer) -> None:
        client = _client(embedding_server)
        with pytest.raises(InferenceServerException) as error:
            client.get_model_metadata("no-such-model")
        assert _status(error) == "StatusCode.NOT_FOUND"
        assert "no-such-model" in error.value.message()


class TestTasks:
    def test_embeddings_match_http(self, embedding_server: RuntimeServer) -> None:
        client = _client(embedding_server)
        result = client.infer(
            embedding_server.name,
            [_image(), _bytes_input("text", [b"a cat", b"a dog"])],
            request_id="grpc-1",
        )
        response = result.get_response()
        assert response.id == "grpc-1"
        assert response.model_name == embedding_server.name
        image_embeds = result.as_numpy("image_embeds")
        text_embeds = result.as_numpy("text_embeds")
        assert image_embeds.dtype == np.float32
        assert image_embeds.shape == (1, 16)
        assert text_embeds.shape == (2, 16)
        http = _http_infer(
            embedding_server,
            {
                "inputs": [
                    _json_bytes("image", [_b64(contract.tiny_png())]),
                    _json_bytes("text", ["a cat", "a dog"]),
                ]
            },
        )
        np.testing.assert_allclose(image_embeds, http["image_embeds"], atol=1e-5)
        np.testing.assert_allclose(text_embeds, http["text_embeds"], atol=1e-5)

    def test_requested_outputs_and_parameters(self, embedding_server: RuntimeServer) -> None:
        client = _client(embedding_server)
        result = client.infer(
            embedding_server.name,
            [_bytes_input("text", [b"a cat"])],
            outputs=[triton.InferRequestedOutput("text_embeds")],
            parameters={"normalize": False},
        )
        assert result.as_numpy("image_embeds") is None
        raw = result.as_numpy("text_embeds")
        http = _http_infer(
            embedding_server,
            {
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a cat"]}],
                "parameters": {"normalize": False},
            },
        )
        np.testing.assert_allclose(raw, http["text_embeds"], atol=1e-5)
        assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3  # not normalised: the parameter held

    def test_zero_shot_classification(self, zero_shot_server: RuntimeServer) -> None:
        client = _client(zero_shot_server)
        labels = [b"a cat", b"a dog", b"a car"]
        result = client.infer(zero_shot_server.name, [_image(2), _bytes_input("labels", labels)])
        scores = result.as_numpy("scores")
        assert scores.shape == (2, 3)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        best = result.as_numpy("label")
        assert best.shape == (2,)
        assert [labels[i] for i in scores.argmax(axis=1)] == list(best)
        http = _http_infer(
            zero_shot_server,
            {
                "inputs": [
                    _json_bytes("image", [_b64(contract.tiny_png())] * 2),
                    _json_bytes("labels", [x.decode() for x in labels]),
                ]
            },
        )
        np.testing.assert_allclose(scores, http["scores"], atol=1e-5)

    def test_image_classification_batch(self, classification_server: RuntimeServer) -> None:
        client = _client(classification_server)
        result = client.infer(classification_server.name, [_image(3)])
        assert result.as_numpy("scores").shape[0] == 3
        assert result.as_numpy("label").shape == (3,)

    def test_typed_contents_instead_of_raw(self, embedding_server: RuntimeServer) -> None:
        """A client that fills ``contents.bytes_contents``, not raw_input_contents, is served."""
        request = service_pb2.ModelInferRequest(model_name=embedding_server.name, id="typed")
        text = request.inputs.add(name="text", datatype="BYTES", shape=[2])
        text.contents.bytes_contents.extend([b"a cat", b"a dog"])
        with grpc.insecure_channel(embedding_server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            response = stub.ModelInfer(request, timeout=60)
        assert response.id == "typed"
        (output,) = response.outputs
        assert (output.name, output.datatype) == ("text_embeds", "FP32")
        assert list(output.shape) == [2, 16]
        values = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 16)
        np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)


class TestErrors:
    def test_bad_input_is_invalid_argument(self, classification_server: RuntimeServer) -> None:
        client = _client(classification_server)
        with pytest.raises(InferenceServerException) as error:
            client.infer(classification_server.name, [_image(image=b"not an image at all")])
        assert _status(error) == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException) as error:
            client.infer(classification_server.name, [_bytes_input("audio", [b"x"])])
        assert _status(error) == "StatusCode.INVALID_ARGUMENT"
        assert "unknown input 'audio'" in error.value.message()
        with pytest.raises(InferenceServerException) as error:  # MMOP_MAX_ITEMS_PER_REQUEST=8
            client.infer(classification_server.name, [_image(9)])
        assert _status(error) == "StatusCode.INVALID_ARGUMENT"
        assert "at most 8" in error.value.message()

    def test_raw_contents_must_match_inputs(self, embedding_server: RuntimeServer) -> None:
        request = service_pb2.ModelInferRequest(model_name=embedding_server.name)
        request.inputs.add(name="text", datatype="BYTES", shape=[1])
        request.inputs.add(name="image", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(b"\x05\x00\x00\x00a cat")
        with grpc.insecure_channel(embedding_server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(request, timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents has 1 entries for 2 inputs" in error.value.details()

    def test_unknown_model_and_version(self, classification_server: RuntimeServer) -> None:
        client = _client(classification_server)
        with pytest.raises(InferenceServerException) as error:
            client.infer("no-such-model", [_image()])
        assert _status(error) == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as error:
            client.infer(classification_server.name, [_image()], model_version="v9")
        assert _status(error) == "StatusCode.NOT_FOUND"

    def test_message_over_the_body_limit(self, classification_server: RuntimeServer) -> None:
        """MMOP_MAX_REQUEST_BYTES (256 KiB here) bounds gRPC messages as it bounds HTTP bodies."""
        client = _client(classification_server)
        with pytest.raises(InferenceServerException) as error:
            client.infer(classification_server.name, [_image(image=b"\x89PNG" + b"0" * 300_000)])
        assert _status(error) == "StatusCode.RESOURCE_EXHAUSTED"

    def test_queue_timeout_is_deadline_exceeded(self, slow_server: RuntimeServer) -> None:
        client = _client(slow_server)
        with pytest.raises(InferenceServerException) as error:
            client.infer(slow_server.name, [_image()])
        assert _status(error) == "StatusCode.DEADLINE_EXCEEDED"
        assert "queue" in error.value.message()


class TestAuth:
    def test_token_required_for_model_calls(self, guarded_server: RuntimeServer) -> None:
        client = _client(guarded_server)
        assert client.is_server_live()  # probes stay open, as over HTTP
        assert client.get_server_metadata().name == "mmop-runtime"
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as error:
                client.infer(guarded_server.name, [_image()], headers=headers)
            assert _status(error) == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as error:
                client.get_model_metadata(guarded_server.name, headers=headers)
            assert _status(error) == "StatusCode.UNAUTHENTICATED"
        result = client.infer(guarded_server.name, [_image()], headers=AUTH)
        assert result.as_numpy("label").shape == (1,)
        assert client.is_model_ready(guarded_server.name, headers=AUTH)

    def test_full_queue_is_resource_exhausted(self, guarded_server: RuntimeServer) -> None:
        """The queue (4 requests, each held 300 ms) is shared with HTTP: a burst of 12 overflows
        it and the rest are refused at once."""

        def one(_: int) -> str:
            try:
                _client(guarded_server).infer(guarded_server.name, [_image()], headers=AUTH)
            except InferenceServerException as exc:
                return str(exc.status())
            return "OK"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(one, range(12)))
        assert set(outcomes) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, outcomes
        assert "OK" in outcomes
        assert "StatusCode.RESOURCE_EXHAUSTED" in outcomes


def test_calls_are_counted_as_inference_traffic(zero_shot_server: RuntimeServer) -> None:
    """ModelInfer counts in mmop_requests_total{endpoint="grpc_infer"} with the HTTP status of the
    same answer, which the operator's analysis reads as inference traffic and errors."""
    client = _client(zero_shot_server)
    before = zero_shot_server.metrics()
    client.infer(zero_shot_server.name, [_image(), _bytes_input("labels", [b"a", b"b"])])
    with pytest.raises(InferenceServerException):
        client.infer(zero_shot_server.name, [_image()])  # no labels: 400
    with pytest.raises(InferenceServerException):
        client.infer("no-such-model", [_image()])
    after = zero_shot_server.metrics()

    def delta(**labels: str) -> float:
        name = "mmop_requests_total"
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert contract.ENDPOINT_GRPC_INFER in contract.INFER_ENDPOINTS
    assert delta(endpoint="grpc_infer", code="200") == 1
    assert delta(endpoint="grpc_infer", code="400") == 1
    assert delta(endpoint="grpc_infer", code="404") == 1
    assert delta(endpoint="infer") == 0
    page = zero_shot_server.metrics()
    assert metric_value(page, "mmop_request_duration_seconds_count", endpoint="grpc_infer") >= 3


def test_smoke_test_metadata_is_not_user_traffic(zero_shot_server: RuntimeServer) -> None:
    """Only the pod's smoke-test token makes a call the operator's test inference; any other
    value is user traffic (a client cannot hide its calls from the canary analysis)."""
    client = _client(zero_shot_server)
    name = "mmop_requests_total"
    inputs = [_image(), _bytes_input("labels", [b"a", b"b"])]
    key = contract.SMOKE_TEST_HEADER.lower()
    before = zero_shot_server.metrics()
    client.infer(zero_shot_server.name, inputs, headers={key: SMOKE_TOKEN})
    after = zero_shot_server.metrics()
    assert (
        metric_value(after, name, endpoint="smoke") - metric_value(before, name, endpoint="smoke")
        == 1
    )
    assert metric_value(after, name, endpoint="grpc_infer") == metric_value(
        before, name, endpoint="grpc_infer"
    )
    client.infer(zero_shot_server.name, inputs, headers={key: "1"})
    forged = zero_shot_server.metrics()
    assert metric_value(forged, name, endpoint="smoke") == metric_value(
        after, name, endpoint="smoke"
    )
    assert (
        metric_value(forged, name, endpoint="grpc_infer")
        - metric_value(after, name, endpoint="grpc_infer")
        == 1
    )


def test_sigterm_drains_grpc_with_http(start_server: Any, models: ModelStore) -> None:
    """SIGTERM: a gRPC call in flight finishes, new calls get UNAVAILABLE, ServerReady turns
    false, then the process exits 0 (one drain for both transports)."""
    task = contract.TASK_IMAGE_CLASSIFICATION
    server: RuntimeServer = start_server(
        model=models.get(task), task=task, env={contract.ENV_FAULT_LATENCY_MS: "1500"}
    )
    server.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_client(server).infer, server.name, [_image()])
        wait_until(
            lambda: metric_value(server.metrics(), contract.METRIC_QUEUE_DEPTH) >= 1,
            within=10,
            what="the call to arrive",
            every=0.02,
        )
        server.process.send_signal(signal.SIGTERM)
        client = _client(server)
        wait_until(
            lambda: not client.is_server_ready(),
            within=10,
            what="ServerReady to turn false",
            every=0.02,
        )
        with pytest.raises(InferenceServerException) as error:
            client.infer(server.name, [_image()])
        assert _status(error) == "StatusCode.UNAVAILABLE"
        assert "shutting down" in error.value.message()
        assert in_flight.result().as_numpy("label").shape == (1,)
    assert server.wait_exit() == 0
