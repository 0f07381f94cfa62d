"""builders/deployment.py with spec.pod and spec.scheduling.topologySpreadConstraints: what a
real cluster's pods commonly need, rendered into the pod template (golden YAML of the example)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mmop.operator import models
from mmop.operator.builders import deployment
from mmop.operator.builders.children import build_children
from mmop.operator.builders.plan import plan_versions
from mmop.operator.settings import BuildOptions

ROOT = Path(__file__).resolve().parents[4]
EXAMPLE = ROOT / "examples" / "clip-s3-irsa.yaml"
GOLDEN = Path(__file__).parent / "golden" / "clip-s3-irsa.yaml"


def _model(**pod: Any) -> models.MultimodalModel:
    doc = yaml.safe_load(EXAMPLE.read_text())
    if pod:
        doc["spec"]["pod"] = pod
    return models.parse_model(doc)


def _template(mm: models.MultimodalModel) -> dict[str, Any]:
    dep = deployment.build_deployment(mm, plan_versions(mm)[0], options=BuildOptions())
    template: dict[str, Any] = dep["spec"]["template"]
    return template


def test_example_matches_golden() -> None:
    rendered = yaml.safe_dump_all(build_children(_model(), options=BuildOptions()), sort_keys=False)
    if os.environ.get("MMOP_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()


def test_pod_fields_are_rendered() -> None:
    template = _template(_model())
    pod = template["spec"]
    assert pod["serviceAccountName"] == "clip-reader"
    assert pod["imagePullSecrets"] == [{"name": "acme-registry"}]
    assert pod["automountServiceAccountToken"] is False
    assert template["metadata"]["labels"]["team"] == "search"
    assert template["metadata"]["labels"]["mmop.io/version"] == "2026-01"
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "true"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_security_overrides_stay_in_the_safe_set() -> None:
    pod = _template(_model())["spec"]
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (2000, 2000, 2000)
    assert sc["supplementalGroups"] == [3000]
    assert sc["runAsNonRoot"] is True
    for container in [*pod["containers"], *pod["initContainers"]]:
        csc = container["securityContext"]
        assert (csc["runAsUser"], csc["runAsGroup"]) == (2000, 2000)
        assert csc["runAsNonRoot"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["capabilities"] == {"drop": ["ALL"]}


def test_defaults_without_pod_settings() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    del doc["spec"]["pod"]
    pod = _template(models.parse_model(doc))["spec"]
    assert "serviceAccountName" not in pod and "imagePullSecrets" not in pod
    assert pod["securityContext"]["runAsUser"] == deployment.RUN_AS_USER


def test_spread_selects_the_version_when_no_selector_is_given() -> None:
    pod = _template(_model())["spec"]
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {"mmop.io/model": "clip-s3", "mmop.io/version": "2026-01"}
            },
        }
    ]


def test_pod_settings_change_the_revision_but_absent_ones_do_not() -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    del doc["spec"]["pod"]
    del doc["spec"]["scheduling"]
    bare = models.parse_model(doc).spec
    # An object written before these fields existed keeps its revision (no surprise rollout).
    assert "pod" not in bare.serving().wire()
    assert "topologySpreadConstraints" not in bare.serving().wire()["scheduling"]
    with_pod = models.parse_spec({**doc["spec"], "pod": {"serviceAccountName": "x"}})
    assert with_pod.revision() != bare.revision()
