"""The chart's Prometheus, prometheus-adapter and Grafana pieces read what the runtime writes
(mmop.runtime.contract) and serve what the operator's HPAs ask for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from mmop.operator import cli, naming
from mmop.operator.settings import BuildOptions
from mmop.runtime import contract

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = {"prometheusAdapter.rules.enabled": "true"}
MONITORS = {"serviceMonitor.enabled": "true"}
DASHBOARD = {"grafana.dashboard.enabled": "true"}


def _example_children() -> list[dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "examples" / "clip.yaml").read_text())
    return cli.render(doc, options=BuildOptions())


def _adapter_rules(helm, **values: str) -> list[dict[str, Any]]:
    cm = helm.template(values={**ADAPTER, **values}).one("ConfigMap")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert set(config) == {"rules"}
    rules: list[dict[str, Any]] = config["rules"]
    return rules


def _rule_named(rules: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (rule,) = [r for r in rules if r["name"]["as"] == name]
    return rule


# --- prometheus-adapter ------------------------------------------------------------------------


def test_adapter_rules_are_off_by_default(helm) -> None:
    assert not helm.template().kind("ConfigMap")


def test_adapter_serves_every_pods_metric_the_hpas_use(helm) -> None:
    hpa_metrics = {
        m["pods"]["metric"]["name"]
        for obj in _example_children()
        if obj["kind"] == "HorizontalPodAutoscaler"
        for m in obj["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    assert hpa_metrics == {contract.METRIC_REQUESTS_PER_SECOND, contract.METRIC_GPU_UTILIZATION}
    served = [r["name"]["as"] for r in _adapter_rules(helm)]
    assert sorted(served) == sorted(hpa_metrics)  # each exactly once


def test_requests_per_second_is_the_rate_of_inference_requests_per_pod(helm) -> None:
    rule = _rule_named(_adapter_rules(helm), contract.METRIC_REQUESTS_PER_SECOND)
    series = f"{contract.METRIC_REQUESTS}_total"
    assert rule["seriesQuery"] == f'{series}{{namespace!="",pod!=""}}'
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    endpoints = "|".join(contract.INFER_ENDPOINTS)
    assert rule["metricsQuery"] == (
        "sum(rate(<<.Series>>{<<.LabelMatchers>>,"
        f'{contract.LABEL_ENDPOINT}=~"{endpoints}"}}[1m])) by (<<.GroupBy>>)'
    )
    window = _rule_named(
        _adapter_rules(helm, **{"prometheusAdapter.rules.rateWindow": "2m"}),
        contract.METRIC_REQUESTS_PER_SECOND,
    )
    assert "[2m]" in window["metricsQuery"]


def test_gpu_utilization_from_the_runtime_gauge(helm) -> None:
    rule = _rule_named(_adapter_rules(helm), contract.METRIC_GPU_UTILIZATION)
    assert rule["seriesQuery"] == f'{contract.METRIC_GPU_UTILIZATION}{{namespace!="",pod!=""}}'
    assert re.fullmatch(rule["name"]["matches"], contract.METRIC_GPU_UTILIZATION)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert rule["metricsQuery"] == "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"


def test_gpu_utilization_from_dcgm_maps_exported_pod_and_namespace(helm) -> None:
    rules = _adapter_rules(helm, **{"prometheusAdapter.rules.gpuUtilizationSource": "dcgm"})
    rule = _rule_named(rules, contract.METRIC_GPU_UTILIZATION)
    assert rule["seriesQuery"] == 'DCGM_FI_DEV_GPU_UTIL{exported_namespace!="",exported_pod!=""}'
    assert re.fullmatch(rule["name"]["matches"], "DCGM_FI_DEV_GPU_UTIL")
    # DCGM's own pod/namespace labels name the exporter; the workload is exported_*.
    assert rule["resources"]["overrides"] == {
        "exported_namespace": {"resource": "namespace"},
        "exported_pod": {"resource": "pod"},
    }
    assert rule["metricsQuery"] == "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)"
    kept = _adapter_rules(
        helm,
        **{
            "prometheusAdapter.rules.gpuUtilizationSource": "dcgm",
            "prometheusAdapter.rules.dcgm.podLabel": "pod",
            "prometheusAdapter.rules.dcgm.namespaceLabel": "namespace",
        },
    )
    rule = _rule_named(kept, contract.METRIC_GPU_UTILIZATION)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_adapter_configmap_name_and_namespace(helm) -> None:
    cm = helm.template(values=ADAPTER).one("ConfigMap")
    assert cm["metadata"]["name"] == "mmop-adapter-rules"
    assert cm["metadata"]["namespace"] == helm.namespace
    cm = helm.template(
        values={
            **ADAPTER,
            "prometheusAdapter.rules.configMapName": "adapter",
            "prometheusAdapter.rules.namespace": "monitoring",
        }
    ).one("ConfigMap")
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("adapter", "monitoring")


# --- ServiceMonitor / PodMonitor ---------------------------------------------------------------


def test_monitors_are_off_by_default(helm) -> None:
    objects = helm.template()
    assert not objects.kind("ServiceMonitor")
    assert not objects.kind("PodMonitor")


def test_pod_monitor_scrapes_the_runtime_pods_the_operator_makes(helm) -> None:
    monitor = helm.template(values=MONITORS).one("PodMonitor")
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": {naming.LABEL_MANAGED_BY: naming.MANAGER}}
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == contract.HTTP_PORT_NAME
    assert endpoint["path"] == contract.METRICS_PATH
    # The runtime's own "endpoint" label must survive the Prometheus Operator's target label.
    assert endpoint["honorLabels"] is True
    assert spec["podTargetLabels"] == [naming.LABEL_MODEL, naming.LABEL_VERSION]

    # ... and the runtime Deployments the operator builds match it.
    for deployment in (o for o in _example_children() if o["kind"] == "Deployment"):
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"][naming.LABEL_MANAGED_BY] == naming.MANAGER
        ports = {
            p["name"]: p["containerPort"]
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert ports[contract.HTTP_PORT_NAME] == contract.HTTP_PORT


def test_pod_monitor_namespaces(helm) -> None:
    namespaced = helm.template(values={**MONITORS, "watchNamespace": "team-a"}).one("PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    listed = helm.template(values={**MONITORS, "serviceMonitor.runtime.namespaces": "{a,b}"})
    assert listed.one("PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}
    off = helm.template(values={**MONITORS, "serviceMonitor.runtime.enabled": "false"})
    assert not off.kind("PodMonitor")
    assert off.kind("ServiceMonitor")


def test_service_monitor_scrapes_the_operator_service(helm) -> None:
    objects = helm.template(values={**MONITORS, "serviceMonitor.labels.release": "kps"})
    monitor = objects.one("ServiceMonitor")
    service = objects.one("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [helm.namespace]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert objects.one("PodMonitor")["metadata"]["labels"]["release"] == "kps"


# --- Grafana -----------------------------------------------------------------------------------

_METRIC = re.compile(r"\bmmop_[a-z_]+\b")
_RUNTIME_METRICS = {
    value
    for name, value in vars(contract).items()
    if name.startswith("METRIC_") and name != "METRIC_REQUESTS_PER_SECOND"
}


def _dashboard(helm, chart_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    cm = helm.template(values=DASHBOARD).one("ConfigMap")
    (key,) = cm["data"]
    dashboard = json.loads(cm["data"][key])
    assert dashboard == json.loads((chart_dir / "files" / "dashboards" / key).read_text())
    return cm, dashboard


def test_dashboard_configmap_is_found_by_the_grafana_sidecar(helm, chart_dir: Path) -> None:
    cm, _ = _dashboard(helm, chart_dir)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert not helm.template().kind("ConfigMap")


def test_dashboard_panels(helm, chart_dir: Path) -> None:
    _, dashboard = _dashboard(helm, chart_dir)
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title in (
        "Request rate",
        "Error rate",
        "p99 latency",
        "Batch size",
        "Queue depth",
        "GPU utilisation",
    ):
        assert title in panels, title
    exprs = {t: " ".join(x["expr"] for x in p["targets"]) for t, p in panels.items()}
    assert "histogram_quantile(0.99" in exprs["p99 latency"]
    assert 'code=~"5.."' in exprs["Error rate"]
    infer = f'{contract.LABEL_ENDPOINT}=~"{"|".join(contract.INFER_ENDPOINTS)}"'
    for title in ("Request rate", "Error rate", "p99 latency"):
        assert infer in exprs[title], title
    # split per model and version (the PodMonitor's podTargetLabels)
    for title in ("Request rate", "Error rate", "p99 latency", "GPU utilisation"):
        assert "model" in exprs[title] and "mmop_io_version" in exprs[title], title


def test_dashboard_queries_only_metrics_the_runtime_exposes(helm, chart_dir: Path) -> None:
    _, dashboard = _dashboard(helm, chart_dir)
    text = json.dumps(dashboard)
    used = set()
    for name in _METRIC.findall(text):
        if name == "mmop_io_version":
            continue
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        used.add(base)
    assert used, "no mmop metric in the dashboard"
    assert used <= _RUNTIME_METRICS, used - _RUNTIME_METRICS
