"""`helm install`, `helm upgrade`, `helm uninstall` of charts/mmop against the embedded API
server, checking the objects with kubectl between the steps."""

from __future__ import annotations

import json
from typing import Any

import pytest

NS = "mmop-system"
CRD = "multimodalmodels.mmop.io"

# Just enough of the Prometheus Operator's CRDs for the API server to serve the kinds.
MONITORING_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, plural: podmonitors, singular: podmonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _container(deployment)["env"]}


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def _release(cluster, name: str = "mmop") -> dict[str, Any]:
    (release,) = [
        r for r in json.loads(cluster.helm("list", "-n", NS, "-o", "json")) if r["name"] == name
    ]
    return release


def test_install_upgrade_uninstall(cluster) -> None:
    cluster.kubectl("create", "namespace", NS)

    # --- install with defaults: a cluster-wide operator -------------------------------------
    out = cluster.helm("install", "mmop", str(cluster.chart), "-n", NS)
    assert "kubectl get mmmodels" in out  # NOTES
    assert _release(cluster)["status"] == "deployed"
    assert CRD in cluster.names("crd")
    deployment = cluster.get("deployment", "mmop", namespace=NS)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    assert _container(deployment)["command"] == ["mmop", "run"]
    assert "args" not in _container(deployment)
    assert cluster.names("serviceaccounts", namespace=NS) >= {"mmop"}
    assert cluster.names("services", namespace=NS) == {"mmop"}
    assert "mmop-mmop-system" in cluster.names("clusterroles")
    assert "mmop-mmop-system" in cluster.names("clusterrolebindings")
    cluster_role = cluster.get("clusterrole", "mmop-mmop-system")
    assert ("mmop.io", "multimodalmodels", "watch") in _grants(cluster_role)
    # the CRD helm installed serves the short name users type
    assert cluster.get("mmmodels", namespace="default")["items"] == []

    # --- upgrade: one namespace, more logging, the monitoring extras --------------------------
    cluster.kubectl("create", "namespace", "ml")
    cluster.helm(
        "upgrade", "mmop", str(cluster.chart), "-n", NS,
        "--set", "watchNamespace=ml",
        "--set", "operator.logLevel=DEBUG",
        "--set", "operator.prometheusUrl=http://prometheus.monitoring.svc:9090",
        "--set", "prometheusAdapter.rules.enabled=true",
        "--set", "grafana.dashboard.enabled=true",
    )  # fmt: skip
    assert _release(cluster)["revision"] == "2"
    deployment = cluster.get("deployment", "mmop", namespace=NS)
    assert _container(deployment)["args"] == ["--namespace", "ml"]
    env = _env(deployment)
    assert env["MMOP_LOG_LEVEL"] == "DEBUG"
    assert env["MMOP_OPERATOR_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    # namespaced permissions moved from the ClusterRole into a Role in "ml"
    assert cluster.names("roles", namespace="ml") == {"mmop"}
    assert cluster.names("rolebindings", namespace="ml") == {"mmop"}
    role = cluster.get("role", "mmop", namespace="ml")
    assert ("mmop.io", "multimodalmodels", "watch") in _grants(role)
    cluster_role = cluster.get("clusterrole", "mmop-mmop-system")
    # cluster-wide: CRDs, namespaces, and listing nodes and pods for the free GPUs (issue 17)
    grants = _grants(cluster_role)
    assert {r for _, r, _ in grants} == {"customresourcedefinitions", "namespaces", "nodes", "pods"}
    assert {v for _, r, v in grants if r in ("nodes", "pods")} == {"list"}
    assert cluster.names("configmaps", namespace=NS) >= {"mmop-adapter-rules", "mmop-dashboard"}

    # --- upgrade back to the defaults: what was switched off is gone --------------------------
    cluster.helm("upgrade", "mmop", str(cluster.chart), "-n", NS, "--reset-values")
    deployment = cluster.get("deployment", "mmop", namespace=NS)
    assert "args" not in _container(deployment)
    assert "MMOP_OPERATOR_PROMETHEUS_URL" not in _env(deployment)
    assert cluster.names("roles", namespace="ml") == set()
    assert not cluster.names("configmaps", namespace=NS) & {"mmop-adapter-rules", "mmop-dashboard"}
    cluster_role = cluster.get("clusterrole", "mmop-mmop-system")
    assert ("mmop.io", "multimodalmodels", "watch") in _grants(cluster_role)

    # --- uninstall: everything goes but the CRD (Helm never deletes CRDs, nor the models) -----
    cluster.helm("uninstall", "mmop", "-n", NS)
    assert cluster.names("deployments", namespace=NS) == set()
    assert cluster.names("services", namespace=NS) == set()
    assert "mmop" not in cluster.names("serviceaccounts", namespace=NS)
    assert "mmop-mmop-system" not in cluster.names("clusterroles")
    assert "mmop-mmop-system" not in cluster.names("clusterrolebindings")
    assert CRD in cluster.names("crd")


def test_bad_values_install_nothing(cluster) -> None:
    cluster.kubectl("create", "namespace", NS)
    with pytest.raises(cluster.Error, match=r"at '/operator/logLevel': value must be one of"):
        cluster.helm(
            "install", "mmop", str(cluster.chart), "-n", NS, "--set", "operator.logLevel=LOUD"
        )
    assert cluster.helm("list", "-n", NS, "-q").strip() == ""
    assert cluster.names("deployments", namespace=NS) == set()


def test_monitors_need_and_use_the_prometheus_operator_crds(cluster, tmp_path) -> None:
    cluster.kubectl("create", "namespace", NS)
    args = ["install", "mmop", str(cluster.chart), "-n", NS, "--set", "serviceMonitor.enabled=true"]
    # Without the Prometheus Operator's CRDs the install fails (a real API server's message
    # names the missing kind; the embedded one fails helm's schema look-up earlier).
    with pytest.raises(cluster.Error, match="INSTALLATION FAILED"):
        cluster.helm(*args)
    cluster.helm("uninstall", "mmop", "-n", NS, "--ignore-not-found")
    crds = tmp_path / "monitoring-crds.yaml"
    crds.write_text(MONITORING_CRDS)
    cluster.kubectl("apply", "-f", str(crds))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
        "--timeout=30s",
    )
    cluster.helm(*args)
    assert cluster.names("servicemonitors", namespace=NS) == {"mmop"}
    assert cluster.names("podmonitors", namespace=NS) == {"mmop-runtime"}
    monitor = cluster.get("podmonitor", "mmop-runtime", namespace=NS)
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "mmop"}}


def test_crd_upgrade_by_kubectl_apply_and_models_apply(cluster) -> None:
    """docs/install.md: helm never upgrades CRDs; `kubectl apply --server-side
    --force-conflicts -f crds/` does, over the CRD helm installed. Then the examples apply."""
    cluster.kubectl("create", "namespace", NS)
    cluster.helm("install", "mmop", str(cluster.chart), "-n", NS)
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts",
                          "-f", str(cluster.chart / "crds"))  # fmt: skip
    assert CRD in out
    cluster.kubectl("create", "namespace", "ml")
    cluster.kubectl("apply", "-f", str(cluster.root / "examples" / "clip.yaml"))
    table = cluster.kubectl("get", "mmmodels", "-n", "ml")
    assert table.split()[0] == "NAME" and "clip" in table
