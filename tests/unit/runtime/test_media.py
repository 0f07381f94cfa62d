"""Decoding of client media: base64, images with limits, audio with soundfile and resampling."""

from __future__ import annotations

import base64
import contextlib
import io
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmop.runtime import contract
from mmop.runtime.errors import InvalidInput
from mmop.runtime.media import (
    decode_audio,
    decode_base64,
    decode_image,
    resample,
    split_data_url,
)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its (tiny) data does not hold: a decompression bomb."""
    return contract.png_file(width, height, b"\x00" * 64)


def image_bytes(size: tuple[int, int], *, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=128 if mode == "L" else (10, 20, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def audio_bytes(samples: np.ndarray, rate: int, *, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


class TestBase64:
    def test_plain_and_data_url(self) -> None:
        encoded = base64.b64encode(b"hello").decode()
        assert decode_base64(encoded, what="x") == b"hello"
        assert decode_base64("data:image/png;base64," + encoded, what="x") == b"hello"

    def test_line_breaks_are_allowed(self) -> None:
        encoded = base64.encodebytes(b"hello world" * 20).decode()
        assert "\n" in encoded
        assert decode_base64(encoded, what="x") == b"hello world" * 20

    @pytest.mark.parametrize("value", ["not base64!", "abc", "é"])
    def test_invalid(self, value: str) -> None:
        with pytest.raises(InvalidInput, match="image\\[0\\] is not valid base64"):
            decode_base64(value, what="image[0]")

    def test_empty(self) -> None:
        with pytest.raises(InvalidInput, match="is empty"):
            decode_base64("", what="x")

    def test_split_data_url(self) -> None:
        assert split_data_url("data:image/jpeg;base64,AAAA") == ("image/jpeg", "AAAA")
        assert split_data_url("AAAA") == (None, "AAAA")


class TestImages:
    @pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
    def test_formats_decode_to_rgb(self, fmt: str) -> None:
        image = decode_image(image_bytes((20, 10), fmt=fmt), what="image[0]", max_pixels=1000)
        assert image.mode == "RGB"
        assert image.size == (20, 10)

    def test_greyscale_becomes_rgb(self) -> None:
        image = decode_image(image_bytes((8, 8), mode="L"), what="i", max_pixels=1000)
        assert image.mode == "RGB"

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
    def test_exif_orientation_is_applied(self, fmt: str) -> None:
        # orientation 6: the camera was turned; the stored 20x10 pixels are upright as 10x20
        pixels = Image.new("RGB", (20, 10), (10, 20, 30))
        pixels.paste((250, 0, 0), (0, 0, 5, 5))  # a red top-left corner
        exif = Image.Exif()
        exif[0x0112] = 6
        buffer = io.BytesIO()
        pixels.save(buffer, format=fmt, exif=exif.tobytes())
        image = decode_image(buffer.getvalue(), what="i", max_pixels=1000)
        assert image.size == (10, 20)
        corner = image.getpixel((8, 1))  # the stored top-left corner, turned clockwise
        assert isinstance(corner, tuple) and corner[0] > 200

    def test_an_upright_rgb_image_is_not_copied(self, monkeypatch: pytest.MonkeyPatch) -> None:
        copies: list[str] = []
        real_copy = Image.Image.copy

        def counted_copy(self: Image.Image) -> Image.Image:
            copies.append(self.mode)
            return real_copy(self)

        monkeypatch.setattr(Image.Image, "copy", counted_copy)
        image = decode_image(image_bytes((20, 10)), what="i", max_pixels=1000)
        assert (image.mode, image.size) == ("RGB", (20, 10))
        assert copies == []

    def test_contract_png_decodes(self) -> None:
        assert decode_image(contract.tiny_png(), what="i", max_pixels=10_000).size == (32, 32)

    def test_not_an_image(self) -> None:
        with pytest.raises(InvalidInput, match="image\\[1\\] is not an image"):
            decode_image(b"hello, world", what="image[1]", max_pixels=1000)

    def test_refused_format(self) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="PPM")
        with pytest.raises(InvalidInput, match="supported format"):
            decode_image(buffer.getvalue(), what="i", max_pixels=1000)

    def test_over_the_pixel_limit_is_refused_before_decoding(self) -> None:
        bomb = png_header_only(5000, 4000)  # 20 Mpx claimed, a few bytes of data
        with pytest.raises(InvalidInput, match="5000x4000 = 20000000 pixels, over the limit"):
            decode_image(bomb, what="i", max_pixels=1_000_000)

    def test_extreme_bomb_is_refused(self) -> None:
        bomb = png_header_only(100_000, 100_000)
        with pytest.raises(InvalidInput, match="pixels"):
            decode_image(bomb, what="i", max_pixels=40_000_000)

    def test_extreme_aspect_ratio_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="aspect ratio"):
            decode_image(image_bytes((1, 500)), what="i", max_pixels=10_000)

    def test_truncated_image(self) -> None:
        data = image_bytes((64, 64), fmt="JPEG")
        with pytest.raises(InvalidInput, match=r"could not be decoded|not a readable image"):
            decode_image(data[: len(data) // 2], what="i", max_pixels=10_000)


class TestAudio:
    def test_wav_at_the_target_rate(self) -> None:
        samples = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
        audio = decode_audio(
            audio_bytes(samples, 16000), what="a", sampling_rate=16000, max_seconds=5
        )
        assert audio.dtype == np.float32
        np.testing.assert_allclose(audio, samples, atol=1e-4)

    def test_contract_wav(self) -> None:
        audio = decode_audio(contract.tiny_wav(), what="a", sampling_rate=16000, max_seconds=5)
        assert audio.shape == (8000,)

    def test_flac_stereo_is_mixed_down_and_resampled(self) -> None:
        rate = 44100
        t = np.arange(rate) / rate
        left = 0.5 * np.sin(2 * np.pi * 440 * t)
        stereo = np.stack([left, left], axis=1).astype(np.float32)
        audio = decode_audio(
            audio_bytes(stereo, rate, fmt="FLAC"), what="a", sampling_rate=16000, max_seconds=5
        )
        assert audio.shape == (16000,)
        spectrum = np.abs(np.fft.rfft(audio))
        assert int(np.argmax(spectrum)) == 440  # 1 s of audio: bin index = frequency in Hz

    def test_too_long_is_refused_from_the_header(self) -> None:
        silence = np.zeros(8000 * 31, dtype=np.float32)
        with pytest.raises(InvalidInput, match=r"31\.0 s long, over the limit of 30 s"):
            decode_audio(audio_bytes(silence, 8000), what="a", sampling_rate=16000, max_seconds=30)

    @pytest.mark.parametrize("data", [b"RIFF....WAVEfmt nonsense", b"hello", contract.tiny_png()])
    def test_not_audio(self, data: bytes) -> None:
        with pytest.raises(InvalidInput, match="a is not a readable audio file"):
            decode_audio(data, what="a", sampling_rate=16000, max_seconds=30)

    def test_empty_audio(self) -> None:
        empty = audio_bytes(np.zeros(0, dtype=np.float32), 16000)
        with pytest.raises(InvalidInput, match="no audio samples"):
            decode_audio(empty, what="a", sampling_rate=16000, max_seconds=30)


def silent_flac(*, seconds: float, rate: int, channels: int) -> bytes:
    """Silence compresses to almost nothing: a tiny file whose header promises a lot."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(
        buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16"
    ) as file:
        block = np.zeros((65_536, channels), dtype=np.int16)
        left = int(seconds * rate)
        while left > 0:
            file.write(block[: min(left, len(block))])
            left -= len(block)
    return buffer.getvalue()


def peak_bytes(action: Callable[[], Any]) -> int:
    """The most memory (Python objects and numpy buffers) allocated while ``action`` ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        with contextlib.suppress(InvalidInput):
            action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def decode(data: bytes, *, max_seconds: float = 30) -> Any:
    return decode_audio(data, what="a", sampling_rate=16000, max_seconds=max_seconds)


class TestAudioBombs:
    """Audio is bounded by rate, channels and frames x channels before a sample is decoded."""

    def test_the_issues_bomb_is_refused_before_decoding(self) -> None:
        # 2 s of 8-channel FLAC at 655,350 Hz: 45 KB that decoded to 42 MB of float32 before
        # (the issue's 30 s of it is 170 KB and 600 MB).
        bomb = silent_flac(seconds=2, rate=655_350, channels=8)
        assert len(bomb) < 100_000
        with pytest.raises(InvalidInput, match="sample rate of 655350 Hz, over the limit of"):
            decode(bomb)
        assert peak_bytes(lambda: decode(bomb)) < 2 * 1024 * 1024

    def test_too_many_channels(self) -> None:
        data = audio_bytes(np.zeros((1600, 16), dtype=np.float32), 16_000)  # FLAC stops at 8
        with pytest.raises(InvalidInput, match="16 channels; at most 8"):
            decode(data)

    def test_frames_times_channels_is_bounded(self) -> None:
        # 96 kHz in 8 channels: 768,000 samples per second, twice the budget.
        data = silent_flac(seconds=1, rate=96_000, channels=8)
        with pytest.raises(InvalidInput, match="768000 samples, over the limit of 384000"):
            decode(data, max_seconds=1)

    def test_multichannel_audio_is_mixed_down_block_by_block(self) -> None:
        # 10 s of 8 channels at 16 kHz: the whole multichannel array would be 5 MB of float32;
        # mixing down block by block holds the 640 KB mono result and one block.
        rate, channels = 16_000, 8
        tone = 0.25 * np.sin(2 * np.pi * 440 * np.arange(10 * rate) / rate)
        data = audio_bytes(np.repeat(tone[:, None], channels, axis=1), rate, fmt="FLAC")
        audio = decode(data)
        assert audio.shape == (10 * rate,)
        np.testing.assert_allclose(audio, tone, atol=1e-3)
        whole = 10 * rate * channels * 4
        assert peak_bytes(lambda: decode(data)) < whole / 2

    def test_a_header_at_the_limits_is_accepted(self) -> None:
        data = silent_flac(seconds=1, rate=192_000, channels=2)
        assert decode(data, max_seconds=1).shape == (16_000,)


class TestResample:
    def test_identity(self) -> None:
        samples = np.arange(10, dtype=np.float32)
        assert resample(samples, source_rate=8000, target_rate=8000) is not None
        np.testing.assert_array_equal(
            resample(samples, source_rate=8000, target_rate=8000), samples
        )

    @pytest.mark.parametrize(("source", "target"), [(8000, 16000), (48000, 16000), (22050, 16000)])
    def test_length_and_tone_are_kept(self, source: int, target: int) -> None:
        t = np.arange(source) / source
        tone = np.sin(2 * np.pi * 300 * t).astype(np.float32)
        out = resample(tone, source_rate=source, target_rate=target)
        assert out.shape == (target,)
        assert int(np.argmax(np.abs(np.fft.rfft(out)))) == 300
        assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(0.5), rel=0.02)

    def test_downsampling_removes_what_the_new_rate_cannot_hold(self) -> None:
        source, target = 48000, 8000
        t = np.arange(source) / source
        high = np.sin(2 * np.pi * 7000 * t).astype(np.float32)  # above the new 4 kHz Nyquist
        out = resample(high, source_rate=source, target_rate=target)
        # Linear interpolation would fold this tone to 1 kHz at full strength.
        assert np.sqrt(np.mean(out**2)) < 0.01

    def test_rejects_bad_rates(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            resample(np.zeros(4, dtype=np.float32), source_rate=0, target_rate=16000)
