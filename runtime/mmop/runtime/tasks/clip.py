"""CLIP-family tasks: image/text embeddings and zero-shot image classification.

Both use the model's ``get_image_features`` / ``get_text_features`` (CLIP, SigLIP, ...).
Zero-shot requests in one batch may carry different label sets: the batch embeds its images
once and the union of its label texts once, and each image is scored against its own labels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from mmop.runtime import contract
from mmop.runtime.backends import Graph
from mmop.runtime.errors import InvalidInput, LoadError
from mmop.runtime.loading import LoadedModel
from mmop.runtime.protocol import EmbeddingItem, InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks import graphs
from mmop.runtime.tasks import signature as signature_of
from mmop.runtime.tasks.base import (
    ImagePreprocessor,
    Prepared,
    Sample,
    Task,
    bool_parameter,
    bytes_input,
    stack_pixels,
    str_parameter,
    text_value,
)

IMAGE: Final = "image"
TEXT: Final = "text"
DEFAULT_TEMPLATE: Final = "This is a photo of {}."  # as transformers' zero-shot pipeline
_LABEL_CACHE_SIZE: Final = 4096
_SIGMOID_MODELS: Final = ("siglip", "siglip2")  # trained with a sigmoid loss, not a softmax


class _ClipFamily(Task):
    """Shared encoders: pixels and token ids in, L2-normalised float32 vectors out."""

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        super().__init__(loaded, settings)
        model = loaded.model
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise LoadError(
                    f"{type(model).__name__} has no {method}(); task {self.name} needs a "
                    "CLIP-family model"
                )
        if loaded.tokenizer is None:
            raise LoadError(f"task {self.name} needs a tokenizer")
        self.tokenizer: Any = loaded.tokenizer
        self.images = ImagePreprocessor(
            loaded.image_processor, max_pixels=settings.max_image_pixels
        )
        self.model_type = str(getattr(loaded.config, "model_type", ""))
        text_config = getattr(loaded.config, "text_config", loaded.config)
        positions = getattr(text_config, "max_position_embeddings", None) or 77
        self.max_tokens = int(min(positions, loaded.tokenizer.model_max_length or positions))
        # SigLIP was trained on max_length-padded text; CLIP pools at the end-of-text token.
        self.padding: bool | str = "max_length" if self.model_type in _SIGMOID_MODELS else True
        self.dims = int(getattr(loaded.config, "projection_dim", 0) or 0) or -1

    def graphs(self) -> dict[str, Graph]:
        model = self.loaded.model
        pixel = self.images(contract.tiny_png(), what="example image")
        tokens = self._tokens(["a photo of a cat", "a diagram of two dogs on a sofa"])
        return {
            "image_features": Graph(
                graphs.ImageFeatures(model),
                {"pixel_values": stack_pixels([pixel, pixel.flip(-1)], self.loaded)},
                {"pixel_values": (0,)},
            ),
            "text_features": Graph(
                graphs.TextFeatures(model), tokens, {name: (0, 1) for name in tokens}
            ),
        }

    def _tokens(self, texts: Sequence[str]) -> dict[str, Any]:
        tokens = self.tokenizer(
            list(texts),
            padding=self.padding,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {
            key: tokens[key].to(self.loaded.device)
            for key in ("input_ids", "attention_mask")
            if key in tokens
        }

    def _encode_images(self, images: Sequence[Any]) -> Any:
        pixels = stack_pixels(images, self.loaded)
        return self.runners["image_features"](pixel_values=pixels)

    def _encode_texts(self, texts: Sequence[str]) -> tuple[Any, list[int]]:
        tokens = self._tokens(texts)
        counts = tokens["attention_mask"].sum(dim=1).tolist() if "attention_mask" in tokens else []
        features = self.runners["text_features"](**tokens)
        return features, [int(c) for c in counts] or [self.max_tokens] * len(texts)


def _normalized(features: Any) -> Any:
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1)


class EmbeddingTask(_ClipFamily):
    """``image-text-embedding``: ``image`` and/or ``text`` in, ``image_embeds``/``text_embeds``."""

    name = contract.TASK_IMAGE_TEXT_EMBEDDING
    signature = signature_of(contract.TASK_IMAGE_TEXT_EMBEDDING)

    def preprocess(self, request: InferRequest) -> Prepared:
        images = bytes_input(request, IMAGE, required=False)
        texts = bytes_input(request, TEXT, required=False)
        if images is None and texts is None:
            raise InvalidInput("send an 'image' input, a 'text' input or both")
        normalize = bool_parameter(request.parameters, "normalize", default=True)
        samples: list[Sample] = []
        for index, value in enumerate(images or ()):
            pixels = self.images(value, what=f"image[{index}]")
            samples.append(Sample(IMAGE, (pixels, normalize)))
        limit = self.settings.max_text_chars
        for index, value in enumerate(texts or ()):
            text = text_value(value, what=f"text[{index}]", max_chars=limit)
            samples.append(Sample(TEXT, (text, normalize)))
        return Prepared(samples, context=(len(images or ()), len(texts or ())))

    def preprocess_items(self, items: Sequence[EmbeddingItem]) -> Prepared:
        """``/v1/embeddings``: items in request order, images already base64-decoded."""
        samples = []
        for index, item in enumerate(items):
            if item.kind == IMAGE:
                pixels = self.images(item.value, what=f"input[{index}]")
                samples.append(Sample(IMAGE, (pixels, True)))
            else:
                samples.append(Sample(TEXT, (item.value, True)))
        return Prepared(samples)

    def forward(self, samples: list[Sample]) -> list[Any]:
        results: list[Any] = [None] * len(samples)
        images = [i for i, s in enumerate(samples) if s.kind == IMAGE]
        texts = [i for i, s in enumerate(samples) if s.kind == TEXT]
        if images:
            features = self._encode_images([samples[i].data[0] for i in images])
            self._collect(
                results, features, indices=images, samples=samples, tokens=[0] * len(images)
            )
        if texts:
            features, counts = self._encode_texts([samples[i].data[0] for i in texts])
            self._collect(results, features, indices=texts, samples=samples, tokens=counts)
        return results

    @staticmethod
    def _collect(
        results: list[Any],
        features: Any,
        *,
        indices: list[int],
        samples: list[Sample],
        tokens: list[int],
    ) -> None:
        """Put each row's (vector, token count) at its sample's index, normalised if that
        sample asked for it (``data`` is (payload, normalize))."""
        normalized = _normalized(features).cpu().numpy()
        raw = features.float().cpu().numpy()
        for row, index in enumerate(indices):
            vector = normalized[row] if samples[index].data[1] else raw[row]
            results[index] = (np.ascontiguousarray(vector, dtype=np.float32), tokens[row])

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        n_images, n_texts = prepared.context
        outputs = []
        if n_images:
            outputs.append(_matrix("image_embeds", [r[0] for r in results[:n_images]]))
        if n_texts:
            outputs.append(_matrix("text_embeds", [r[0] for r in results[n_images:]]))
        return outputs

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image_embeds": (-1, self.dims), "text_embeds": (-1, self.dims)}


class ZeroShotTask(_ClipFamily):
    """``zero-shot-image-classification``: ``image`` and ``labels`` in, ``scores``/``label``."""

    name = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION
    signature = signature_of(contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION)

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        super().__init__(loaded, settings)
        model = loaded.model
        if getattr(model, "logit_scale", None) is None:
            raise LoadError(f"{type(model).__name__} has no logit_scale; not a CLIP model")
        self.sigmoid = self.model_type in _SIGMOID_MODELS
        # Label sets repeat across requests; their text embeddings are worth keeping. Only the
        # worker thread touches this cache.
        self._label_cache: OrderedDict[str, Any] = OrderedDict()

    def preprocess(self, request: InferRequest) -> Prepared:
        images = bytes_input(request, IMAGE)
        raw_labels = bytes_input(request, "labels")
        assert images is not None and raw_labels is not None
        if len(raw_labels) > self.settings.max_labels:
            raise InvalidInput(
                f"input 'labels' has {len(raw_labels)} labels; at most {self.settings.max_labels}"
            )
        limit = self.settings.max_text_chars
        labels = [
            text_value(v, what=f"labels[{i}]", max_chars=limit) for i, v in enumerate(raw_labels)
        ]
        if len(set(labels)) != len(labels):
            raise InvalidInput("input 'labels' holds the same label twice")
        template = str_parameter(
            request.parameters, "hypothesis_template", default=DEFAULT_TEMPLATE, max_chars=limit
        )
        assert template is not None
        if template.count("{}") != 1:
            raise InvalidInput("parameter 'hypothesis_template' must contain '{}' exactly once")
        prompts = tuple(template.replace("{}", label) for label in labels)
        samples = [
            Sample(IMAGE, (self.images(value, what=f"image[{index}]"), prompts))
            for index, value in enumerate(images)
        ]
        return Prepared(samples, context=labels)

    def forward(self, samples: list[Sample]) -> list[Any]:
        import torch

        image_features = _normalized(self._encode_images([s.data[0] for s in samples]))
        wanted = list(dict.fromkeys(p for s in samples for p in s.data[1]))
        text_features = self._label_features(wanted)
        column = {prompt: i for i, prompt in enumerate(wanted)}
        model = self.loaded.model
        logits = image_features @ text_features.T * model.logit_scale.float().exp()
        bias = getattr(model, "logit_bias", None)
        if bias is not None:
            logits = logits + bias.float()
        results: list[Any] = []
        for row, sample in enumerate(samples):
            picked = logits[row, [column[p] for p in sample.data[1]]]
            scores = torch.sigmoid(picked) if self.sigmoid else picked.softmax(dim=-1)
            results.append(scores.cpu().numpy().astype(np.float32))
        return results

    def _label_features(self, prompts: list[str]) -> Any:
        import torch

        cache = self._label_cache
        missing = [p for p in prompts if p not in cache]
        if missing:
            features, _ = self._encode_texts(missing)
            for prompt, vector in zip(missing, _normalized(features), strict=True):
                cache[prompt] = vector
                if len(cache) > _LABEL_CACHE_SIZE:
                    cache.popitem(last=False)
        for prompt in prompts:
            cache.move_to_end(prompt)
        return torch.stack([cache[p] for p in prompts])

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        labels: list[str] = prepared.context
        scores = np.stack(results).astype(np.float32)
        best = [labels[int(i)] for i in scores.argmax(axis=1)]
        return [
            OutputTensor("scores", "FP32", scores.shape, scores),
            OutputTensor("label", "BYTES", (len(best),), best),
        ]


def _matrix(name: str, rows: list[Any]) -> OutputTensor:
    data = np.stack(rows).astype(np.float32)
    return OutputTensor(name, "FP32", data.shape, data)
