"""Suite-wide fixtures and the folder -> marker rule (tests/unit -> unit, ...)."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_SCHEMAS = ROOT.parent / "shared" / "schemas"
TOOLS_BIN = ROOT / ".tools" / "bin"

_FOLDER_MARKERS = {
    "unit": pytest.mark.unit,
    "integration": pytest.mark.integration,
    "e2e": pytest.mark.e2e,
    "reliability": pytest.mark.reliability,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        marker = _FOLDER_MARKERS.get(parts[0]) if parts else None
        if marker is not None:
            item.add_marker(marker)
        if item.get_closest_marker("gpu") is not None and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _tool(name: str) -> str:
    """Real kubectl/helm: .tools/bin (scripts/fetch-k8s-tools) or PATH. Missing -> a failure,
    never a skip: CI fetches them, so a missing binary is a broken set-up."""
    candidate = TOOLS_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found: run scripts/fetch-k8s-tools", pytrace=False)


@pytest.fixture(autouse=True)
def _cyclic_gc_restored() -> Iterator[None]:
    """Loading a model in process freezes the heap and raises the GC threshold
    (``mmop.runtime.memory.settle_heap``); the next test starts from the usual GC again."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    return _tool("kubectl")


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The distribution's prometheus (scripts/setup installs it where it can). Absent: a skip
    on a developer's machine, a failure in CI (CI set), where the tests must run."""
    from mmop.devcluster import prometheus

    found = prometheus.find_binary()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"prometheus not found in CI: {prometheus.INSTALL_HINT}", pytrace=False)
    pytest.skip(f"prometheus not found: {prometheus.INSTALL_HINT}")


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(f"third-party CRD schemas not found at {SHARED_SCHEMAS}")
    return SHARED_SCHEMAS


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
