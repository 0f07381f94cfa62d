"""Conformance with real clients: tritonclient.http (OIP v2) and the openai client."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from openai import APIStatusError, OpenAI
from tritonclient.utils import InferenceServerException

from mmop.runtime import contract
from tests.support.runtime import RuntimeServer


def _triton(server: RuntimeServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


class TestTritonClient:
    def test_health_and_metadata(self, embedding_server: RuntimeServer) -> None:
        client = _triton(embedding_server)
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(embedding_server.name)
        assert client.get_server_metadata()["name"] == "mmop-runtime"
        metadata = client.get_model_metadata(embedding_server.name)
        assert [i["name"] for i in metadata["inputs"]] == ["image", "text"]
        assert metadata["outputs"][0]["shape"] == [-1, 16]

    def test_json_tensors(self, embedding_server: RuntimeServer) -> None:
        client = _triton(embedding_server)
        image = triton.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(
            np.array([base64.b64encode(contract.tiny_png())], dtype=object), binary_data=False
        )
        text = triton.InferInput("text", [2, 1], "BYTES")
        text.set_data_from_numpy(
            np.array([[b"a cat"], [b"a dog"]], dtype=object), binary_data=False
        )
        result = client.infer(
            embedding_server.name,
            [image, text],
            request_id="triton-1",
            outputs=[
                triton.InferRequestedOutput("image_embeds", binary_data=False),
                triton.InferRequestedOutput("text_embeds", binary_data=False),
            ],
        )
        assert result.get_response()["id"] == "triton-1"
        assert result.as_numpy("image_embeds").shape == (1, 16)
        text_embeds = result.as_numpy("text_embeds")
        assert text_embeds.shape == (2, 16)
        np.testing.assert_allclose(np.linalg.norm(text_embeds, axis=1), 1.0, atol=1e-5)

    def test_binary_tensors_and_compression(self, classification_server: RuntimeServer) -> None:
        client = _triton(classification_server)
        image = triton.InferInput("image", [2], "BYTES")
        # Binary tensor data carries raw file bytes, no base64.
        image.set_data_from_numpy(np.array([contract.tiny_png()] * 2, dtype=object))
        plain = client.infer(classification_server.name, [image])
        gzipped = client.infer(
            classification_server.name, [image], request_compression_algorithm="gzip"
        )
        assert plain.as_numpy("scores").shape == (2, 5)
        np.testing.assert_allclose(plain.as_numpy("scores"), gzipped.as_numpy("scores"))
        labels = plain.as_numpy("label")
        assert labels.shape == (2,)

    def test_errors_surface_with_their_message(self, classification_server: RuntimeServer) -> None:
        client = _triton(classification_server)
        image = triton.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([b"not base64!"], dtype=object), binary_data=False)
        with pytest.raises(InferenceServerException, match="not valid base64"):
            client.infer(classification_server.name, [image])
        with pytest.raises(InferenceServerException, match="not served here"):
            client.infer("no-such-model", [image])


class TestOpenAIClient:
    @pytest.fixture
    def client(self, embedding_server: RuntimeServer) -> Iterator[OpenAI]:
        """Closed after the test: an unclosed client leaves its socket to the garbage
        collector, whose ResourceWarning then fails whichever later test it lands in."""
        with OpenAI(
            base_url=embedding_server.url + "/v1", api_key="unused", max_retries=0
        ) as client:
            yield client

    def test_text_and_image_embeddings(
        self, client: OpenAI, embedding_server: RuntimeServer
    ) -> None:
        image = "data:image/png;base64," + base64.b64encode(contract.tiny_png()).decode()
        # The client asks for base64 by default and decodes it itself.
        packed = client.embeddings.create(model=embedding_server.name, input=["a cat", image])
        floats = client.embeddings.create(
            model=embedding_server.name, input=["a cat", image], encoding_format="float"
        )
        assert [d.index for d in packed.data] == [0, 1]
        assert len(packed.data[0].embedding) == 16
        for a, b in zip(packed.data, floats.data, strict=True):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
        assert packed.model == embedding_server.name
        assert packed.usage.prompt_tokens > 0

    def test_matches_the_oip_endpoint(
        self, client: OpenAI, embedding_server: RuntimeServer
    ) -> None:
        vector = client.embeddings.create(
            model=embedding_server.name, input="a photo of a dog", encoding_format="float"
        )
        with embedding_server.client() as http:
            document = http.post(
                contract.infer_path(embedding_server.name),
                json={
                    "inputs": [
                        {
                            "name": "text",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["a photo of a dog"],
                        }
                    ]
                },
            ).json()
        np.testing.assert_allclose(
            vector.data[0].embedding, document["outputs"][0]["data"], atol=1e-6
        )

    def test_unknown_model_is_404(self, client: OpenAI) -> None:
        with pytest.raises(APIStatusError) as raised:
            client.embeddings.create(model="gpt-x", input="hi")
        assert raised.value.status_code == 404

    def test_dimensions_must_match(self, client: OpenAI, embedding_server: RuntimeServer) -> None:
        assert client.embeddings.create(model=embedding_server.name, input="a", dimensions=16).data
        with pytest.raises(APIStatusError) as raised:
            client.embeddings.create(model=embedding_server.name, input="a", dimensions=8)
        assert raised.value.status_code == 400
