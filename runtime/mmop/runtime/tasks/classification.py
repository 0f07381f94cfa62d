"""``image-classification`` with any ``AutoModelForImageClassification`` model (ViT, ...).

Scores are a softmax over the model's labels (a sigmoid for multi-label models); ``label`` is
the best one's name from the model config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmop.runtime import contract
from mmop.runtime.backends import Graph
from mmop.runtime.loading import LoadedModel
from mmop.runtime.protocol import InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks import graphs
from mmop.runtime.tasks import signature as signature_of
from mmop.runtime.tasks.base import (
    ImagePreprocessor,
    Prepared,
    Sample,
    Task,
    bytes_input,
    stack_pixels,
)


class ImageClassificationTask(Task):
    name = contract.TASK_IMAGE_CLASSIFICATION
    signature = signature_of(contract.TASK_IMAGE_CLASSIFICATION)

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        super().__init__(loaded, settings)
        self.images = ImagePreprocessor(
            loaded.image_processor, max_pixels=settings.max_image_pixels
        )
        config = loaded.config
        count = int(getattr(config, "num_labels", 0) or len(config.id2label))
        self.labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(count)]
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"

    def graphs(self) -> dict[str, Graph]:
        pixel = self.images(contract.tiny_png(), what="example image")
        return {
            "logits": Graph(
                graphs.ImageLogits(self.loaded.model),
                {"pixel_values": stack_pixels([pixel, pixel.flip(-1)], self.loaded)},
                {"pixel_values": (0,)},
            )
        }

    def preprocess(self, request: InferRequest) -> Prepared:
        images = bytes_input(request, "image")
        assert images is not None
        samples = [
            Sample("image", self.images(value, what=f"image[{index}]"))
            for index, value in enumerate(images)
        ]
        return Prepared(samples)

    def forward(self, samples: list[Sample]) -> list[Any]:
        pixels = stack_pixels([sample.data for sample in samples], self.loaded)
        logits = self.runners["logits"](pixel_values=pixels).float()
        scores = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        return list(scores.cpu().numpy().astype(np.float32))

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        scores = np.stack(results).astype(np.float32)
        best = [self.labels[int(i)] for i in scores.argmax(axis=1)]
        return [
            OutputTensor("scores", "FP32", scores.shape, scores),
            OutputTensor("label", "BYTES", (len(best),), best),
        ]

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"scores": (-1, len(self.labels))}

    def metadata_parameters(self) -> dict[str, Any]:
        return {"labels": self.labels}
