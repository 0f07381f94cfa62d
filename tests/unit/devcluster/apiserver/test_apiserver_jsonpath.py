"""The JSONPath subset of printer columns."""

from __future__ import annotations

import pytest

from mmop.devcluster.apiserver import jsonpath

OBJ = {
    "metadata": {"name": "x", "labels": {"app.kubernetes.io/name": "clip"}},
    "spec": {"steps": [10, 25, 100], "replicas": 3},
    "status": {
        "conditions": [
            {"type": "Progressing", "status": "False"},
            {"type": "Ready", "status": "True", "observedGeneration": 2},
        ]
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.replicas", 3),
        ("{.spec.replicas}", 3),
        ("$.spec.replicas", 3),
        (".spec.steps[0]", 10),
        (".spec.steps[-1]", 100),
        (".spec.steps[*]", 10),
        ('.status.conditions[?(@.type=="Ready")].status', "True"),
        (".status.conditions[?(@.type=='Progressing')].status", "False"),
        (".status.conditions[?(@.observedGeneration==2)].type", "Ready"),
        (".status.conditions[?(@.observedGeneration)].type", "Ready"),
        (".status.conditions[?(@.type!='Ready')].type", "Progressing"),
        (r".metadata.labels.app\.kubernetes\.io/name", "clip"),
        (".metadata.labels['app.kubernetes.io/name']", "clip"),
        (".status.missing", None),
        (".spec.steps[7]", None),
        ('.status.conditions[?(@.type=="Nope")].status', None),
    ],
)
def test_first(path: str, expected: object) -> None:
    assert jsonpath.first(path, OBJ) == expected


def test_all_results() -> None:
    steps = jsonpath.compile_path(".spec.steps[*]")
    assert jsonpath.evaluate(steps, OBJ) == [10, 25, 100]


@pytest.mark.parametrize("path", [".spec[", ".spec[?(@.a>1)]", "spec"])
def test_unsupported(path: str) -> None:
    with pytest.raises(jsonpath.JsonPathError):
        jsonpath.compile_path(path)
