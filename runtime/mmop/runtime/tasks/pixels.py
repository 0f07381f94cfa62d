"""Pixel tensors from a decoded image, as transformers' PIL image processors make them, faster.

transformers' PIL backend (``PilBackend``: CLIP, ViT, BLIP and the other processors when
torchvision is absent) moves each image PIL -> numpy -> PIL -> numpy through convert, resize,
crop, rescale (in float64) and normalize, with Python bookkeeping around every step. The
pipeline here does the same steps on the PIL image (same ``convert``, same ``resize`` call, the
same crop box) and finishes rescale + normalize by looking each 8-bit value up in a 256-entry
table per channel, computed once with the processor's own arithmetic. The tensors are bit for
bit the processor's (tests/unit/runtime/test_pixels.py compares them over RGB, RGBA, grayscale,
palette and odd-sized images); one 256x256 image took 0.30 ms against the processor's 0.46 ms
(tiny CLIP, 32x32) and 0.73 against 1.16 ms (224x224), docs/benchmarks.md.

Processors it does not cover go through the processor itself: another backend (torchvision), a
class that overrides a step of the pipeline, padding, size rules other than "shortest edge" or
"height and width"; and so do, image by image, a crop larger than the resized image (the
processor pads it) and, for a processor that does not convert to RGB, an image that is not RGB
(the processor keeps its channels).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any, Final

import numpy as np
from PIL import Image

PixelFunction = Callable[[Any], Any]  # PIL image -> torch tensor (C, H, W), or None: not covered

# The steps of BaseImageProcessor.__call__ on the PIL backend; a processor class that overrides
# any of them may compute something else, so it is not covered.
_PIPELINE_METHODS: Final = (
    "__call__",
    "preprocess",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "process_image",
    "convert_to_rgb",
    "_preprocess",
    "resize",
    "center_crop",
    "rescale",
    "normalize",
    "pad",
)
_CHANNELS: Final = 3


def fast_pixels(processor: Any) -> PixelFunction | None:
    """A function equal to ``processor(images=image, return_tensors="pt")["pixel_values"][0]``
    for the processors it covers (see the module's text), else None."""
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:  # a transformers without backends: the processor does all the work
        return None
    if not isinstance(processor, PilBackend):
        return None
    cls = type(processor)
    if any(
        getattr(cls, name, None) is not getattr(PilBackend, name, None)
        for name in _PIPELINE_METHODS
    ):
        return None
    if getattr(processor, "do_pad", None):
        return None
    try:
        resize, crop, table = (
            _resize_rule(processor),
            _crop_size(processor),
            _value_table(processor),
        )
    except _NotCovered:
        return None
    return _pipeline(bool(getattr(processor, "do_convert_rgb", None)), resize, crop, table)


class _NotCovered(Exception):
    """The processor does something this module does not reproduce."""


def _resize_rule(processor: Any) -> tuple[str, int, int, int] | None:
    """("short", edge, 0, resample) or ("exact", height, width, resample); None: no resizing."""
    if not getattr(processor, "do_resize", False):
        return None
    size = getattr(processor, "size", None)
    resample = getattr(processor, "resample", None)
    if resample is None:
        resample = Image.Resampling.BILINEAR  # PilBackend.resize's default
    if size is None or not isinstance(resample, int):
        raise _NotCovered
    shortest = getattr(size, "shortest_edge", None)
    if shortest:
        if getattr(size, "longest_edge", None):
            raise _NotCovered
        return ("short", int(shortest), 0, int(resample))
    if getattr(size, "max_height", None) and getattr(size, "max_width", None):
        raise _NotCovered
    height, width = getattr(size, "height", None), getattr(size, "width", None)
    if height and width:
        return ("exact", int(height), int(width), int(resample))
    raise _NotCovered


def _crop_size(processor: Any) -> tuple[int, int] | None:
    if not getattr(processor, "do_center_crop", False):
        return None
    crop = getattr(processor, "crop_size", None)
    height, width = getattr(crop, "height", None), getattr(crop, "width", None)
    if not height or not width:
        raise _NotCovered
    return int(height), int(width)


def _value_table(processor: Any) -> Any:
    """(3, 256) float32: what rescale, then normalize, make of each 8-bit value of a channel,
    with the processor's arithmetic (rescale in float64, then float32 for normalize)."""
    do_rescale = bool(getattr(processor, "do_rescale", False))
    do_normalize = bool(getattr(processor, "do_normalize", False))
    if not do_rescale and not do_normalize:
        raise _NotCovered  # the processor hands back uint8 pixels
    values = np.arange(256, dtype=np.float64)
    if do_rescale:
        values = (values * float(processor.rescale_factor)).astype(np.float32)
    else:
        values = values.astype(np.float32)
    table = np.repeat(values[None, :], _CHANNELS, axis=0)
    if do_normalize:
        mean = _per_channel(getattr(processor, "image_mean", None))
        std = _per_channel(getattr(processor, "image_std", None))
        table = (table - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def _per_channel(value: Any) -> Any:
    if value is None:
        raise _NotCovered
    if isinstance(value, Collection) and not isinstance(value, str):
        if len(value) != _CHANNELS:
            raise _NotCovered
        return np.array(list(value), dtype=np.float32)
    return np.array([value] * _CHANNELS, dtype=np.float32)


def _pipeline(
    convert: bool,
    resize: tuple[str, int, int, int] | None,
    crop: tuple[int, int] | None,
    table: Any,
) -> PixelFunction:
    import torch

    def pixels(image: Any) -> Any:
        if convert:
            image = _to_rgb(image)
        elif image.mode != "RGB":
            return None  # the processor keeps the image's own channels
        if resize is not None:
            rule, first, second, resample = resize
            if rule == "short":
                height, width = _shortest_edge_size(image.height, image.width, first)
            else:
                height, width = first, second
            image = image.resize((width, height), resample=resample)
        array = np.asarray(image)  # (H, W, 3) uint8
        if crop is not None:
            height, width = array.shape[:2]
            crop_height, crop_width = crop
            top, left = (height - crop_height) // 2, (width - crop_width) // 2
            if top < 0 or left < 0:
                return None  # the processor pads an image smaller than its crop
            array = array[top : top + crop_height, left : left + crop_width]
        out = np.empty((_CHANNELS, array.shape[0], array.shape[1]), dtype=np.float32)
        for channel in range(_CHANNELS):
            np.take(table[channel], array[:, :, channel], out=out[channel])
        return torch.from_numpy(out)

    return pixels


def _to_rgb(image: Any) -> Any:
    """transformers' ``convert_to_rgb``: transparency composited onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


@functools.lru_cache(maxsize=1024)  # the rule costs ~37 us a call; request images repeat sizes
def _shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """(height, width) by transformers' own rule, asked with a shape-only stand-in image."""
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    shape_only = np.broadcast_to(np.uint8(0), (_CHANNELS, height, width))  # no pixel memory
    size = get_resize_output_image_size(
        shape_only, size=edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
    )
    return int(size[0]), int(size[1])
