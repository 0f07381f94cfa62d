"""values.schema.json: a draft-07 schema for every value; bad values fail `helm template` and
`helm install` with a message that names the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

BAD_VALUES: list[tuple[dict[str, str], dict[str, str], list[str]]] = [
    # (--set, --set-string, what the message must say)
    ({"operator.logLevel": "LOUD"}, {}, ["/operator/logLevel", "value must be one of", "'INFO'"]),
    ({"watchNamespace": "Team_A"}, {}, ["/watchNamespace", "does not match pattern"]),
    ({"operator.resyncSeconds": "0"}, {}, ["/operator/resyncSeconds", "minimum"]),
    ({"operator.healthPort": "80"}, {}, ["/operator/healthPort", "minimum"]),
    ({"image.pullPolicy": "Sometimes"}, {}, ["/image/pullPolicy", "value must be one of"]),
    ({"serviceMonitor.interval": "1.5s"}, {}, ["/serviceMonitor/interval", "does not match"]),
    ({}, {"serviceMonitor.enabled": "yes"}, ["/serviceMonitor/enabled", "want boolean"]),
    (
        {"prometheusAdapter.rules.gpuUtilizationSource": "nvml"},
        {},
        ["/prometheusAdapter/rules/gpuUtilizationSource", "value must be one of"],
    ),
    (
        {"prometheusAdapter.rules.dcgm.podLabel": "exported-pod"},
        {},
        ["/prometheusAdapter/rules/dcgm/podLabel", "does not match pattern"],
    ),
    ({"operator.prometheusUrl": "prometheus:9090"}, {}, ["/operator/prometheusUrl"]),
    # one operator pod only: there is no replica count to set
    ({"replicaCount": "2"}, {}, ["additional properties 'replicaCount' not allowed"]),
    ({"operator.resync": "10"}, {}, ["/operator", "additional properties 'resync' not allowed"]),
]


def _ids() -> list[str]:
    return [next(iter({**s, **ss})) for s, ss, _ in BAD_VALUES]


@pytest.mark.parametrize(("values", "string_values", "expected"), BAD_VALUES, ids=_ids())
def test_helm_template_refuses_bad_values(
    helm, values: dict[str, str], string_values: dict[str, str], expected: list[str]
) -> None:
    message = helm.template_error(values=values, string_values=string_values)
    assert "values don't meet the specifications of the schema" in message
    for part in expected:
        assert part in message, message


def test_helm_install_refuses_bad_values(helm, chart_dir: Path) -> None:
    with pytest.raises(helm.Error, match="/operator/logLevel"):
        helm.run(
            "install", "mmop", str(chart_dir), "--dry-run=client", "--set", "operator.logLevel=LOUD"
        )


def test_latest_tag_is_refused(helm) -> None:
    message = helm.template_error(values={"image.tag": "latest"})
    assert 'image.tag: "latest" is not allowed: pin a version' in message


def test_good_values_pass(helm, full_values: Path) -> None:
    assert helm.template(values_files=[full_values])
    assert helm.template(
        values={
            "operator.resyncSeconds": "45",
            "watchNamespace": "ml-1",
            "serviceMonitor.interval": "1m30s",
        }
    )


def _schema(chart_dir: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((chart_dir / "values.schema.json").read_text())
    return schema


def test_schema_is_draft_07_and_accepts_the_defaults(chart_dir: Path, full_values: Path) -> None:
    schema = _schema(chart_dir)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert not list(validator.iter_errors(defaults))
    full = _merged(defaults, yaml.safe_load(full_values.read_text()))
    assert not list(validator.iter_errors(full))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over values.yaml (maps merge, anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict) and value:
            out += _leaves(value, path)
        else:
            out.append(path)
    return out


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in path.strip("/").split("/"):
        props = (node or {}).get("properties")
        if props is None:
            return node if (node or {}).get("type") == "object" else None
        node = props.get(part)
        if node is None:
            return None
    return node


def test_every_value_is_typed_and_described(chart_dir: Path) -> None:
    """Each value in values.yaml (and full values) has a schema entry with a type and a
    description; objects are closed (additionalProperties false) unless they are free maps
    (labels, annotations, Kubernetes pass-throughs)."""
    schema = _schema(chart_dir)
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    missing = []
    for path in _leaves(defaults):
        node = _schema_at(schema, path)
        if node is None or ("type" not in node and "oneOf" not in node):
            missing.append(path)
        elif "properties" not in node and "description" not in node:
            missing.append(f"{path} (no description)")
    assert not missing, missing
    assert schema["additionalProperties"] is False
