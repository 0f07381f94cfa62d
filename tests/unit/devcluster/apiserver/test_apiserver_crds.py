"""CRDs: what makes one unacceptable, and the served type built from one."""

from __future__ import annotations

import copy
from typing import Any

from mmop.devcluster.apiserver import crds

CRD: dict[str, Any] = {
    "metadata": {"name": "things.example.com", "uid": "u1"},
    "spec": {
        "group": "example.com",
        "scope": "Cluster",
        "names": {"plural": "things", "kind": "Thing", "shortNames": ["th"], "categories": ["all"]},
        "versions": [
            {"name": "v1alpha1", "served": True, "storage": False},
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.size",
                        "statusReplicasPath": ".status.size",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "selectableFields": [{"jsonPath": ".spec.color"}],
            },
            {"name": "v1beta1", "served": True, "storage": False},
            {"name": "v0", "served": False, "storage": False},
        ],
    },
}


def test_resource_type_orders_versions_and_reads_subresources() -> None:
    rtype = crds.resource_type(CRD)
    assert [v.name for v in rtype.versions] == ["v1", "v1beta1", "v1alpha1"]
    assert rtype.key == ("example.com", "things") and not rtype.namespaced and not rtype.builtin
    assert rtype.short_names == ("th",) and rtype.categories == ("all",)
    v1 = rtype.preferred
    assert v1.status and v1.scale is not None and v1.scale.spec_replicas_path == ".spec.size"
    assert rtype.supports_field("spec.color", v1) and not rtype.supports_field("spec.size", v1)
    assert not rtype.version("v1alpha1").status  # type: ignore[union-attr]


def test_problems() -> None:
    assert crds.problems(CRD) == []
    bad = copy.deepcopy(CRD)
    bad["metadata"]["name"] = "wrong"
    bad["spec"]["group"] = "nodots"
    bad["spec"]["scope"] = "Galaxy"
    bad["spec"]["versions"][0]["storage"] = True
    fields = sorted(c["field"] for c in crds.problems(bad))
    assert fields == ["metadata.name", "spec.group", "spec.scope", "spec.versions"]


def test_accepted_status_keeps_transition_times_and_stored_versions() -> None:
    first = crds.accepted_status(CRD, None)
    assert {c["type"]: c["status"] for c in first["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }
    assert first["storedVersions"] == ["v1"]
    old = copy.deepcopy(first)
    for c in old["conditions"]:
        c["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    old["storedVersions"] = ["v1alpha1"]
    again = crds.accepted_status(CRD, old)
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2020-01-01T00:00:00Z"}
    assert again["storedVersions"] == ["v1alpha1", "v1"]
