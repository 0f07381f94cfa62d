"""Prometheus metrics of one runtime server, in a registry of its own (no global collectors).

Names come from ``contract`` so that the operator's canary analysis and the chart's
prometheus-adapter rules read what the runtime writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

from mmop.runtime import contract

# Fine enough to read a p99 anywhere between 5 ms and 30 s (each step at most ~1.5x).
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class Metrics:
    """The collectors of one server; ``render()`` is the ``/metrics`` body."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        labels = [contract.LABEL_MODEL]
        self.requests = Counter(
            contract.METRIC_REQUESTS,
            "Requests answered (HTTP and gRPC), by endpoint and status code",
            [contract.LABEL_MODEL, contract.LABEL_ENDPOINT, contract.LABEL_CODE],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            contract.METRIC_REQUEST_DURATION,
            "Time from request start to response start, by endpoint",
            [contract.LABEL_MODEL, contract.LABEL_ENDPOINT],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            contract.METRIC_QUEUE_DEPTH,
            "Inference requests admitted and not yet answered (429 beyond max_queue_size)",
            labels,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            contract.METRIC_QUEUE_WAIT,
            "Time a sample waited in the batch queue before its forward pass",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            contract.METRIC_BATCH_SIZE,
            "Samples per forward pass",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            contract.METRIC_INFERENCE_DURATION,
            "Duration of one forward pass (a whole batch)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            contract.METRIC_REJECTED,
            "Requests refused without inference, by reason",
            [contract.LABEL_MODEL, "reason"],
            registry=self.registry,
        )
        self.model_load = Gauge(
            contract.METRIC_MODEL_LOAD,
            "Seconds the model took to load (0 until loaded)",
            labels,
            registry=self.registry,
        )
        self.gpu_utilization = Gauge(
            contract.METRIC_GPU_UTILIZATION,
            "GPU utilization of this server's device (0 without a GPU)",
            labels,
            registry=self.registry,
        )
        self.gpu_memory_used = Gauge(
            contract.METRIC_GPU_MEMORY_USED,
            "GPU memory used on this server's device (0 without a GPU)",
            labels,
            registry=self.registry,
        )
        self.receiving = Gauge(
            contract.METRIC_RECEIVING,
            "Inference requests whose body is arriving (not yet admitted to the queue)",
            labels,
            registry=self.registry,
        )
        self._receiving = self.receiving.labels(model)
        self.preprocess_workers_replaced = Counter(
            contract.METRIC_PREPROCESS_WORKERS_REPLACED,
            "Times the preprocessing worker processes were replaced because one of them died",
            labels,
            registry=self.registry,
        )
        self._preprocess_workers_replaced = self.preprocess_workers_replaced.labels(model)
        # Quality gate (mirroring, on a canary): labels as the operator reads them, no model.
        self.quality_score = Summary(
            contract.METRIC_QUALITY_SCORE,
            "Scores of the canary's answers against stable's, one per compared batch item",
            [contract.LABEL_METRIC],
            registry=self.registry,
        )
        self.mirror_requests = Counter(
            contract.METRIC_MIRROR_REQUESTS,
            "Requests sampled for mirroring to stable, by result",
            [contract.LABEL_RESULT],
            registry=self.registry,
        )
        self._queue_depth = self.queue_depth.labels(model)
        self._queue_wait = self.queue_wait.labels(model)
        self._batch_size = self.batch_size.labels(model)
        self._inference = self.inference_duration.labels(model)
        self.gpu_utilization.labels(model).set(0)
        self.gpu_memory_used.labels(model).set(0)
        self.model_load.labels(model).set(0)

    # --- recording ----------------------------------------------------------------------------

    def observe_request(self, *, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(self.model, endpoint, str(code)).inc()
        self.request_duration.labels(self.model, endpoint).observe(seconds)

    def observe_rejected(self, reason: str) -> None:
        self.rejected.labels(self.model, reason).inc()

    def add_receiving(self, change: int) -> None:
        self._receiving.inc(change)

    def count_preprocess_workers_replaced(self) -> None:
        self._preprocess_workers_replaced.inc()

    def set_queue_depth(self, depth: int) -> None:
        self._queue_depth.set(depth)

    def observe_batch(self, *, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._inference.observe(seconds)

    def observe_queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def set_model_load_seconds(self, seconds: float) -> None:
        self.model_load.labels(self.model).set(seconds)

    def watch_gpu(
        self, *, utilization: Callable[[], float], memory_used: Callable[[], float]
    ) -> None:
        """Read the GPU gauges at scrape time."""
        self.gpu_utilization.labels(self.model).set_function(utilization)
        self.gpu_memory_used.labels(self.model).set_function(memory_used)

    def init_mirror(self, metric: str) -> None:
        """Expose the mirror's series at 0 from the start (a missing series is not a zero)."""
        self.quality_score.labels(metric)
        for result in contract.MIRROR_RESULTS:
            self.mirror_requests.labels(result)

    def observe_quality(self, metric: str, scores: list[float]) -> None:
        child = self.quality_score.labels(metric)
        for score in scores:
            child.observe(score)

    def count_mirror(self, result: str) -> None:
        self.mirror_requests.labels(result).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def cuda_probes(device_index: int) -> tuple[Callable[[], float], Callable[[], float]]:
    """Scrape-time readers of GPU utilization (%) and memory used (bytes); 0 when unavailable."""

    def utilization() -> float:
        import torch

        try:
            return float(torch.cuda.utilization(device_index))
        except Exception:  # no NVML (pynvml) or no permission: report 0, never fail a scrape
            return 0.0

    def memory_used() -> float:
        import torch

        try:
            free, total = torch.cuda.mem_get_info(device_index)
            return float(total - free)
        except Exception:
            try:
                return float(torch.cuda.memory_reserved(device_index))
            except Exception:
                return 0.0

    return utilization, memory_used
