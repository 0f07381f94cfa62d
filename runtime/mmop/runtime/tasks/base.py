"""What every task shares: tensor signatures, samples, the ``Task`` interface and input helpers.

A task turns one request into samples (``preprocess``, in the decoding pool), runs a batch of
samples from any number of requests (``forward``, in the one worker thread under inference
mode) and builds one request's outputs from its samples' results (``postprocess``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar, runtime_checkable

from mmop.runtime import media
from mmop.runtime.errors import InvalidInput
from mmop.runtime.protocol import EmbeddingItem, InferRequest, OutputTensor, Scalar, Value
from mmop.runtime.tasks import pixels

if TYPE_CHECKING:
    from mmop.runtime.backends import Graph, Runner
    from mmop.runtime.loading import LoadedModel
    from mmop.runtime.settings import RuntimeSettings

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size
    optional: bool = False

    def metadata(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(shape or self.shape),
        }
        if self.optional:
            entry["parameters"] = {"optional": True}
        return entry


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: tuple[str, ...] = ()  # request parameters the task reads

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)


@dataclass(slots=True)
class Sample:
    """One unit of batching: an image, a text or an audio clip, already preprocessed."""

    kind: str
    data: Any
    group: Hashable = None  # samples of equal group run in one model call (same prompt, ...)


@dataclass(slots=True)
class Prepared:
    """A request turned into samples, with what ``postprocess`` needs to answer it."""

    samples: list[Sample]
    context: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One task family: the model, its processors and the three steps."""

    name: ClassVar[str]
    signature: ClassVar[Signature]

    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings) -> None:
        self.loaded = loaded
        self.settings = settings
        # graph name -> what runs it (the eager module, an ONNX Runtime session, a compiled
        # module); set by ``bind_backend`` once the task is built.
        self.runners: dict[str, Runner] = {}

    def graphs(self) -> dict[str, Graph]:
        """The model calls ``forward`` makes through ``self.runners``, for backends to export or
        compile; empty for tasks that call the model directly (generate() loops)."""
        return {}

    def bind_backend(self) -> None:
        """Build ``self.runners`` for the configured backend (raises ``LoadError``)."""
        from mmop.runtime import backends

        self.runners, report = backends.bind(
            self.graphs(), loaded=self.loaded, settings=self.settings
        )
        self.loaded.backend_report = report

    @abstractmethod
    def preprocess(self, request: InferRequest) -> Prepared:
        """Validate and decode one request into samples (decoding pool; raises InvalidInput)."""

    @abstractmethod
    def forward(self, samples: list[Sample]) -> list[Any]:
        """Run one batch; one result per sample, in order (worker thread, inference mode)."""

    @abstractmethod
    def postprocess(self, prepared: Prepared, results: Sequence[Any]) -> list[OutputTensor]:
        """One request's outputs from its samples' results."""

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shapes for model metadata, as far as they are known after loading."""
        return {}

    def metadata_parameters(self) -> dict[str, Any]:
        return {}


@runtime_checkable
class EmbedsItems(Protocol):
    """A task that also answers OpenAI ``/v1/embeddings``: items (text, or images already
    base64-decoded) in request order, one ``dims``-wide vector each."""

    dims: int

    def preprocess_items(self, items: Sequence[EmbeddingItem]) -> Prepared:
        """Samples for ``items``, in request order."""
        ...


# --- helpers shared by the tasks ------------------------------------------------------------

DEFAULT_IMAGE_INPUT: Final = "image"


def bytes_input(request: InferRequest, name: str, *, required: bool = True) -> list[Value] | None:
    """The elements of a BYTES input, or None when it is optional and absent."""
    tensor = request.inputs.get(name)
    if tensor is None:
        if required:
            raise InvalidInput(f"input {name!r} is missing")
        return None
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {name!r} must have datatype BYTES, got {tensor.datatype}")
    if not tensor.values:
        raise InvalidInput(f"input {name!r} has no elements")
    return list(tensor.values)


def binary_value(value: Value, *, what: str) -> bytes:
    """A file sent as base64 text (JSON) or as raw bytes (binary tensor data)."""
    if isinstance(value, bytes):
        if not value:
            raise InvalidInput(f"{what} is empty")
        return value
    return media.decode_base64(value, what=what)


def text_value(value: Value, *, what: str, max_chars: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{what} is not UTF-8 text") from None
    if not value.strip():
        raise InvalidInput(f"{what} is empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{what} has {len(value)} characters; at most {max_chars}")
    return value


def int_parameter(
    parameters: Mapping[str, Scalar], key: str, *, default: int, low: int, high: int
) -> int:
    value = parameters.get(key, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer in JSON
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be an integer")
    if not low <= value <= high:
        raise InvalidInput(f"parameter {key!r} must be between {low} and {high}, got {value}")
    return value


def str_parameter(
    parameters: Mapping[str, Scalar], key: str, *, default: str | None, max_chars: int
) -> str | None:
    value = parameters.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter {key!r} must be a string")
    if len(value) > max_chars:
        raise InvalidInput(f"parameter {key!r} has {len(value)} characters; at most {max_chars}")
    return value


def bool_parameter(parameters: Mapping[str, Scalar], key: str, *, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be true or false")
    return value


class ImagePreprocessor:
    """Decode one image and turn it into the model's pixel tensor (C, H, W): the processor's
    tensor, computed by ``tasks.pixels`` where that covers the processor (bit for bit the same)."""

    def __init__(self, image_processor: Any, *, max_pixels: int) -> None:
        if image_processor is None:
            raise ValueError("this task needs an image processor")
        self._processor = image_processor
        self._max_pixels = max_pixels
        self._fast = pixels.fast_pixels(image_processor)

    def __call__(self, value: Value, *, what: str) -> Any:
        image = media.decode_image(
            binary_value(value, what=what), what=what, max_pixels=self._max_pixels
        )
        if self._fast is not None:
            tensor = self._fast(image)
            if tensor is not None:
                return tensor
        return self._processor(images=image, return_tensors="pt")["pixel_values"][0]


def run_grouped(
    samples: Sequence[Sample], run: Callable[[list[Sample], Hashable], list[R]]
) -> list[R]:
    """Call ``run`` once per group of samples; results come back in the samples' order."""
    groups: dict[Hashable, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.group, []).append(index)
    results: list[R | None] = [None] * len(samples)
    for key, indices in groups.items():
        for index, result in zip(indices, run([samples[i] for i in indices], key), strict=True):
            results[index] = result
    return results  # type: ignore[return-value]


def stack_pixels(images: Sequence[Any], loaded: LoadedModel) -> Any:
    """Per-image pixel tensors (C, H, W) as one batch on the model's device, in its dtype."""
    import torch

    pixels = torch.stack(list(images))
    dtype = loaded.weight_dtype if loaded.autocast_dtype is None else torch.float32
    return pixels.to(loaded.device, dtype=dtype, non_blocking=True)
