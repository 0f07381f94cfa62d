"""Every builder's output is an object a real cluster accepts: built-ins checked with
kubernetes-validate --strict against Kubernetes 1.35, routes against the Istio and Gateway API
CRD schemas (structure and CEL)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mmop.operator import models
from mmop.operator.builders.children import build_children
from mmop.operator.settings import BuildOptions
from tests.support.models import WithCanary, crd_problems

K8S_VERSION = "1.35.0"
ROOT = Path(__file__).resolve().parents[4]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
ROUTE_KINDS = {"VirtualService", "DestinationRule", "HTTPRoute"}


@pytest.fixture(scope="module")
def route_schemas(shared_schemas: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name in ("istio-networking-crds.yaml", "gateway-api-httproutes-crd.yaml"):
        for doc in yaml.safe_load_all((shared_schemas / name).read_text()):
            if not doc:
                continue
            for version in doc["spec"]["versions"]:
                key = (f"{doc['spec']['group']}/{version['name']}", doc["spec"]["names"]["kind"])
                out[key] = version["schema"]["openAPIV3Schema"]
    return out


def _check(obj: dict[str, Any], route_schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    if obj["kind"] in ROUTE_KINDS:
        schema = route_schemas[(obj["apiVersion"], obj["kind"])]
        _, problems = crd_problems(schema, obj)
        assert problems == [], f"{obj['kind']} {obj['metadata']['name']}: {problems}"
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _load(name: str) -> models.MultimodalModel:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    doc["metadata"]["uid"] = "0b7c3e3c-6f9f-4a51-9b8e-5f0f3f1d2a10"
    return models.parse_model(doc)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("weight", [None, 0, 25, 100])
def test_children_are_valid(
    example: str,
    weight: int | None,
    with_canary: WithCanary,
    route_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    mm = _load(example)
    if weight is not None:
        mm = with_canary(mm, weight=weight)
    objects = build_children(mm, options=BuildOptions())
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service"} <= kinds
    for obj in objects:
        _check(obj, route_schemas)


def test_the_validators_catch_mistakes(
    clip: models.MultimodalModel, route_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """Guard against a vacuous check: broken objects must fail."""
    objects = {o["kind"]: o for o in build_children(clip, options=BuildOptions())}
    broken_deployment = copy.deepcopy(objects["Deployment"])
    broken_deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = (
        "eight thousand"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken_deployment, K8S_VERSION, strict=True)
    unknown_field = copy.deepcopy(objects["Service"])
    unknown_field["spec"]["weight"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown_field, K8S_VERSION, strict=True)
    broken_vs = copy.deepcopy(objects["VirtualService"])
    broken_vs["spec"]["http"][0]["route"][0]["weight"] = "all"
    with pytest.raises(AssertionError):
        _check(broken_vs, route_schemas)
