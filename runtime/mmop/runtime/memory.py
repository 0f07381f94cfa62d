"""The runtime's memory plan: request limits that fit the pod's memory limit.

The operator passes the container's memory limit (Downward API ``limits.memory`` as
``MMOP_MEMORY_LIMIT_BYTES``); without it the cgroup's limit is read. Once the model is loaded
and warmed up, what is left beside it is split between the bodies being received, the decoding
threads' transient buffers and the admitted requests. Admission then counts each request at
its worst-case cost (from its body's size) against that budget as well as against
``maxQueueSize``, so many small requests still queue while a few huge ones cannot exhaust the
pod (pure functions here; the data plane applies the plan). ``settle_heap`` is the one step
with a process-wide effect: it keeps the cyclic GC off the start-up heap once the model is ready.
"""

from __future__ import annotations

import gc
import os
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mmop.runtime import contract, media
from mmop.runtime.settings import RuntimeSettings

MIB: Final = 1024 * 1024
# Requests get this share of the limit minus the loaded model; the rest is headroom for the
# forward pass's activations, allocator fragmentation and the interpreter's own objects.
REQUEST_SHARE: Final = 0.8
# Bodies being received get a quarter of what requests may use (never less than one body).
RECEIVE_SHARE: Final = 0.25
# Without a known limit, this many largest bodies may be arriving at once.
RECEIVE_BODIES_UNBOUNDED: Final = 2
# The fewest body bytes one media item takes (the smallest GIF is 26 bytes, in base64 36): a
# body of n bytes holds at most n / 24 + 1 items that each become a preprocessed sample.
MIN_ITEM_BYTES: Final = 24
# A decoded image costs its RGB pixels about three times over (decoded, converted, the
# processor's numpy copy); a decoded clip its mono float32 samples, a float64 copy and the
# complex spectrum of resampling (24 bytes per sample at the highest accepted rate).
IMAGE_DECODE_BYTES_PER_PIXEL: Final = 9
AUDIO_DECODE_BYTES_PER_SAMPLE: Final = 24
# The cyclic GC's young-generation threshold once the model is loaded (CPython's default: 700
# net new container objects). A serving process's per-request objects die by reference count,
# so a collection at 700 mostly finds nothing to free (see ``settle_heap``).
GC_YOUNG_THRESHOLD: Final = 20_000
# No limit at all reads as a huge number in cgroup v1.
_UNLIMITED: Final = 1 << 60


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What requests may hold at once, and the worst case that adds up to (bytes)."""

    limit_bytes: int | None  # the pod's memory limit; None: unknown, nothing is derived
    baseline_bytes: int  # resident after the model loaded and warmed up
    queue_size: int  # admitted requests at once (the configured maxQueueSize)
    receive_bytes: int  # bodies being received, not yet admitted
    decode_bytes: int  # transient decoding buffers, all decoding threads together
    request_bytes: int  # one admitted request at worst: body, its parsed copy, its samples
    admit_bytes: int | None  # admitted requests' worst-case costs together; None: unbounded
    sample_bytes: int = 0  # the largest preprocessed sample (from the warm-up batch)
    max_items: int = 1

    @property
    def admitted_worst_bytes(self) -> int:
        """Admitted requests at worst: the budget (plus the one request always admitted into an
        empty queue), or every slot of the queue at the largest request."""
        if self.admit_bytes is None:
            return self.queue_size * self.request_bytes
        return min(self.admit_bytes + self.request_bytes, self.queue_size * self.request_bytes)

    @property
    def worst_case_bytes(self) -> int:
        return (
            self.baseline_bytes + self.receive_bytes + self.decode_bytes + self.admitted_worst_bytes
        )

    def request_cost(self, body_bytes: int) -> int:
        """The most memory an admitted request with a body of ``body_bytes`` can hold: the body,
        its parsed copy, and a preprocessed sample for each item the body can hold."""
        items = min(self.max_items, body_bytes // MIN_ITEM_BYTES + 1)
        return 2 * body_bytes + items * self.sample_bytes

    @property
    def fits(self) -> bool:
        return self.limit_bytes is None or self.worst_case_bytes <= self.limit_bytes

    def describe(self) -> str:
        def mib(value: int) -> str:
            return f"{value / MIB:.0f} MiB"

        limit = "unknown" if self.limit_bytes is None else mib(self.limit_bytes)
        admitted = "unbounded" if self.admit_bytes is None else mib(self.admit_bytes)
        return (
            f"memory limit {limit}: model {mib(self.baseline_bytes)}, admitted requests "
            f"{admitted} (queue {self.queue_size}, at most {mib(self.request_bytes)} each), "
            f"receiving {mib(self.receive_bytes)}, decoding {mib(self.decode_bytes)}; "
            f"worst case {mib(self.worst_case_bytes)}"
        )

    def metadata(self) -> dict[str, Any]:
        return {
            "memory_limit_bytes": self.limit_bytes,
            "max_queue_size": self.queue_size,
            "max_admitted_bytes": self.admit_bytes,
            "max_receiving_bytes": self.receive_bytes,
            "worst_case_memory_bytes": self.worst_case_bytes,
        }


def plan_memory(
    settings: RuntimeSettings,
    *,
    limit_bytes: int | None,
    baseline_bytes: int,
    sample_bytes: int,
    decoders: int | None = None,
) -> MemoryPlan:
    """Fit the request limits into ``limit_bytes`` beside a model using ``baseline_bytes``.

    ``sample_bytes`` is the largest preprocessed sample of the warm-up batch. Bodies being
    received always have room for one body of ``max_request_bytes``, and an empty queue always
    admits one request: a pod too small for that is served anyway, and ``fits`` says so.
    ``decoders``: requests decoded at once (default: the decoding threads; the worker
    processes when preprocessing runs in processes, whose own memory is in the baseline).
    """
    body = settings.max_request_bytes
    sample = max(sample_bytes, 1)
    request = 2 * body + settings.max_items_per_request * sample
    decoding = settings.preprocess_threads if decoders is None else decoders
    decode = decoding * (body + decode_bytes_per_item(settings))
    common: dict[str, Any] = {
        "baseline_bytes": baseline_bytes,
        "queue_size": settings.max_queue_size,
        "decode_bytes": decode,
        "request_bytes": request,
        "sample_bytes": sample,
        "max_items": settings.max_items_per_request,
    }
    if limit_bytes is None:
        return MemoryPlan(
            limit_bytes=None,
            receive_bytes=RECEIVE_BODIES_UNBOUNDED * body,
            admit_bytes=None,
            **common,
        )
    for_requests = int(limit_bytes * REQUEST_SHARE) - baseline_bytes - decode
    receive = max(body, int(for_requests * RECEIVE_SHARE))
    admit = max(0, for_requests - receive - request)  # room for the one always admitted
    return MemoryPlan(limit_bytes=limit_bytes, receive_bytes=receive, admit_bytes=admit, **common)


def decode_bytes_per_item(settings: RuntimeSettings) -> int:
    """The transient memory of decoding one input item at the limits (one decoding thread)."""
    if settings.task == contract.TASK_ASR:
        samples = int(settings.max_audio_seconds * media.MAX_AUDIO_SAMPLE_RATE)
        return AUDIO_DECODE_BYTES_PER_SAMPLE * samples
    return IMAGE_DECODE_BYTES_PER_PIXEL * settings.max_image_pixels


def memory_limit(
    configured: int | None,
    *,
    v2: Path = Path("/sys/fs/cgroup/memory.max"),
    v1: Path = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
) -> int | None:
    """The memory limit: the configured one (from the operator), else the cgroup's, else None."""
    if configured is not None:
        return configured
    for path in (v2, v1):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if 0 < value < _UNLIMITED else None
    return None


def settle_heap() -> None:
    """Once the model is loaded and warmed up: keep the cyclic GC off the start-up heap.

    Importing torch and transformers and loading the model leave about 400,000 objects that
    the GC tracks (the tiny CLIP's serving process); without this, every full collection walks
    them all with the GIL held, 120-190 ms each, every couple of seconds under load, and each
    one stalls every request (docs/benchmarks.md, issue 13 item 2, "Freezing the start-up
    heap"). ``gc.freeze`` moves them to the permanent generation, as vLLM does once its engine
    is up, and the young generation's threshold is raised to ``GC_YOUNG_THRESHOLD``. Reference
    counting still frees everything as before; only garbage in cycles waits longer (for the next
    collection, or for ``release_heap``).
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)


def release_heap() -> None:
    """Undo ``settle_heap``'s freeze (the model is closed): what it froze can be collected."""
    gc.unfreeze()


def resident_bytes(pid: int | None = None) -> int:
    """This process's (or process ``pid``'s) resident memory now (Linux), else this process's
    peak so far."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def data_bytes(data: Any) -> int:
    """The size of a preprocessed sample: tensors and arrays by their buffers, text by length."""
    if isinstance(data, Mapping):
        return sum(data_bytes(value) for value in data.values())
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return sum(data_bytes(value) for value in data)
    if isinstance(data, str | bytes):
        return len(data)
    nbytes = getattr(data, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    element_size, count = getattr(data, "element_size", None), getattr(data, "nelement", None)
    if callable(element_size) and callable(count):  # a torch tensor
        return int(element_size()) * int(count())
    return 64
