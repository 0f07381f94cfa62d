"""Fixtures for the operator's unit tests: example documents, the generated CRD schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mmop.operator import crd, models
from tests.support.manifests import load_example
from tests.support.models import CrdCheck, crd_problems


@pytest.fixture
def clip_doc() -> dict[str, Any]:
    return copy.deepcopy(load_example("clip.yaml"))


@pytest.fixture
def clip(clip_doc: dict[str, Any]) -> models.MultimodalModel:
    clip_doc["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    return models.parse_model(clip_doc)


@pytest.fixture(scope="session")
def crd_check() -> CrdCheck:
    return crd_problems


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema
