"""MultimodalModels for the operator's unit tests: a model mid-rollout (``with_canary``) and
what an API server says of an object under the CRD schema (``crd_problems``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmop.devcluster.apiserver.validation import check_custom_object
from mmop.operator import models

WithCanary = Callable[..., models.MultimodalModel]


def with_canary(
    mm: models.MultimodalModel, *, weight: int, name: str = "v2", **spec_changes: Any
) -> models.MultimodalModel:
    stable = mm.spec.serving()
    spec = mm.spec.model_copy(update={"version": name, **spec_changes})
    out = mm.model_copy(update={"spec": spec})
    out.status = models.MultimodalModelStatus(
        stable_version=stable.version,
        stable_revision=stable.revision(),
        stable_spec=stable,
        canary_version=name,
        canary_revision=spec.revision(),
        canary_weight=weight,
    )
    return out


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
