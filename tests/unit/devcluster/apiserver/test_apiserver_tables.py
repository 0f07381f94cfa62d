"""Table printing: durations, CRD printer columns, built-in columns."""

from __future__ import annotations

import datetime

import pytest

from mmop.devcluster.apiserver import builtins, crds, tables

CRD = {
    "metadata": {"name": "widgets.example.com", "uid": "u"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wdg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "additionalPrinterColumns": [
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                    {
                        "name": "Weight",
                        "type": "number",
                        "jsonPath": ".status.weight",
                        "priority": 1,
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (9 * 3600, "9h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 3600, "2d1h"),
        (10 * 86400, "10d"),
        (3 * 365 * 86400, "3y"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


def _ago(seconds: int) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_crd_columns() -> None:
    rtype = crds.resource_type(CRD)
    obj = {
        "metadata": {"name": "w1", "creationTimestamp": _ago(300)},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "replicas": 3,
            "weight": 2.5,
        },
    }
    table = tables.table(rtype, rtype.preferred, [obj], list_meta={"resourceVersion": "7"})
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Ready", "Replicas", "Weight", "Age"]
    assert table["columnDefinitions"][3]["priority"] == 1
    assert table["rows"][0]["cells"] == ["w1", "True", 3, 2.5, "5m"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    empty = tables.table(
        rtype, rtype.preferred, [{"metadata": {"name": "w2"}}], list_meta={}, include_object="None"
    )
    assert empty["rows"] == [{"cells": ["w2", None, None, None, None]}]


def test_crd_without_columns_shows_age() -> None:
    crd = {
        **CRD,
        "spec": {**CRD["spec"], "versions": [{"name": "v1", "served": True, "storage": True}]},
    }
    rtype = crds.resource_type(crd)
    columns, _ = tables.printer(rtype, rtype.preferred)
    assert [c["name"] for c in columns] == ["Name", "Age"]


def _builtin(plural: str, group: str = "") -> tables.Cells:
    rtype = next(t for t in builtins.BUILTIN_TYPES if t.key == (group, plural))
    return tables.printer(rtype, rtype.preferred)[1]


def test_pod_and_deployment_cells() -> None:
    pod = {
        "metadata": {"creationTimestamp": _ago(10)},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.5",
            "containerStatuses": [
                {"ready": True, "restartCount": 1, "state": {"running": {}}},
                {
                    "ready": False,
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                },
            ],
        },
    }
    assert _builtin("pods")(pod) == ["1/2", "CrashLoopBackOff", 3, "10s", "127.0.0.5", "n1"]
    deploy = {
        "metadata": {"creationTimestamp": _ago(10)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert _builtin("deployments", "apps")(deploy) == ["2/3", 3, 2, "10s", "c", "i:1", "app=x"]
