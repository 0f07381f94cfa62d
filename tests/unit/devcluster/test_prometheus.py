"""mmop.devcluster.prometheus: the PodMonitor -> scrape config translation, pod discovery as
Prometheus' Kubernetes SD labels pods, and the prometheus-adapter query expansion."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from mmop.devcluster import cli
from mmop.devcluster import prometheus as prom


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "clip-v1-abc-x1",
            "namespace": "ml",
            "uid": "u-1",
            "labels": {"mmop.io/model": "clip", "app.kubernetes.io/managed-by": "mmop"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{"kind": "Deployment", "name": "clip-v1", "controller": True}],
        },
        "spec": {
            "nodeName": "mmop-dev",
            "containers": [
                {
                    "name": "runtime",
                    "image": "ghcr.io/mmop/runtime:0.1.0",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
        },
        "status": {
            "podIP": "127.0.0.5",
            "hostIP": "127.0.0.1",
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "runtime", "containerID": "mmop://42"}],
        }
        | status,
    }


def test_pod_targets_carry_kubernetes_sd_meta_labels() -> None:
    runtime, sidecar = prom.pod_target_groups([_pod()])
    assert runtime["targets"] == ["127.0.0.5:8080"]
    labels = runtime["labels"]
    assert labels["__meta_kubernetes_namespace"] == "ml"
    assert labels["__meta_kubernetes_pod_name"] == "clip-v1-abc-x1"
    assert labels["__meta_kubernetes_pod_ready"] == "true"
    assert labels["__meta_kubernetes_pod_phase"] == "Running"
    assert labels["__meta_kubernetes_pod_label_mmop_io_model"] == "clip"
    assert labels["__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by"] == "true"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] == "true"
    assert labels["__meta_kubernetes_pod_controller_kind"] == "Deployment"
    assert labels["__meta_kubernetes_pod_container_port_name"] == "http"
    assert labels["__meta_kubernetes_pod_container_port_number"] == "8080"
    assert labels["__meta_kubernetes_pod_container_id"] == "mmop://42"
    # a container without ports: one target on the bare pod IP
    assert sidecar["targets"] == ["127.0.0.5"]
    assert "__meta_kubernetes_pod_container_port_name" not in sidecar["labels"]


def test_pods_without_ip_or_outside_the_namespaces_have_no_targets() -> None:
    assert prom.pod_target_groups([_pod(podIP="")]) == []
    assert prom.pod_target_groups([_pod()], namespaces=["other"]) == []
    assert len(prom.pod_target_groups([_pod()], namespaces=["ml"])) == 2
    unready = prom.pod_target_groups([_pod(conditions=[])])[0]["labels"]
    assert unready["__meta_kubernetes_pod_ready"] == "unknown"


def test_chart_pod_monitor_translates_like_the_prometheus_operator() -> None:
    (config,) = prom.scrape_configs_from_pod_monitor(prom.runtime_pod_monitor(), kubeconfig="/k")
    assert config["job_name"] == "podMonitor/mmop-system/mmop-runtime/0"
    assert config["honor_labels"] is True
    assert config["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/k"}]
    assert config["scrape_interval"] == "15s"
    assert config["metrics_path"] == "/metrics"
    rules = config["relabel_configs"]
    assert {
        "action": "keep",
        "source_labels": [
            "__meta_kubernetes_pod_label_app_kubernetes_io_managed_by",
            "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_managed_by",
        ],
        "regex": "(mmop);true",
    } in rules
    assert {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "http",
    } in rules
    targets = [r.get("target_label") for r in rules]
    for label in ("namespace", "pod", "container", "mmop_io_model", "mmop_io_version", "job"):
        assert label in targets
    assert rules[-1] == {"target_label": "endpoint", "replacement": "http"}


def test_namespace_selector_and_expressions() -> None:
    monitor = prom.runtime_pod_monitor()
    monitor["spec"]["namespaceSelector"] = {"matchNames": ["ml"]}
    monitor["spec"]["selector"]["matchExpressions"] = [{"key": "tier", "operator": "Exists"}]
    (config,) = prom.scrape_configs_from_pod_monitor(monitor, kubeconfig="/k")
    assert config["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["ml"]}
    assert {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_labelpresent_tier"],
        "regex": "true",
    } in config["relabel_configs"]
    del monitor["spec"]["namespaceSelector"]
    (own,) = prom.scrape_configs_from_pod_monitor(monitor, kubeconfig="/k")
    assert own["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["mmop-system"]}


def test_unsupported_fields_are_refused_by_name() -> None:
    monitor = prom.runtime_pod_monitor()
    monitor["spec"]["podMetricsEndpoints"][0]["tlsConfig"] = {}
    with pytest.raises(prom.UnsupportedPodMonitorError, match=r"\[0\]\.tlsConfig"):
        prom.scrape_configs_from_pod_monitor(monitor, kubeconfig="/k")


def test_file_discovery_replaces_pod_discovery(tmp_path: Path) -> None:
    configs = prom.scrape_configs_from_pod_monitor(prom.runtime_pod_monitor(), kubeconfig="/k")
    (config,), (discovery,) = prom.use_file_discovery(configs, directory=tmp_path)
    assert "kubernetes_sd_configs" not in config
    assert config["file_sd_configs"] == [{"files": [str(discovery.file)]}]
    assert discovery.file.parent == tmp_path and discovery.namespaces == ()
    assert config["relabel_configs"] == configs[0]["relabel_configs"]


def test_with_interval_caps_the_timeout() -> None:
    monitor = prom.with_interval(prom.runtime_pod_monitor(), "1s")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1s", "1s")
    assert prom.runtime_pod_monitor()["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200)]
)
def test_durations(text: str, seconds: float) -> None:
    assert prom.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "s", "1x", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        prom.duration_seconds(text)


def test_adapter_query_expansion_matches_prometheus_adapter() -> None:
    template = 'sum(rate(<<.Series>>{<<.LabelMatchers>>,endpoint=~"infer"}[1m])) by (<<.GroupBy>>)'
    many = prom.adapter_metrics_query(
        template, series="mmop_requests_total", namespace="ml", pods=["a", "b"]
    )
    assert many == (
        'sum(rate(mmop_requests_total{namespace="ml",pod=~"a|b",endpoint=~"infer"}[1m])) by (pod)'
    )
    one = prom.adapter_metrics_query(
        "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        series="DCGM_FI_DEV_GPU_UTIL",
        namespace="ml",
        pods=["a"],
        namespace_label="exported_namespace",
        pod_label="exported_pod",
    )
    assert one == (
        'avg(DCGM_FI_DEV_GPU_UTIL{exported_namespace="ml",exported_pod="a"}) by (exported_pod)'
    )
    with pytest.raises(ValueError, match="LabelValuesByName"):
        prom.adapter_metrics_query("<<.LabelValuesByName>>", series="x", namespace="n", pods=["a"])


def test_find_binary(tmp_path: Path) -> None:
    binary = tmp_path / "prometheus"
    binary.write_text("#!/bin/sh\n")
    assert prom.find_binary({"PATH": str(tmp_path)}) is None  # not executable
    os.chmod(binary, 0o755)
    assert prom.find_binary({"PATH": str(tmp_path)}) == str(binary)
    assert prom.find_binary({"PATH": "", prom.BINARY_ENV: str(binary)}) == str(binary)
    assert prom.find_binary({"PATH": str(tmp_path), prom.BINARY_ENV: "/nope"}) is None


def test_mmop_dev_prometheus_refuses_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    state = ["--state-dir", str(tmp_path / "state")]
    monkeypatch.setenv(prom.BINARY_ENV, str(tmp_path / "no-prometheus"))
    assert cli.run(parser.parse_args(["--prometheus", *state])) == 1
    assert "prometheus not found" in capsys.readouterr().out
    bad = parser.parse_args(["--prometheus", "--scrape-interval", "often", *state])
    assert cli.run(bad) == 2
    assert "--scrape-interval" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()  # nothing was started
