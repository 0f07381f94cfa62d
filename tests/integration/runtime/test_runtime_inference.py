"""Every task end to end over HTTP, checked against the model run directly in this process."""

from __future__ import annotations

import base64
import concurrent.futures
import io
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mmop.runtime import contract
from tests.support.runtime import ModelStore, RuntimeServer


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bytes_input(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}


def infer(
    server: RuntimeServer, body: dict[str, Any], *, name: str | None = None
) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(contract.infer_path(name or server.name), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def output(document: dict[str, Any], name: str) -> np.ndarray:
    (found,) = [o for o in document["outputs"] if o["name"] == name]
    data = np.array(found["data"], dtype=np.float32 if found["datatype"] == "FP32" else object)
    return data.reshape(found["shape"])


def wav(seconds: float, *, rate: int, tone: float, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(
        buffer, (0.4 * np.sin(2 * np.pi * tone * t)).astype(np.float32), rate, format=fmt
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fixture",
    [
        "embedding_server",
        "zero_shot_server",
        "caption_server",
        "asr_server",
        "classification_server",
    ],
)
def test_the_operator_smoke_test_passes(fixture: str, request: pytest.FixtureRequest) -> None:
    server: RuntimeServer = request.getfixturevalue(fixture)
    document = infer(server, contract.smoke_test_request(server.task))
    assert document["id"] == "mmop-smoke-test"
    assert document["model_name"] == server.name
    for out in document["outputs"]:
        assert {"name", "shape", "datatype", "data"} <= set(out)
        assert int(np.prod(out["shape"])) == len(out["data"])


class TestEmbeddings:
    def test_match_the_model(self, embedding_server: RuntimeServer, models: ModelStore) -> None:
        from transformers import AutoModel, AutoProcessor

        images = [png(1), png(2, (64, 16))]
        texts = ["a cat", "a photo of a dog", "x"]
        document = infer(
            embedding_server,
            {
                "id": "e-1",
                "inputs": [
                    bytes_input("image", [b64(i) for i in images]),
                    bytes_input("text", texts),
                ],
            },
        )
        assert document["id"] == "e-1"
        image_embeds, text_embeds = (
            output(document, "image_embeds"),
            output(document, "text_embeds"),
        )
        assert image_embeds.shape == (2, 16)
        assert text_embeds.shape == (3, 16)

        directory = models.get(contract.TASK_IMAGE_TEXT_EMBEDDING)
        model = AutoModel.from_pretrained(directory, use_safetensors=True).eval()
        processor = AutoProcessor.from_pretrained(directory)
        with torch.inference_mode():
            pil = [Image.open(io.BytesIO(i)).convert("RGB") for i in images]
            pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
            expected_images = model.get_image_features(pixel_values=pixels).pooler_output
            tokens = processor(text=texts, padding=True, return_tensors="pt")
            expected_texts = model.get_text_features(**tokens).pooler_output
        normalize = torch.nn.functional.normalize
        np.testing.assert_allclose(image_embeds, normalize(expected_images, dim=-1), atol=1e-5)
        np.testing.assert_allclose(text_embeds, normalize(expected_texts, dim=-1), atol=1e-5)

    def test_normalize_false_gives_raw_features(self, embedding_server: RuntimeServer) -> None:
        body = {"inputs": [bytes_input("text", ["hello"])]}
        normalized = output(infer(embedding_server, body), "text_embeds")
        raw = output(
            infer(embedding_server, {**body, "parameters": {"normalize": False}}), "text_embeds"
        )
        assert np.linalg.norm(normalized) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(raw / np.linalg.norm(raw), normalized, atol=1e-5)

    def test_requested_outputs_only(self, embedding_server: RuntimeServer) -> None:
        document = infer(
            embedding_server,
            {
                "inputs": [bytes_input("image", [b64(png(3))]), bytes_input("text", ["a"])],
                "outputs": [{"name": "text_embeds"}],
            },
        )
        assert [o["name"] for o in document["outputs"]] == ["text_embeds"]


class TestZeroShot:
    def test_scores_match_clip(self, zero_shot_server: RuntimeServer, models: ModelStore) -> None:
        from transformers import AutoModelForZeroShotImageClassification, AutoProcessor

        labels = ["cat", "dog", "bird"]
        image = png(5)
        document = infer(
            zero_shot_server,
            {"inputs": [bytes_input("image", [b64(image)]), bytes_input("labels", labels)]},
        )
        scores = output(document, "scores")
        assert scores.shape == (1, 3)
        assert scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert output(document, "label").tolist() == [labels[int(scores.argmax())]]

        directory = models.get(contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION)
        model = AutoModelForZeroShotImageClassification.from_pretrained(directory).eval()
        processor = AutoProcessor.from_pretrained(directory)
        prompts = [f"This is a photo of {label}." for label in labels]
        inputs = processor(
            text=prompts,
            images=[Image.open(io.BytesIO(image)).convert("RGB")],
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            expected = model(**inputs).logits_per_image.softmax(dim=-1)
        np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5)

    def test_concurrent_requests_with_different_label_sets(
        self, zero_shot_server: RuntimeServer
    ) -> None:
        cases = [
            (png(10), ["cat", "dog"], "{}"),
            (png(11), ["a red car", "a tree", "the sea", "snow"], "This is a photo of {}."),
            (png(10), ["dog", "cat"], "{}"),
            (png(13), ["x"], "picture: {}"),
        ]

        def body(case: tuple[bytes, list[str], str]) -> dict[str, Any]:
            image, labels, template = case
            return {
                "inputs": [bytes_input("image", [b64(image)] * 2), bytes_input("labels", labels)],
                "parameters": {"hypothesis_template": template},
            }

        alone = [output(infer(zero_shot_server, body(case)), "scores") for case in cases]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            together = list(
                pool.map(lambda c: output(infer(zero_shot_server, body(c)), "scores"), cases * 3)
            )
        for index, scores in enumerate(together):
            np.testing.assert_allclose(scores, alone[index % len(cases)], atol=1e-5)
        # Swapping the labels swaps the scores (the labels are scored per request, in order).
        np.testing.assert_allclose(alone[0][:, ::-1], alone[2], atol=1e-5)


class TestCaptioning:
    def test_captions_per_image(self, caption_server: RuntimeServer) -> None:
        images = [b64(png(20)), b64(png(21, (20, 60)))]
        document = infer(caption_server, {"inputs": [bytes_input("image", images)]})
        texts = output(document, "text")
        assert texts.shape == (2,)
        assert all(isinstance(t, str) for t in texts)
        assert document["model_version"] == "v3"
        singles = [
            output(infer(caption_server, {"inputs": [bytes_input("image", [i])]}), "text")[0]
            for i in images
        ]
        assert texts.tolist() == singles

    def test_prompts_start_the_caption(self, caption_server: RuntimeServer) -> None:
        images = [b64(png(22)), b64(png(23))]
        document = infer(
            caption_server,
            {
                "inputs": [
                    bytes_input("image", images),
                    bytes_input("prompt", ["a photo of", "the cat"]),
                ],
                "parameters": {"max_new_tokens": 3},
            },
        )
        first, second = output(document, "text").tolist()
        assert first.startswith("a photo of")
        assert second.startswith("the cat")

    def test_versioned_route(self, caption_server: RuntimeServer) -> None:
        with caption_server.client() as client:
            path = f"/v2/models/{caption_server.name}/versions/v3/infer"
            ok = client.post(path, json=contract.smoke_test_request(contract.TASK_IMAGE_TO_TEXT))
            missing = client.post(
                f"/v2/models/{caption_server.name}/versions/v9/infer",
                json=contract.smoke_test_request(contract.TASK_IMAGE_TO_TEXT),
            )
        assert ok.status_code == 200
        assert missing.status_code == 404
        assert "no version 'v9'" in missing.json()["error"]


class TestSpeech:
    def test_wav_and_flac_at_other_rates(self, asr_server: RuntimeServer) -> None:
        clips = [wav(1.0, rate=16000, tone=300), wav(1.5, rate=44100, tone=600, fmt="FLAC")]
        document = infer(asr_server, {"inputs": [bytes_input("audio", [b64(c) for c in clips])]})
        texts = output(document, "text")
        assert texts.shape == (2,)
        singles = [
            output(infer(asr_server, {"inputs": [bytes_input("audio", [b64(c)])]}), "text")[0]
            for c in clips
        ]
        assert texts.tolist() == singles

    def test_language_and_task_parameters(self, asr_server: RuntimeServer) -> None:
        body = {
            "inputs": [bytes_input("audio", [b64(wav(0.5, rate=16000, tone=440))])],
            "parameters": {"language": "en", "task": "transcribe", "max_new_tokens": 4},
        }
        assert output(infer(asr_server, body), "text").shape == (1,)
        with asr_server.client() as client:
            bad = client.post(
                contract.infer_path(asr_server.name),
                json={**body, "parameters": {"language": "xx"}},
            )
        assert bad.status_code == 400
        assert "parameter 'language'" in bad.json()["error"]


class TestImageClassification:
    def test_scores_match_the_model(
        self, classification_server: RuntimeServer, models: ModelStore
    ) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        images = [png(30), png(31, (100, 80))]
        document = infer(
            classification_server, {"inputs": [bytes_input("image", [b64(i) for i in images])]}
        )
        scores = output(document, "scores")
        directory = models.get(contract.TASK_IMAGE_CLASSIFICATION)
        model = AutoModelForImageClassification.from_pretrained(directory).eval()
        processor = AutoImageProcessor.from_pretrained(directory)
        pil = [Image.open(io.BytesIO(i)).convert("RGB") for i in images]
        with torch.inference_mode():
            expected = model(**processor(images=pil, return_tensors="pt")).logits.softmax(-1)
        np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5)
        labels = [model.config.id2label[int(i)] for i in expected.argmax(-1)]
        assert output(document, "label").tolist() == labels

    def test_metadata_lists_labels_and_shapes(self, classification_server: RuntimeServer) -> None:
        with classification_server.client() as client:
            metadata = client.get(contract.model_path(classification_server.name)).json()
            server = client.get(contract.SERVER_METADATA_PATH).json()
        assert metadata["name"] == classification_server.name
        assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        assert metadata["outputs"][0] == {"name": "scores", "datatype": "FP32", "shape": [-1, 5]}
        assert metadata["parameters"]["labels"] == ["cat", "dog", "bird", "fish", "horse"]
        assert server["name"] == "mmop-runtime"
        assert "binary_tensor_data" in server["extensions"]
