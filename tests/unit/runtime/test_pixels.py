"""``tasks.pixels``: the processor's pixel tensors, bit for bit, without the processor's detours;
anything it does not cover goes through the processor."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from mmop.runtime.tasks import pixels
from mmop.runtime.tasks.base import ImagePreprocessor


def clip(edge: int = 32, crop: int = 32, **extra: Any) -> Any:
    return transformers.CLIPImageProcessorPil(
        size={"shortest_edge": edge}, crop_size={"height": crop, "width": crop}, **extra
    )


PROCESSORS = {
    "clip-tiny": lambda: clip(),
    "clip-224": lambda: clip(224, 224),
    "clip-bilinear-no-crop": lambda: clip(48, do_center_crop=False, resample=2),
    "vit": lambda: transformers.ViTImageProcessorPil(size={"height": 40, "width": 24}),
    "blip": lambda: transformers.BlipImageProcessorPil(size={"height": 36, "width": 36}),
    "rescale-only": lambda: clip(do_normalize=False),
    "no-rgb-conversion": lambda: clip(do_convert_rgb=False),
    "normalize-only": lambda: clip(do_rescale=False, image_mean=0.5, image_std=0.25),
}


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2}.get(mode, 1)
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def _images() -> list[Image.Image]:
    palette = _noise("RGB", (70, 50), 4).convert("P")
    palette.info["transparency"] = 3  # a transparent palette entry: composited onto white
    png = io.BytesIO()
    _noise("RGB", (256, 256), 5).save(png, format="PNG")
    keyed = _noise("RGB", (40, 40), 11)
    keyed.info["transparency"] = keyed.getpixel((0, 0))  # an RGB colour key (PNG tRNS)
    return [
        keyed,
        _noise("RGB", (256, 256), 0),
        _noise("RGB", (333, 517), 1),  # tall, odd sizes
        _noise("RGB", (517, 90), 2),  # wide
        _noise("RGBA", (120, 80), 3),  # transparency
        _noise("L", (64, 96), 6),
        _noise("LA", (64, 64), 7),
        palette,
        Image.open(png),  # as decoded from a request
    ]


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_the_pixels_are_the_processors_bit_for_bit(name: str) -> None:
    processor = PROCESSORS[name]()
    fast = pixels.fast_pixels(processor)
    assert fast is not None, f"{name} should be covered"
    for image in _images():
        got = fast(image)
        if not processor.do_convert_rgb and image.mode != "RGB":
            assert got is None  # the processor keeps the image's own channels
            continue
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert got is not None
        assert got.dtype == expected.dtype == torch.float32
        assert got.shape == expected.shape
        assert torch.equal(got, expected), f"{name}, {image.mode} {image.size}"


class _OwnResize(transformers.CLIPImageProcessorPil):
    def resize(self, *args: Any, **kwargs: Any) -> Any:
        return super().resize(*args, **kwargs)


@pytest.mark.parametrize(
    "processor",
    [
        pytest.param(_OwnResize(size={"shortest_edge": 32}), id="a step overridden"),
        pytest.param(clip(do_pad=True), id="padding"),
        pytest.param(
            transformers.CLIPImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}),
            id="longest edge",
        ),
        pytest.param(clip(do_rescale=False, do_normalize=False), id="uint8 pixels"),
        pytest.param(clip(image_mean=[0.5, 0.5]), id="two means for three channels"),
        pytest.param(object(), id="not a PIL-backend processor"),
    ],
)
def test_processors_it_does_not_cover_are_left_to_themselves(processor: Any) -> None:
    assert pixels.fast_pixels(processor) is None


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_preprocessor_computes_covered_processors_itself() -> None:
    processor = clip()
    preprocess = ImagePreprocessor(processor, max_pixels=10**7)
    image = _noise("RGB", (256, 200), 9)
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    got: list[Any] = []
    assert _count_calls(processor, lambda: got.append(preprocess(_png(image), what="image"))) == 0
    assert torch.equal(got[0], expected)


def test_the_preprocessor_leaves_other_processors_their_own_work() -> None:
    processor = _OwnResize(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    preprocess = ImagePreprocessor(processor, max_pixels=10**7)
    image = _noise("RGB", (256, 200), 9)
    got: list[Any] = []
    assert _count_calls(processor, lambda: got.append(preprocess(_png(image), what="image"))) == 1
    assert torch.equal(got[0], clip()(images=image, return_tensors="pt")["pixel_values"][0])


def _count_calls(processor: Any, action: Any) -> int:
    counted = 0
    original = processor.preprocess

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal counted
        counted += 1
        return original(*args, **kwargs)

    processor.preprocess = counting
    try:
        action()
    finally:
        del processor.preprocess
    return counted


def test_a_crop_larger_than_the_resized_image_goes_through_the_processor() -> None:
    processor = clip(edge=24, crop=32)  # the processor pads the 24-pixel side
    preprocess = ImagePreprocessor(processor, max_pixels=10**7)
    image = _noise("RGB", (100, 60), 10)
    fast = pixels.fast_pixels(processor)
    assert fast is not None
    assert fast(image) is None
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(preprocess(_png(image), what="image"), expected)
