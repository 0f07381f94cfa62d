"""Acceleration backends: how a task's model graphs run (eager torch, ONNX Runtime, torch.compile),
int8 dynamic quantization, and the checks that refuse a combination that cannot work.

A task names the graphs it runs (``Task.graphs()``: a module, example inputs, dynamic axes);
``bind`` turns each into a runner for ``settings.backend``. ``onnxruntime`` exports the graph at
load with ``torch.onnx.export`` into the model cache (keyed by the model's identity, the
exporter's versions and the opset) and reuses the file on the next load; ``compile`` compiles it
with ``torch.compile`` and runs it once at load. Every runner is checked against the eager
module on the example inputs before the model is reported ready. Nothing here falls back to
another backend: what cannot work fails the load with a ``LoadError`` naming the option.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from mmop.runtime import contract
from mmop.runtime.errors import LoadError, one_line

if TYPE_CHECKING:
    from mmop.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

COMPILER: Any = "inductor"  # torch.compile's backend (tests use a cheaper one: no C++ build)
# Inductor's options for a serving graph. Freezing: the weights become constants of the compiled
# graph, so inductor folds them and, on a CPU, packs the Linear weights once for oneDNN/MKL
# instead of on every call. Measured on the base CLIP's image tower (fp32, batch 32, 2 threads):
# 1.17-1.23x eager with freezing against 1.10x without, answers within cosine 0.9999998.
INDUCTOR_OPTIONS: Final[Mapping[str, Any]] = {"freezing": True}
ONNX_OPSET: Final = 18
ONNX_FORMAT: Final = 1  # bump when the export itself changes: old cache entries are then unused
ONNX_FILE: Final = "model.onnx"
# A runner whose outputs on the example inputs are further from eager than this is refused.
MIN_AGREEMENT: Final = {contract.Backend.ONNXRUNTIME: 0.999, contract.Backend.COMPILE: 0.99}
_BF16_FLAGS: Final = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (AVX-512 / AMX), Arm (FEAT_BF16)

Runner = Callable[..., Any]


class Source(Protocol):
    """What binding reads of where a model came from (``loading.ModelSource``)."""

    @property
    def original(self) -> str: ...
    @property
    def kind(self) -> str: ...  # "local" or "hub"
    @property
    def location(self) -> str: ...
    @property
    def revision(self) -> str | None: ...


class Loaded(Protocol):
    """What binding reads of a loaded model (``loading.LoadedModel`` is one). This module sits
    below loading, which checks the options here before it reads a weight."""

    @property
    def model(self) -> Any: ...  # torch.nn.Module
    @property
    def source(self) -> Source: ...
    @property
    def device(self) -> Any: ...  # torch.device
    def inference_context(self) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, slots=True)
class Graph:
    """One model call a task makes: ``module(**inputs) -> tensor``."""

    module: Any  # torch.nn.Module
    example: dict[str, Any]  # input name -> a tensor with batch >= 2 (dynamic axes must vary)
    dynamic: dict[str, tuple[int, ...]]  # input name -> its axes that vary between calls


@dataclass(slots=True)
class BackendReport:
    """What ``bind`` did, for the load log and for tests."""

    backend: contract.Backend
    exported: list[str] = field(default_factory=list)  # graphs exported in this load
    reused: list[str] = field(default_factory=list)  # graphs whose cached export was reused
    files: dict[str, Path] = field(default_factory=dict)  # graph -> its .onnx file
    providers: list[str] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)  # graph -> min cosine to eager

    def describe(self) -> str:
        if self.backend == contract.Backend.ONNXRUNTIME:
            return f"onnxruntime ({', '.join(self.providers)})"
        return str(self.backend)


# --- checks (no torch) -------------------------------------------------------------------------


def check_task(settings: RuntimeSettings) -> None:
    """A backend other than eager serves only the tasks with a fixed graph."""
    if settings.backend != contract.Backend.EAGER and settings.task not in contract.GRAPH_TASKS:
        raise LoadError(
            f"backend {settings.backend} does not support task {settings.task} (its generate() "
            "loop is neither exported nor compiled); it serves "
            f"{', '.join(contract.GRAPH_TASKS)}: use backend eager for this task"
        )


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (x86 ``flags``, Arm ``Features``)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX on x86, BF16 on Arm);
    elsewhere torch emulates it, slower than float32."""
    return bool(cpu_flags() & set(_BF16_FLAGS))


def check_options(settings: RuntimeSettings, device: Any) -> None:
    """Refuse backend / quantization / dtype / device combinations that cannot work."""
    backend, quantization, dtype = settings.backend, settings.quantization, settings.dtype
    check_task(settings)
    if quantization == contract.Quantization.INT8:
        if device.type != "cpu":
            raise LoadError(
                f"quantization int8 runs on CPU only (torch dynamic quantization has no "
                f"{device.type} kernels), but the device is {device}: use quantization none, "
                "or device cpu"
            )
        if dtype not in ("auto", "float32"):
            raise LoadError(
                f"quantization int8 keeps activations in float32, so dtype {dtype} cannot "
                "apply: use dtype auto or float32 with it"
            )
        if backend != contract.Backend.EAGER:
            raise LoadError(
                f"quantization int8 is not supported with backend {backend}: use backend eager "
                "with int8, or quantization none"
            )
    if backend == contract.Backend.ONNXRUNTIME and dtype in ("float16", "bfloat16"):
        raise LoadError(
            f"backend onnxruntime runs the float32 export, so dtype {dtype} cannot apply: use "
            "dtype auto or float32 (on a GPU with TensorRT, auto lets TensorRT use fp16)"
        )
    if dtype == "bfloat16" and device.type == "cpu" and not cpu_supports_bf16():
        raise LoadError(
            "dtype bfloat16 on CPU needs native bfloat16 support (avx512_bf16 or amx_bf16 on "
            f"x86, bf16 on Arm); this {platform.machine()} CPU has none, and emulated bfloat16 "
            "is slower than float32: use dtype auto or float32"
        )
    if backend == contract.Backend.ONNXRUNTIME:
        onnx_providers(device, dtype=dtype, cache_root=None)  # raises when none fits


# --- quantization ------------------------------------------------------------------------------


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (int8 weights, activations quantized per
    batch at run time; CPU kernels only)."""
    import torch

    with warnings.catch_warnings():
        # torch announces the move of eager-mode quantization to torchao; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError as exc:  # pragma: no cover - depends on the torch build
            raise LoadError(
                f"quantization int8 needs torch.ao.quantization.quantize_dynamic, which torch "
                f"{torch.__version__} does not have"
            ) from exc
        return quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )


# --- binding graphs to a backend ------------------------------------------------------------------


def bind(
    graphs: Mapping[str, Graph], *, loaded: Loaded, settings: RuntimeSettings
) -> tuple[dict[str, Runner], BackendReport]:
    """A runner per graph for ``settings.backend``, each checked against eager at load."""
    report = BackendReport(settings.backend)
    if settings.backend == contract.Backend.EAGER:
        return {name: graph.module for name, graph in graphs.items()}, report
    if not graphs:
        raise LoadError(f"backend {settings.backend} does not support task {settings.task}")
    runners: dict[str, Runner] = {}
    for name, graph in graphs.items():
        with loaded.inference_context():
            expected = graph.module(**graph.example)
        if settings.backend == contract.Backend.ONNXRUNTIME:
            runner = _onnx_runner(name, graph, loaded=loaded, settings=settings, report=report)
            agreement = _agreement(runner, graph, expected, loaded=loaded)
            if agreement < MIN_AGREEMENT[contract.Backend.ONNXRUNTIME] and name in report.reused:
                log.warning(
                    "the cached ONNX export of %s disagrees with the model (cosine %.4f): "
                    "exporting it again",
                    name,
                    agreement,
                )
                shutil.rmtree(report.files[name].parent, ignore_errors=True)
                report.reused.remove(name)
                runner = _onnx_runner(name, graph, loaded=loaded, settings=settings, report=report)
                agreement = _agreement(runner, graph, expected, loaded=loaded)
        else:
            graph = _as_requests(graph, loaded)
            runner = _compiled_runner(name, graph, loaded=loaded, settings=settings)
            agreement = _agreement(runner, graph, expected, loaded=loaded)
        report.agreement[name] = agreement
        if agreement < MIN_AGREEMENT[settings.backend]:
            raise LoadError(
                f"backend {settings.backend}: the {name} graph disagrees with the eager model "
                f"on the example inputs (min cosine {agreement:.4f} < "
                f"{MIN_AGREEMENT[settings.backend]}); use backend eager for this model"
            )
        runners[name] = runner
    return runners, report


def _agreement(runner: Runner, graph: Graph, expected: Any, *, loaded: Loaded) -> float:
    import torch

    with loaded.inference_context():
        got = runner(**graph.example)
    a, b = got.float().flatten(1), expected.float().flatten(1)
    if a.shape != b.shape:
        return -1.0
    if torch.equal(a, b):
        return 1.0
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


# --- torch.compile -----------------------------------------------------------------------------


def _as_requests(graph: Graph, loaded: Loaded) -> Graph:
    """``graph`` with its example inputs made as a request's are: inside ``inference_context``
    (the batcher's forward builds its tensors there), so they are inference tensors. Dynamo
    guards on that, as on views: a graph compiled for tensors made otherwise never matched a
    request, and the first requests compiled again (a 12 s stall for the base CLIP, measured).
    """
    with loaded.inference_context():
        example = {name: value.clone() for name, value in graph.example.items()}
    return replace(graph, example=example)


def _compiled_runner(
    name: str, graph: Graph, *, loaded: Loaded, settings: RuntimeSettings
) -> Runner:
    import torch

    root = cache_root(settings)
    # Inductor's compiled kernels go to the model cache volume (the root file system of a pod
    # is read-only), so a restarted pod compiles faster.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(), loaded.inference_context():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch's own, while tracing
            warnings.simplefilter("ignore", FutureWarning)
            # The example's batch and a batch of one (torch.compile specialises size 1): the
            # sizes a server sees first are compiled at load, not on a user's request. Both are
            # made as a request's tensors are (``_as_requests``): the batch of one is a copy,
            # not a slice, since dynamo guards a view on its base.
            single = {
                name: value[:1].clone() if 0 in graph.dynamic.get(name, ()) else value
                for name, value in graph.example.items()
            }
            options = dict(INDUCTOR_OPTIONS) if COMPILER == "inductor" else None
            compiled = torch.compile(graph.module, dynamic=True, backend=COMPILER, options=options)
            for inputs in (graph.example, single):
                compiled(**inputs)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise LoadError(
            f"backend compile cannot compile the {name} graph of {loaded.source.original}: "
            f"{one_line(exc)}"
        ) from exc
    log.info("compiled the %s graph in %.1f s", name, time.perf_counter() - started)
    runner: Runner = compiled
    return runner


# --- ONNX Runtime ------------------------------------------------------------------------------


def cache_root(settings: RuntimeSettings) -> Path:
    """Where exports and compiled kernels are kept: the model cache dir (the pod's cache
    volume), else ``$XDG_CACHE_HOME/mmop`` (``~/.cache/mmop``)."""
    if settings.cache_dir is not None:
        return Path(settings.cache_dir) / "mmop"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmop"


def onnx_providers(device: Any, *, dtype: str, cache_root: Path | None) -> list[Any]:
    """ONNX Runtime execution providers for ``device``: CPU, or TensorRT and CUDA on a GPU
    (whichever the installed onnxruntime-gpu has)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise LoadError(
            "backend onnxruntime needs the onnxruntime package (onnxruntime-gpu on a GPU), "
            "which is not installed"
        ) from exc
    available = set(onnxruntime.get_available_providers())
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise LoadError(f"backend onnxruntime runs on cpu or cuda, not {device.type}")
    index = device.index or 0
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        options: dict[str, Any] = {"device_id": index, "trt_fp16_enable": dtype == "auto"}
        if cache_root is not None:
            options |= {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_root / "tensorrt"),
            }
        providers.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"device_id": index}))
    if not providers:
        raise LoadError(
            f"backend onnxruntime on {device} needs onnxruntime-gpu (CUDA or TensorRT execution "
            f"provider); the installed onnxruntime has {', '.join(sorted(available))}"
        )
    return [*providers, "CPUExecutionProvider"]


def model_identity(loaded: Loaded) -> dict[str, Any]:
    """What an export depends on: the weights (hub commit, or the local files' names, sizes
    and modification times), the config, and the exporting software."""
    import torch
    import transformers

    source = loaded.source
    config = loaded.model.config
    identity: dict[str, Any] = {
        "format": ONNX_FORMAT,
        # The class, not the task: the embedding and zero-shot tasks load the same CLIP class
        # and export the same graphs, so they share the files.
        "class": type(loaded.model).__name__,
        "source": source.location,
        "config": hashlib.sha256(config.to_json_string().encode()).hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "opset": ONNX_OPSET,
    }
    if source.kind == "hub":
        identity["commit"] = getattr(config, "_commit_hash", None) or source.revision
    else:
        directory = Path(source.location)
        identity["weights"] = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.glob("*.safetensors")
        )
    return identity


def onnx_cache_dir(loaded: Loaded, *, settings: RuntimeSettings, graph: str) -> Path:
    identity = model_identity(loaded) | {"graph": graph}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root(settings) / "onnx" / f"{graph}-{key}"


def export_onnx(graph: Graph, directory: Path) -> None:
    """Export ``graph`` into ``directory`` (a temporary sibling renamed into place, so a crash
    never leaves a half-written export where the next load looks)."""
    import torch

    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    auto = torch.export.Dim.AUTO
    shapes = {
        name: {axis: auto for axis in graph.dynamic.get(name, ())} or None for name in graph.example
    }
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                graph.module,
                (),
                str(scratch / ONNX_FILE),
                kwargs=graph.example,
                input_names=list(graph.example),
                dynamic_shapes=shapes,
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
        try:
            scratch.rename(directory)
        except OSError:  # another process exported it first
            if not (directory / ONNX_FILE).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about optional operator sets (torchvision) and its own deprecations:
    noise in a server log, and errors in a test run."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir", "torch.fx")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class OnnxRunner:
    """An ONNX Runtime session called like the graph's module: torch tensors in and out."""

    def __init__(self, session: Any, device: Any) -> None:
        self.session = session
        self.device = device
        self.input_names = [i.name for i in session.get_inputs()]

    def __call__(self, **inputs: Any) -> Any:
        import torch

        feed = {
            name: inputs[name].detach().cpu().numpy()
            for name in self.input_names
            if inputs.get(name) is not None
        }
        output = self.session.run(None, feed)[0]
        return torch.from_numpy(output).to(self.device)


def _onnx_runner(
    name: str,
    graph: Graph,
    *,
    loaded: Loaded,
    settings: RuntimeSettings,
    report: BackendReport,
) -> Runner:
    import onnxruntime
    import torch

    directory = onnx_cache_dir(loaded, settings=settings, graph=name)
    path = directory / ONNX_FILE
    if path.exists():
        report.reused.append(name)
        log.info("backend onnxruntime: reusing the cached export of %s (%s)", name, path)
    else:
        started = time.perf_counter()
        try:
            export_onnx(graph, directory)
        except Exception as exc:
            raise LoadError(
                f"backend onnxruntime cannot export the {name} graph of "
                f"{loaded.source.original} to ONNX: {one_line(exc)}; use backend eager (or "
                "compile) for this model"
            ) from exc
        report.exported.append(name)
        log.info(
            "backend onnxruntime: exported %s to %s in %.1f s",
            name,
            path,
            time.perf_counter() - started,
        )
    report.files[name] = path
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    providers = onnx_providers(loaded.device, dtype=settings.dtype, cache_root=cache_root(settings))
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise LoadError(
            f"backend onnxruntime cannot open the export of {name} ({path}): {one_line(exc)}"
        ) from exc
    report.providers = list(session.get_providers())
    return OnnxRunner(session, loaded.device)
