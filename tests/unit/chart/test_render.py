"""`helm template` of charts/mmop: every object valid for Kubernetes 1.35 (strict), and the
operator Deployment as the operator expects it (command, env, probes, hardening)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mmop.operator.settings import OperatorSettings
from mmop.runtime import contract

K8S_VERSION = "1.35.0"

# ServiceMonitor and PodMonitor are Prometheus Operator CRDs that kubernetes-validate does not
# know. They are checked against this subset of their monitoring.coreos.com/v1 schemas instead:
# the fields the chart uses, with additionalProperties off so that a misspelt field fails.
_DURATION = {
    "type": "string",
    "pattern": r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
    r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$",
}
_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
_NAMESPACE_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "any": {"type": "boolean"},
        "matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
}
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
    },
}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
}
MONITOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": _NAMESPACE_SELECTOR,
                    "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
                },
            },
        },
    },
    "PodMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": _NAMESPACE_SELECTOR,
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
                },
            },
        },
    },
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "full": {"full": True},
    "namespaced": {"values": {"watchNamespace": "team-a"}},
    "no-rbac-existing-sa": {
        "values": {
            "rbac.create": "false",
            "serviceAccount.create": "false",
            "serviceAccount.name": "ops",
        }
    },
    "monitoring-only": {
        "values": {
            "serviceMonitor.enabled": "true",
            "prometheusAdapter.rules.enabled": "true",
            "grafana.dashboard.enabled": "true",
        }
    },
}


def _render(helm, full_values: Path, scenario: dict[str, Any], **kwargs: Any):
    files = [full_values] if scenario.get("full") else []
    return helm.template(values=scenario.get("values"), values_files=files, **kwargs)


def validate(obj: dict[str, Any]) -> None:
    schema = MONITOR_SCHEMAS.get(obj["kind"])
    if schema is not None:
        jsonschema.validate(obj, schema)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_object_is_valid(helm, full_values: Path, scenario: dict[str, Any]) -> None:
    objects = _render(helm, full_values, scenario, include_crds=True)
    assert objects.one("CustomResourceDefinition")["metadata"]["name"] == "multimodalmodels.mmop.io"
    for obj in objects:
        validate(obj)


def test_the_validation_catches_mistakes() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {},
            "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"selector": {}, "podMetricEndpoints": [{"port": "http"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_default_objects(helm) -> None:
    objects = helm.template()
    assert objects.kinds() == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == helm.namespace


def test_full_values_objects(helm, full_values: Path) -> None:
    objects = helm.template(values_files=[full_values])
    assert objects.kinds() == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PodMonitor",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_crds_are_the_generated_file(helm, chart_dir: Path) -> None:
    crd = helm.template(include_crds=True).one("CustomResourceDefinition")
    generated = yaml.safe_load(
        (chart_dir.parent.parent / "crds" / "multimodalmodels.mmop.io.yaml").read_text()
    )
    assert crd == generated
    # `kubectl get mmmodels` works once helm has installed it.
    assert "mmmodels" in crd["spec"]["names"]["shortNames"]


# --- the Deployment ---------------------------------------------------------------------------


def _container(objects) -> dict[str, Any]:
    pod = objects.one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def test_one_replica_recreate(helm) -> None:
    spec = helm.template().one("Deployment")["spec"]
    # kopf runs standalone (no peering): two operator pods must never overlap.
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_command_runs_the_operator_in_all_namespaces_by_default(helm) -> None:
    container = _container(helm.template())
    assert container["command"] == ["mmop", "run"]
    assert "args" not in container


def test_watch_namespace_passes_namespace(helm) -> None:
    container = _container(helm.template(values={"watchNamespace": "team-a"}))
    assert container["command"] == ["mmop", "run"]
    assert container["args"] == ["--namespace", "team-a"]


def test_probes_hit_healthz_on_the_health_port(helm, full_values: Path) -> None:
    for objects, port in (
        (helm.template(), 8090),
        (helm.template(values_files=[full_values]), 9091),
    ):
        container = _container(objects)
        assert container["ports"] == [
            {"name": "http-metrics", "containerPort": port, "protocol": "TCP"}
        ]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MMOP_OPERATOR_HEALTH_PORT"] == str(port)


def test_hardened_pod_and_container(helm) -> None:
    pod = helm.template().one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # the only writable place is an emptyDir at /tmp
    assert pod["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"]
    assert pod["containers"][0]["resources"]["requests"]
    assert pod["containers"][0]["resources"]["limits"]["memory"]


def test_env_is_what_the_operator_reads(
    helm, full_values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every MMOP_OPERATOR_* variable the chart sets is a field of OperatorSettings, parsed to
    the value given in values (a misspelt name would be ignored by pydantic-settings)."""
    container = _container(helm.template(values_files=[full_values]))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    ours = {k: v for k, v in env.items() if k.startswith("MMOP_OPERATOR_")}
    fields = {f"MMOP_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(ours) <= fields, set(ours) - fields
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.cluster_domain == "corp.internal"
    assert settings.storage_initializer_image == (
        "registry.example.com/kserve/storage-initializer:v0.14.0"
    )
    assert settings.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert settings.resync_seconds == 45
    assert settings.rollout_tick_seconds == 2.5
    assert settings.http_timeout_seconds == 10
    assert settings.health_port == 9091
    assert env[contract.ENV_LOG_LEVEL] == "DEBUG"
    assert env["HTTPS_PROXY"] == "http://proxy.corp.internal:3128"  # operator.extraEnv


def test_default_env_matches_the_operators_defaults(helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's defaults are the operator's own: installing with default values changes
    nothing compared with running `mmop run` bare."""
    env = {e["name"]: e["value"] for e in _container(helm.template())["env"]}
    # No Prometheus by default: the operator then scrapes canary pods itself.
    assert "MMOP_OPERATOR_PROMETHEUS_URL" not in env
    for name in OperatorSettings.model_fields:
        monkeypatch.delenv(f"MMOP_OPERATOR_{name.upper()}", raising=False)
    defaults = OperatorSettings().model_dump()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert OperatorSettings().model_dump() == defaults
    assert env[contract.ENV_LOG_LEVEL] == "INFO"


def test_image_defaults_to_app_version(helm, chart_dir: Path) -> None:
    app_version = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["appVersion"]
    container = _container(helm.template())
    assert container["image"] == f"ghcr.io/mmop/operator:{app_version}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    container = _container(helm.template(values={"image.tag": "1.2.3"}))
    assert container["image"] == "ghcr.io/mmop/operator:1.2.3"


def test_scheduling_and_pod_metadata_values(helm, full_values: Path) -> None:
    objects = helm.template(values_files=[full_values])
    template = objects.one("Deployment")["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["affinity"]["nodeAffinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert template["metadata"]["annotations"] == {"example.com/team": "ml-platform"}
    assert template["metadata"]["labels"]["team"] == "ml-platform"
    assert _container(objects)["image"] == "registry.example.com/ml/mmop-operator:0.1.0-rc.1"
    assert _container(objects)["imagePullPolicy"] == "Always"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert key not in helm.template().one("Deployment")["spec"]["template"]["spec"]


def test_service_account_wiring(helm) -> None:
    objects = helm.template()
    sa = objects.one("ServiceAccount")["metadata"]["name"]
    assert objects.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa
    existing = helm.template(
        values={"serviceAccount.create": "false", "serviceAccount.name": "ops"}
    )
    assert not existing.kind("ServiceAccount")
    pod = existing.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"
    binding = existing.one("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ops", "namespace": helm.namespace}
    ]


def test_service_selects_the_operator_pod_and_port(helm) -> None:
    objects = helm.template()
    service = objects.one("Service")
    deployment = objects.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8090, "targetPort": "http-metrics", "protocol": "TCP"}
    ]


def test_chart_objects_never_look_like_the_operators_children(helm, full_values: Path) -> None:
    """managed-by: mmop marks the operator's children (the PodMonitor selects runtime pods by
    it); the chart's own objects say managed-by Helm."""
    for obj in helm.template(values_files=[full_values]):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_notes_tell_the_next_step(helm, chart_dir: Path) -> None:
    out = helm.run("install", "mmop", str(chart_dir), "--dry-run=client", "-n", helm.namespace)
    notes = out[out.index("NOTES:") :]
    assert "kubectl get mmmodels" in notes
    assert "kubectl apply -f examples/clip.yaml" in notes
    assert "rollout status deployment/mmop" in notes
    assert "kubectl apply --server-side" in notes  # CRDs on upgrade
