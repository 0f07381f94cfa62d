"""crd.py: the committed CRD is what the models generate, structural, with the design's names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.operator import crd, models
from tests.support.models import CrdCheck

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_committed_crds_match_the_models() -> None:
    assert crd.stale_crds(ROOT) == [], "run `mmop crd` and commit the result"


def test_stale_file_is_detected(tmp_path: Path) -> None:
    crd.write_crds(tmp_path)
    assert crd.stale_crds(tmp_path) == []
    target = crd.crd_targets(tmp_path)[1]
    target.write_text(target.read_text().replace("maxBatchSize", "maxBatch"))
    assert crd.stale_crds(tmp_path) == [target]


def test_names_and_columns() -> None:
    spec = crd.build_crd()["spec"]
    assert spec["group"] == "mmop.io"
    assert spec["names"]["plural"] == "multimodalmodels"
    assert spec["names"]["singular"] == "multimodalmodel"
    assert {"mmm", "mmmodel"} <= set(spec["names"]["shortNames"])
    assert spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert "status" in version["subresources"]
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["READY", "PHASE", "STABLE", "CANARY", "WEIGHT", "REPLICAS", "URL", "AGE"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in (node.get("properties") or {}).items():
            out += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_schema_is_structural_and_documented() -> None:
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            assert forbidden not in node, f"{path} has {forbidden}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
    for path, node in _walk(schema["properties"]["spec"]):
        leaf = path.rsplit(".", 1)[-1]
        if path and not path.endswith(("[]", "}")) and leaf not in ("valueFrom",):
            assert node.get("description"), f"spec{path} has no description for kubectl explain"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(example: Path, crd_check: CrdCheck) -> None:
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in yaml.safe_load_all(example.read_text()):
        _, problems = crd_check(schema, doc)
        assert problems == []
        models.parse_model(doc)
