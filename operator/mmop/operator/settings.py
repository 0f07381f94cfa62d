"""Typed operator settings, read once from the environment (MMOP_*) and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class BuildOptions:
    """What the pure builders need beyond the MultimodalModel itself."""

    cluster_domain: str = "cluster.local"
    storage_initializer_image: str = "kserve/storage-initializer:v0.14.0"
    # Extra seconds for the startup probe beyond the rollout's progress deadline are pointless:
    # the operator gives up on a canary at the deadline anyway.
    probe_period_seconds: int = 10
    startup_budget_seconds: int = 3600
    """How long the startup probe lets a pod download and load its model."""
    allow_fault_env: bool = False
    """Pass MMOP_FAULT_* from spec.runtime.env to the runtime (tests and mmop dev only)."""


class OperatorSettings(BaseSettings):
    """Settings of the operator process."""

    model_config = SettingsConfigDict(env_prefix="MMOP_OPERATOR_", extra="ignore")

    namespace: str | None = None
    """Watch one namespace; None watches all."""
    cluster_domain: str = "cluster.local"
    storage_initializer_image: str = "kserve/storage-initializer:v0.14.0"
    prometheus_url: str | None = None
    """When set, canary analysis queries Prometheus instead of scraping the canary pods."""
    resync_seconds: float = Field(default=30.0, gt=0)
    """Level-based resync period of every MultimodalModel."""
    rollout_tick_seconds: float = Field(default=5.0, gt=0)
    """How often the rollout driver looks at a model with a canary in flight."""
    health_port: int = 8090
    """Liveness and Prometheus metrics of the operator itself."""
    http_timeout_seconds: float = Field(default=5.0, gt=0)
    """Timeout for calls to runtime pods (test inference, /metrics)."""
    api_max_in_flight: int = Field(default=8, ge=1, le=1000)
    """Concurrent requests to the API server (watches not counted); more wait their turn."""
    allow_fault_env: bool = False
    """Accept MMOP_FAULT_* (fault injection) in spec.runtime.env; otherwise InvalidSpec."""
    probe_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """The most the operator reads of one runtime pod or Prometheus answer; more is an error."""
    probe_connections_per_model: int = Field(default=4, ge=1, le=64)
    """Concurrent connections to one model's pods (one model's slow pods cannot starve the
    checks of another)."""
    hub_endpoint: str = "https://huggingface.co"
    """The Hugging Face hub used to pin an hf:// revision to a commit (HF_ENDPOINT mirrors)."""
    hub_token: str | None = None
    """Token for private hub repositories when pinning revisions."""
    pin_hub_revisions: bool = True
    """Resolve an hf:// branch or tag to a commit before a revision is first deployed; off:
    pods download the branch as written (their weights can differ)."""

    def build_options(self) -> BuildOptions:
        return BuildOptions(
            cluster_domain=self.cluster_domain,
            storage_initializer_image=self.storage_initializer_image,
            allow_fault_env=self.allow_fault_env,
        )
