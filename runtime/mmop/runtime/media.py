"""Decoding of client media with limits: base64, images (PIL) and audio (soundfile, no ffmpeg).

Every function raises ``InvalidInput`` with a message that names the input and says what is
wrong; nothing here trusts a size a file claims before checking it against a limit.
"""

from __future__ import annotations

import binascii
import io
import re
import warnings
from typing import Final

import numpy as np
import numpy.typing as npt
import pybase64
from PIL import Image, ImageOps, UnidentifiedImageError

from mmop.runtime.errors import InvalidInput, detail

# Formats a client may send; restricting Image.open keeps rarely used parsers out of reach.
IMAGE_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
AUDIO_FORMATS: Final = ("WAV", "WAVEX", "RF64", "FLAC", "OGG", "AIFF")
_DATA_URL: Final = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.I)
_WHITESPACE: Final = re.compile(rb"\s+")
MAX_ASPECT_RATIO: Final = 100.0
# Audio bounds checked from the header, before a sample is decoded: the highest studio rate, and
# frames x channels per second of allowed duration (192 kHz stereo, or 48 kHz in 8 channels).
# Without them 30 s of 8-channel FLAC at 655,350 Hz (170 KB of silence) decodes to 600 MB.
MAX_AUDIO_SAMPLE_RATE: Final = 192_000
MAX_AUDIO_CHANNELS: Final = 8
MAX_AUDIO_SAMPLES_PER_SECOND: Final = 384_000
AUDIO_BLOCK_FRAMES: Final = 16_384

FloatArray = npt.NDArray[np.float32]


def configure_pil(*, max_image_pixels: int) -> None:
    """Make PIL's own decompression-bomb check agree with our limit (process-wide PIL state).

    ``decode_image`` checks the size itself before decoding; PIL's check is a second line.
    Its warning (between 1x and 2x the limit) is silenced because such images are refused anyway.
    """
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def split_data_url(value: str) -> tuple[str | None, str]:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"); other strings -> (None, value)."""
    match = _DATA_URL.match(value)
    if match is None:
        return None, value
    return (match.group(1) or "").lower() or None, value[match.end() :]


def decode_base64(value: str | bytes, *, what: str) -> bytes:
    """Decode standard base64 (a ``data:...;base64,`` prefix and line breaks are allowed)."""
    if isinstance(value, str):
        _, value = split_data_url(value)
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidInput(f"{what} is not valid base64 (non-ASCII characters)") from None
    else:
        raw = value
    if b"\n" in raw or b"\r" in raw or b" " in raw:
        raw = _WHITESPACE.sub(b"", raw)
    try:
        data = pybase64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what} is not valid base64 ({exc})") from None
    if not data:
        raise InvalidInput(f"{what} is empty")
    return data


def decode_image(
    data: bytes, *, what: str, max_pixels: int, max_aspect_ratio: float = MAX_ASPECT_RATIO
) -> Image.Image:
    """Decode an image file into RGB, refusing anything over ``max_pixels`` before decoding it.

    Extreme aspect ratios are refused too: resizing the short side of a 1x40000 image to a
    model's 224 pixels would allocate gigabytes.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            f"{what} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:  # PIL's own check (see configure_pil)
        raise InvalidInput(
            f"{what} is over the limit of {max_pixels} pixels ({_short(exc)})"
        ) from None
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise InvalidInput(f"{what} is not a readable image ({_short(exc)})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidInput(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} pixels"
        )
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise InvalidInput(
            f"{what} is {width}x{height}; its aspect ratio is over {max_aspect_ratio:g}:1"
        )
    try:
        image.load()
        # Phones store the orientation in EXIF; models expect upright pixels. Turned in place,
        # and an RGB image is not converted: either would copy every pixel (docs/runtime.md).
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # truncated or corrupt pixel data
        raise InvalidInput(f"{what} could not be decoded ({_short(exc)})") from None


def decode_audio(data: bytes, *, what: str, sampling_rate: int, max_seconds: float) -> FloatArray:
    """Decode a WAV/FLAC/OGG/AIFF file to mono float32 at ``sampling_rate``.

    Sample rate, channels, duration and frames x channels are checked from the header before
    the samples are decoded; the file is then read in blocks, each mixed down at once, so no
    multichannel copy of the whole clip exists, and never more frames than the header declared.
    """
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile refuses what it cannot parse
        raise InvalidInput(
            f"{what} is not a readable audio file (WAV or FLAC expected): {_short(exc)}"
        ) from None
    if info.format not in AUDIO_FORMATS:
        raise InvalidInput(
            f"{what} has audio format {info.format}; supported: {', '.join(AUDIO_FORMATS)}"
        )
    check_audio_header(
        what=what,
        frames=int(info.frames),
        channels=int(info.channels),
        rate=int(info.samplerate),
        max_seconds=max_seconds,
    )
    rate = int(info.samplerate)
    # Float files can hold inf/NaN or values near the float32 limit: numpy would warn (and log)
    # on every such request; the result is checked instead, and refused if not finite.
    with np.errstate(over="ignore", invalid="ignore"):
        mono = _read_mono(data, frames=int(info.frames), what=what)
        if np.all(np.isfinite(mono)):
            mono = resample(mono, source_rate=rate, target_rate=sampling_rate)
    if not np.all(np.isfinite(mono)):
        raise InvalidInput(f"{what} holds samples that are not finite numbers (or too large)")
    return mono


def check_audio_header(
    *, what: str, frames: int, channels: int, rate: int, max_seconds: float
) -> None:
    """Refuse audio whose header promises more than the limits allow (``InvalidInput``)."""
    if rate <= 0 or frames <= 0 or channels <= 0:
        raise InvalidInput(f"{what} holds no audio samples")
    if rate > MAX_AUDIO_SAMPLE_RATE:
        raise InvalidInput(
            f"{what} has a sample rate of {rate} Hz, over the limit of {MAX_AUDIO_SAMPLE_RATE} Hz"
        )
    if channels > MAX_AUDIO_CHANNELS:
        raise InvalidInput(
            f"{what} has {channels} channels; at most {MAX_AUDIO_CHANNELS} are accepted"
        )
    seconds = frames / rate
    if seconds > max_seconds:
        raise InvalidInput(f"{what} is {seconds:.1f} s long, over the limit of {max_seconds:g} s")
    limit = int(max_seconds * MAX_AUDIO_SAMPLES_PER_SECOND)
    if frames * channels > limit:
        raise InvalidInput(
            f"{what} holds {frames} frames x {channels} channels = {frames * channels} samples, "
            f"over the limit of {limit} ({MAX_AUDIO_SAMPLES_PER_SECOND} per second of audio)"
        )


def _read_mono(data: bytes, *, frames: int, what: str) -> FloatArray:
    """Decode at most ``frames`` frames, block by block, mixing each block down to mono."""
    import soundfile

    mono: FloatArray = np.empty(frames, dtype=np.float32)
    done = 0
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as source:
            while done < frames:
                block = source.read(
                    min(AUDIO_BLOCK_FRAMES, frames - done), dtype="float32", always_2d=True
                )
                if block.shape[0] == 0:
                    break
                mono[done : done + block.shape[0]] = block.mean(axis=1, dtype=np.float32)
                done += block.shape[0]
    except Exception as exc:
        raise InvalidInput(f"{what} could not be decoded: {_short(exc)}") from None
    if done == 0:
        raise InvalidInput(f"{what} holds no audio samples")
    return mono[:done]


def resample(samples: FloatArray, *, source_rate: int, target_rate: int) -> FloatArray:
    """Band-limited resampling with the FFT (numpy only).

    Cutting (or zero-padding) the spectrum at the new Nyquist frequency is the ideal low-pass,
    so downsampling does not alias the way linear interpolation does.
    """
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError("sampling rates must be positive")
    samples = np.asarray(samples, dtype=np.float32)
    if source_rate == target_rate or samples.size == 0:
        return samples
    n = samples.shape[0]
    m = max(1, round(n * target_rate / source_rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    kept = np.zeros(m // 2 + 1, dtype=np.complex128)
    keep = min(spectrum.shape[0], kept.shape[0])
    kept[:keep] = spectrum[:keep]
    if m < n and m % 2 == 0:
        # The new Nyquist bin of a real signal holds the sum of both halves' energy.
        kept[-1] = kept[-1].real
    out: FloatArray = (np.fft.irfft(kept, n=m) * (m / n)).astype(np.float32)
    return out


def _short(exc: BaseException) -> str:
    # libsndfile's errors name the BytesIO object ("Error opening <... at 0x7f...>: ..."): the
    # client gets libsndfile's own message, not our memory addresses.
    raw = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    return detail(raw)
