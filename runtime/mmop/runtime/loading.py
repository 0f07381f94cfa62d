"""Model loading: resolve the source, refuse pickle checkpoints, pick device and dtype, load.

The backend options (``backend``, ``quantization``, bfloat16 on CPU) are checked here before
any weight is read (``backends.check_options``); int8 quantization is applied right after the
weights load, and a task binds its graphs to the backend when it is built.

``resolve_source`` and ``check_local_weights`` need no torch, so a bad source fails within a
fraction of a second; ``load_model`` then loads weights (safetensors only) and the processor
parts each task needs through transformers Auto classes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal

from mmop.runtime import backends, contract
from mmop.runtime.errors import LoadError, one_line
from mmop.runtime.settings import RuntimeSettings, available_cpus

if TYPE_CHECKING:
    from mmop.runtime.backends import BackendReport

log = logging.getLogger(__name__)

_HUB_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_CLAIM: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1123 label
PICKLE_PATTERNS: Final = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")

# task -> (transformers Auto model class, processor parts to load)
TASK_AUTO_CLASSES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    contract.TASK_IMAGE_TEXT_EMBEDDING: ("AutoModel", ("image_processor", "tokenizer")),
    contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION: (
        "AutoModelForZeroShotImageClassification",
        ("image_processor", "tokenizer"),
    ),
    contract.TASK_IMAGE_TO_TEXT: ("AutoModelForImageTextToText", ("image_processor", "tokenizer")),
    contract.TASK_ASR: ("AutoModelForSpeechSeq2Seq", ("feature_extractor", "tokenizer")),
    contract.TASK_IMAGE_CLASSIFICATION: ("AutoModelForImageClassification", ("image_processor",)),
}
_PART_CLASSES: Final = {
    "image_processor": "AutoImageProcessor",
    "tokenizer": "AutoTokenizer",
    "feature_extractor": "AutoFeatureExtractor",
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where the weights are: a local directory or a hub repository."""

    original: str
    kind: Literal["local", "hub"]
    location: str  # an absolute directory, or a hub repository id
    revision: str | None = None


@dataclass(slots=True)
class LoadedModel:
    """A model on its device with its processor parts, ready for a task to use."""

    model: Any
    source: ModelSource
    device: Any  # torch.device
    weight_dtype: Any  # torch.dtype
    autocast_dtype: Any | None  # torch.dtype under autocast (GPU with dtype=auto), else None
    image_processor: Any | None = None
    tokenizer: Any | None = None
    feature_extractor: Any | None = None
    load_seconds: float = 0.0
    quantization: contract.Quantization = contract.Quantization.NONE
    backend_report: BackendReport | None = None  # set when the task binds its graphs

    @property
    def config(self) -> Any:
        return self.model.config

    @contextlib.contextmanager
    def inference_context(self) -> Iterator[None]:
        """``torch.inference_mode()``, plus autocast where the dtype is chosen automatically."""
        import torch

        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    yield

    def describe(self) -> str:
        dtype = str(self.weight_dtype).removeprefix("torch.")
        if self.autocast_dtype is not None:
            dtype += " (autocast " + str(self.autocast_dtype).removeprefix("torch.") + ")"
        if self.quantization != contract.Quantization.NONE:
            dtype += f", {self.quantization} Linear layers"
        backend = self.backend_report.describe() if self.backend_report else contract.Backend.EAGER
        return f"{type(self.model).__name__} on {self.device} in {dtype}, backend {backend}"


# --- source resolution (no torch) -----------------------------------------------------------


def resolve_source(source: str, *, pvc_root: Path, revision: str | None = None) -> ModelSource:
    """Map a model source string to a local directory or a hub repository id.

    ``pvc://CLAIM/sub/path`` is the claim mounted under ``pvc_root``; ``hf://org/name`` and a
    bare ``org/name`` (that is not an existing directory) are hub ids.
    """
    text = source.strip()
    if text.startswith("file://"):
        path = text.removeprefix("file://")
        if not path.startswith("/"):
            raise LoadError(f"model source {source!r}: file:// needs an absolute path")
        return ModelSource(source, "local", str(Path(path)))
    if text.startswith("pvc://"):
        claim, _, sub = text.removeprefix("pvc://").partition("/")
        if not _CLAIM.match(claim):
            raise LoadError(f"model source {source!r}: {claim!r} is not a claim name")
        parts = PurePosixPath(sub).parts
        if any(part in ("..", "/") for part in parts):
            raise LoadError(f"model source {source!r}: the path inside the claim must be relative")
        return ModelSource(source, "local", str(Path(pvc_root, claim, *parts)))
    if text.startswith("hf://"):
        repo = text.removeprefix("hf://").strip("/")
        if not _HUB_ID.match(repo):
            raise LoadError(f"model source {source!r}: {repo!r} is not a hub id (org/name)")
        return ModelSource(source, "hub", repo, revision)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise LoadError(
            f"model source {source!r}: the {scheme}:// scheme is not supported; use a directory, "
            "file://, pvc:// or a hub id (hf://org/name)"
        )
    local = Path(text).expanduser()
    if local.exists() or text.startswith(("/", "./", "../", "~")):
        return ModelSource(source, "local", str(local.resolve()))
    if _HUB_ID.match(text):
        return ModelSource(source, "hub", text, revision)
    raise LoadError(f"model source {source!r} is neither an existing directory nor a hub id")


def check_local_weights(directory: Path) -> None:
    """Refuse a directory without safetensors weights, naming a pickle checkpoint if it has one."""
    if not directory.exists():
        raise LoadError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise LoadError(f"model source {directory} is not a directory")
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in directory.glob(pattern)})
    if pickles:
        raise LoadError(
            f"{directory} holds only a pickle checkpoint ({', '.join(pickles[:3])}); "
            "mmop-runtime loads safetensors weights only, since unpickling can run arbitrary "
            "code: convert it with save_pretrained(safe_serialization=True)"
        )
    raise LoadError(f"{directory} holds no model weights (*.safetensors files)")


def preflight(settings: RuntimeSettings) -> ModelSource:
    """Everything that can be checked before torch is imported."""
    source = resolve_source(
        settings.model, pvc_root=settings.pvc_mount_root, revision=settings.revision
    )
    if source.kind == "local":
        check_local_weights(Path(source.location))
    backends.check_task(settings)
    return source


# --- device and dtype -----------------------------------------------------------------------


def select_device(requested: str) -> Any:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LoadError(f"device {requested} was asked for, but CUDA is not available")
        index = torch.device(requested).index or 0
        if index >= torch.cuda.device_count():
            raise LoadError(
                f"device {requested} was asked for, but only {torch.cuda.device_count()} "
                "CUDA devices exist"
            )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise LoadError("device mps was asked for, but MPS is not available")
    return torch.device(requested)


def _fit_cpu_threads() -> None:
    """torch sizes its CPU thread pool from the host's cores; in a pod with a CPU limit that
    oversubscribes the quota and throttles every forward pass. OMP_NUM_THREADS still wins."""
    import os

    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return
    cpus = available_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)


def select_dtypes(requested: str, device: Any) -> tuple[Any, Any | None]:
    """(weight dtype, autocast dtype or None). ``auto``: fp32 weights everywhere, with
    bf16 (or fp16 where bf16 is unsupported) autocast on a CUDA GPU."""
    import torch

    if requested == "auto":
        if device.type == "cuda":
            index = device.index or 0
            with torch.cuda.device(index):
                fast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32, fast
        return torch.float32, None
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        requested
    ], None


# --- loading --------------------------------------------------------------------------------


def load_model(
    settings: RuntimeSettings, source: ModelSource, *, weights: bool = True
) -> LoadedModel:
    """Load weights and processor parts for ``settings.task``; any failure is a ``LoadError``.

    ``weights=False`` (the preprocessing worker processes): the processors, and the model built
    from its config on the ``meta`` device, without weights or memory: what a task needs to
    preprocess (its config, generation config and methods), never to run a forward pass."""
    started = time.perf_counter()
    try:
        loaded = _load(settings, source) if weights else _load_without_weights(settings, source)
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"cannot load {source.original}: {one_line(exc)}") from exc
    loaded.load_seconds = time.perf_counter() - started
    return loaded


def _transformers(settings: RuntimeSettings, source: ModelSource) -> tuple[Any, dict[str, Any]]:
    """What both loads start with: transformers, quiet, and the options every ``from_pretrained``
    call takes (remote code; for a hub source its revision and the cache)."""
    transformers: Any = importlib.import_module("transformers")
    # transformers' own warnings (generation defaults and the like) would be multi-line noise.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    hub: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
    if source.kind == "hub":
        hub["revision"] = source.revision
        if settings.cache_dir is not None:
            hub["cache_dir"] = str(settings.cache_dir)
    return transformers, hub


def _load(settings: RuntimeSettings, source: ModelSource) -> LoadedModel:
    transformers, hub = _transformers(settings, source)
    _fit_cpu_threads()
    device = select_device(settings.device)
    backends.check_options(settings, device)
    weight_dtype, autocast_dtype = select_dtypes(settings.dtype, device)
    auto_class_name, parts = TASK_AUTO_CLASSES[settings.task]
    auto_class = getattr(transformers, auto_class_name)
    try:
        model = auto_class.from_pretrained(
            source.location, use_safetensors=True, dtype=weight_dtype, **hub
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise LoadError(
                f"{source.original} cannot serve task {settings.task}: "
                f"{auto_class_name} does not support its model type"
            ) from exc
        raise
    model.eval()
    model.to(device)
    if settings.quantization == contract.Quantization.INT8:
        model = backends.quantize_int8(model)
    loaded = LoadedModel(
        model=model,
        source=source,
        device=device,
        weight_dtype=weight_dtype,
        autocast_dtype=autocast_dtype,
        quantization=settings.quantization,
    )
    _load_parts(transformers, loaded, parts, source, hub)
    return loaded


def _load_without_weights(settings: RuntimeSettings, source: ModelSource) -> LoadedModel:
    import torch

    transformers, hub = _transformers(settings, source)
    auto_class_name, parts = TASK_AUTO_CLASSES[settings.task]
    config = transformers.AutoConfig.from_pretrained(source.location, **hub)
    with torch.device("meta"):
        model = getattr(transformers, auto_class_name).from_config(
            config, trust_remote_code=settings.trust_remote_code
        )
    # Without a generation_config.json, the one from_config derived stands.
    with contextlib.suppress(OSError):
        model.generation_config = transformers.GenerationConfig.from_pretrained(
            source.location, **hub
        )
    loaded = LoadedModel(
        model=model,
        source=source,
        device=torch.device("cpu"),
        weight_dtype=torch.float32,
        autocast_dtype=None,
    )
    _load_parts(transformers, loaded, parts, source, hub)
    return loaded


def _load_parts(
    transformers: Any,
    loaded: LoadedModel,
    parts: Sequence[str],
    source: ModelSource,
    hub: dict[str, Any],
) -> None:
    for part in parts:
        part_class = getattr(transformers, _PART_CLASSES[part])
        try:
            setattr(loaded, part, part_class.from_pretrained(source.location, **hub))
        except Exception as exc:
            raise LoadError(
                f"cannot load the {part.replace('_', ' ')} of {source.original}: {one_line(exc)}"
            ) from exc
