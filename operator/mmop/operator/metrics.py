"""The operator's own Prometheus metrics (one registry per operator, passed down)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "mmop_operator_reconciles",
            "Reconcile passes by result (ok, invalid, error)",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "mmop_operator_reconcile_duration_seconds",
            "Time of one reconcile pass",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.decisions = Counter(
            "mmop_operator_rollout_decisions",
            "Rollout state machine decisions by action",
            ["action"],
            registry=self.registry,
        )
        self.models = Gauge(
            "mmop_operator_models",
            "MultimodalModels with a running reconcile loop",
            registry=self.registry,
        )
        self.last_loop = Gauge(
            "mmop_operator_last_loop_timestamp_seconds",
            "When a reconcile loop last completed a pass",
            registry=self.registry,
        )
