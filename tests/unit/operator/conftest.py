"""Fixtures for the operator's unit tests: example documents, the generated CRD schema."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.devcluster.apiserver.validation import check_custom_object
from mmop.operator import crd, models

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


@pytest.fixture
def clip_doc() -> dict[str, Any]:
    return copy.deepcopy(load_example("clip.yaml"))


@pytest.fixture
def clip(clip_doc: dict[str, Any]) -> models.MultimodalModel:
    clip_doc["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    return models.parse_model(clip_doc)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


CrdCheck = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], list[Problem]]]


def crd_problems(
    schema: dict[str, Any], obj: dict[str, Any]
) -> tuple[dict[str, Any], list[Problem]]:
    """What an API server says of ``obj`` under a CRD schema (the embedded server's checks:
    unknown fields, defaults, structure, list types, CEL): (defaulted object, problems)."""
    obj = copy.deepcopy(obj)
    unknown, causes = check_custom_object(obj, schema)
    problems = [Problem(u, "unknown field") for u in unknown]
    problems += [Problem(c["field"], c["message"]) for c in causes]
    return obj, problems


@pytest.fixture(scope="session")
def crd_check() -> CrdCheck:
    return crd_problems


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema
