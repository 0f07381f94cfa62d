"""``image-to-text``: captions from BLIP, GIT and VisionEncoderDecoder models.

The three families start generation differently: BLIP's text decoder takes ``[DEC] prompt``,
GIT continues ``[CLS] prompt`` after the image tokens, an encoder-decoder starts from its
``decoder_start_token_id``. Samples with the same prompt and token budget run together, so a
batch never mixes prompt lengths (no padding inside a prompt).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Final, cast

from mmop.runtime import contract
from mmop.runtime.errors import InvalidInput, LoadError
from mmop.runtime.loading import LoadedModel
from mmop.runtime.protocol import InferRequest, OutputTensor
from mmop.runtime.settings import RuntimeSettings
from mmop.runtime.tasks import signature as signature_of
from mmop.runtime.tasks.base import (
    ImagePreprocessor,
    Prepared,
    Sample,
    Task,
    bytes_input,
    int_parameter,
    run_grouped,
    stack_pixels,
    text_value,
)

FAMILIES: Final = ("blip", "git", "vision-encoder-decoder")


def _text_config(config: Any) -> Any:
    for attribute in ("text_config", "decoder"):
        sub = getattr(config, attribute, None)
        if sub is not None:
            return sub
    return config


class CaptioningTask(Task):
    name = contract.TASK_IMAGE_TO_TEXT
    signature = signature_of(contract.TASK_IMAGE_TO_TEXT)

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        super().__init__(loaded, settings)
        self.family = str(getattr(loaded.config, "model_type", ""))
        if self.family not in FAMILIES:
            raise LoadError(
                f"image-to-text serves {', '.join(FAMILIES)} models; this one is {self.family!r}"
            )
        if loaded.tokenizer is None:
            raise LoadError("image-to-text needs a tokenizer")
        self.images = ImagePreprocessor(
            loaded.image_processor, max_pixels=settings.max_image_pixels
        )
        self.tokenizer = loaded.tokenizer
        self.positions = int(getattr(_text_config(loaded.config), "max_position_embeddings", 512))

    def preprocess(self, request: InferRequest) -> Prepared:
        images = bytes_input(request, "image")
        assert images is not None
        prompts = bytes_input(request, "prompt", required=False)
        if prompts is not None and len(prompts) not in (1, len(images)):
            raise InvalidInput(
                f"input 'prompt' has {len(prompts)} elements; send 1 (for every image) or one "
                f"per image ({len(images)})"
            )
        limit = self.settings.max_text_chars
        texts: list[str | None] = [None] * len(images)
        if prompts is not None:
            decoded = [
                text_value(p, what=f"prompt[{i}]", max_chars=limit) for i, p in enumerate(prompts)
            ]
            texts = list(decoded * len(images) if len(decoded) == 1 else decoded)
        cap = self.settings.max_new_tokens
        wanted = int_parameter(request.parameters, "max_new_tokens", default=cap, low=1, high=cap)
        samples = []
        for index, (value, prompt) in enumerate(zip(images, texts, strict=True)):
            prompt_ids = self._prompt_ids(prompt, what=f"prompt[{index}]")
            budget = min(wanted, self.positions - len(prompt_ids) - 2)
            pixels = self.images(value, what=f"image[{index}]")
            samples.append(Sample("image", pixels, (tuple(prompt_ids), budget)))
        return Prepared(samples)

    def _prompt_ids(self, prompt: str | None, *, what: str) -> list[int]:
        """The token ids generation starts from, before the family's start token."""
        if prompt is None:
            return []
        ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if len(ids) + 3 >= self.positions:
            raise InvalidInput(f"{what} has {len(ids)} tokens; at most {self.positions - 4} fit")
        return ids

    def forward(self, samples: list[Sample]) -> list[Any]:
        return run_grouped(samples, self._generate)

    def _generate(self, samples: list[Sample], group: Hashable) -> list[str]:
        import torch

        prompt_ids, budget = cast(tuple[tuple[int, ...], int], group)
        pixels = stack_pixels([sample.data for sample in samples], self.loaded)
        count = pixels.shape[0]
        device = self.loaded.device
        model = self.loaded.model
        tokenizer = self.tokenizer
        kwargs: dict[str, Any] = {"max_new_tokens": budget}
        if prompt_ids:
            if self.family == "vision-encoder-decoder":
                start = [model.generation_config.decoder_start_token_id, *prompt_ids]
                key = "decoder_input_ids"
            elif self.family == "git":
                start = [tokenizer.cls_token_id, *prompt_ids]
                key = "input_ids"
            else:  # blip: generate() turns the first token into [DEC] and drops the last
                start = [tokenizer.cls_token_id, *prompt_ids, tokenizer.sep_token_id]
                key = "input_ids"
            kwargs[key] = torch.tensor([start] * count, device=device)
        output = model.generate(pixel_values=pixels, **kwargs)
        texts = tokenizer.batch_decode(output, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        texts = [str(text) for text in results]
        return [OutputTensor("text", "BYTES", (len(texts),), texts)]
