"""The model calls the graph tasks make, as ``torch.nn.Module``s a backend can export or compile.

Each wraps the loaded transformers model (registered as a submodule, so an export sees its
weights as parameters) and returns one tensor.
"""

from __future__ import annotations

from typing import Any

import torch


def features(output: Any) -> Any:
    """transformers 5 returns a model output whose pooler_output is the projection; 4 a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        pooled = output[0]
    return pooled


class ImageFeatures(torch.nn.Module):
    """CLIP-family ``get_image_features``: pixels (B, C, H, W) -> (B, D)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = features(self.model.get_image_features(pixel_values=pixel_values))
        return out


class TextFeatures(torch.nn.Module):
    """CLIP-family ``get_text_features``: token ids (B, T) and mask -> (B, D)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: torch.Tensor = features(
            self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        )
        return out


class ImageLogits(torch.nn.Module):
    """An image classifier's logits: pixels (B, C, H, W) -> (B, labels)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(pixel_values=pixel_values).logits
        return out
