"""Real kubectl (v1.35) against the embedded API server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mmop.devcluster.apiserver import ServerHandle

MERGE = {"Content-Type": "application/merge-patch+json"}

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.kubectl.example.com}
spec:
  group: kubectl.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg, gadg]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the gadget should be.
            properties:
              replicas: {type: integer, minimum: 0, description: How many copies to run.}
              version: {type: string, description: The user's label for this build.}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: app:1
        env: [{name: A, value: "1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
"""


class Kubectl:
    """Runs the real binary against the module's server, with its own HOME and cache."""

    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.argv = [binary, "--cache-dir", str(home / "cache")]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.argv, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="module")
def kubectl(
    kubectl_bin: str, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Kubectl:
    return Kubectl(kubectl_bin, kubeconfig, tmp_path_factory.mktemp("kubectl-home"))


def test_namespaces_secrets_and_protobuf(
    kubectl: Kubectl, apiserver: ServerHandle, http: httpx.Client
) -> None:
    start = apiserver.audit.last_index
    kubectl("create", "ns", "kc-proto")
    kubectl("create", "secret", "generic", "creds", "--from-literal=user=admin", "-n", "kc-proto")
    secret = json.loads(kubectl("get", "secret", "creds", "-n", "kc-proto", "-o", "json").stdout)
    assert secret["data"] == {"user": "YWRtaW4="} and secret["type"] == "Opaque"
    types = {r.content_type for r in apiserver.audit.records(since=start)}
    assert types == {"application/vnd.kubernetes.protobuf"}  # what kubectl sends for these
    assert "kc-proto" in kubectl("get", "ns").stdout
    kubectl("delete", "ns", "kc-proto", "--timeout=20s")
    assert http.get("/api/v1/namespaces/kc-proto").status_code == 404


def test_client_side_apply(kubectl: Kubectl, http: httpx.Client, apiserver: ServerHandle) -> None:
    kubectl("create", "ns", "kc-apply")
    first = kubectl("apply", "-n", "kc-apply", "-f", "-", stdin=APP).stdout
    assert "deployment.apps/web created" in first and "service/web created" in first
    assert "unchanged" in kubectl("apply", "-n", "kc-apply", "-f", "-", stdin=APP).stdout
    start = apiserver.audit.last_index
    changed = APP.replace('value: "1"}]', 'value: "2"}, {name: B, value: x}]')
    assert (
        "deployment.apps/web configured"
        in kubectl("apply", "-n", "kc-apply", "-f", "-", stdin=changed).stdout
    )
    (patch,) = [r for r in apiserver.audit.records(since=start) if r.verb == "patch"]
    assert patch.content_type == "application/strategic-merge-patch+json"
    dep = http.get("/apis/apps/v1/namespaces/kc-apply/deployments/web").json()
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "2"},
        {"name": "B", "value": "x"},
    ]
    assert dep["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in dep["metadata"]["annotations"]
    table = kubectl("get", "deploy,svc,cm", "-n", "kc-apply").stdout
    assert (
        "READY" in table and "UP-TO-DATE" in table and "CLUSTER-IP" in table and "settings" in table
    )
    all_kinds = kubectl("get", "all", "-n", "kc-apply").stdout
    assert "deployment.apps/web" in all_kinds and "service/web" in all_kinds
    doc = yaml.safe_load(kubectl("get", "deployment", "web", "-n", "kc-apply", "-o", "yaml").stdout)
    assert doc["kind"] == "Deployment" and doc["metadata"]["name"] == "web"


def test_server_side_apply(kubectl: Kubectl, http: httpx.Client) -> None:
    kubectl("create", "ns", "kc-ssa")
    out = kubectl("apply", "--server-side", "-n", "kc-ssa", "-f", "-", stdin=APP).stdout
    assert "deployment.apps/web serverside-applied" in out
    dep = http.get("/apis/apps/v1/namespaces/kc-ssa/deployments/web").json()
    (entry,) = [e for e in dep["metadata"]["managedFields"] if e["manager"] == "kubectl"]
    assert entry["operation"] == "Apply"
    kubectl("scale", "deployment", "web", "--replicas=5", "-n", "kc-ssa")
    kubectl(
        "patch",
        "deployment",
        "web",
        "-n",
        "kc-ssa",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":4}}',
        "--field-manager=ops",
    )
    conflict = kubectl("apply", "--server-side", "-n", "kc-ssa", "-f", "-", stdin=APP, check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower()
    kubectl("apply", "--server-side", "--force-conflicts", "-n", "kc-ssa", "-f", "-", stdin=APP)
    assert (
        http.get("/apis/apps/v1/namespaces/kc-ssa/deployments/web").json()["spec"]["replicas"] == 2
    )


def test_custom_resources(kubectl: Kubectl, http: httpx.Client) -> None:
    kubectl("apply", "-f", "-", stdin=CRD)
    kubectl(
        "wait", "--for=condition=Established", "crd/gadgets.kubectl.example.com", "--timeout=10s"
    )
    kubectl("create", "ns", "kc-crd")
    gadget = (
        "apiVersion: kubectl.example.com/v1alpha1\nkind: Gadget\n"
        "metadata: {name: g1}\nspec: {replicas: 2, version: v1}\n"
    )
    kubectl("apply", "-n", "kc-crd", "-f", "-", stdin=gadget)
    http.patch(
        "/apis/kubectl.example.com/v1alpha1/namespaces/kc-crd/gadgets/g1/status",
        headers=MERGE,
        json={"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}},
    )
    for name in ("gadgets", "gadget", "gdg", "gadg", "gadgets.kubectl.example.com"):
        lines = kubectl("get", name, "-n", "kc-crd").stdout.splitlines()
        assert lines[0].split() == ["NAME", "READY", "PHASE", "REPLICAS", "AGE"], name
        assert lines[1].split()[:4] == ["g1", "True", "Ready", "2"], name
    doc = yaml.safe_load(kubectl("get", "gdg", "g1", "-n", "kc-crd", "-o", "yaml").stdout)
    assert doc["status"]["phase"] == "Ready" and doc["spec"] == {"replicas": 2, "version": "v1"}
    kubectl("wait", "--for=condition=Ready", "gadget/g1", "-n", "kc-crd", "--timeout=10s")
    kubectl("scale", "gadget", "g1", "--replicas=4", "-n", "kc-crd")
    assert (
        http.get("/apis/kubectl.example.com/v1alpha1/namespaces/kc-crd/gadgets/g1").json()["spec"][
            "replicas"
        ]
        == 4
    )
    explained = kubectl("explain", "gadgets.spec").stdout
    assert "What the gadget should be." in explained and "How many copies to run." in explained
    refused = kubectl(
        "apply",
        "-n",
        "kc-crd",
        "-f",
        "-",
        stdin=gadget.replace("replicas: 2", "replicas: -1"),
        check=False,
    )
    assert refused.returncode != 0 and "spec.replicas" in refused.stderr
    assert "gadgets" in kubectl("api-resources", "--api-group=kubectl.example.com").stdout
    kubectl("delete", "gadget", "g1", "-n", "kc-crd", "--timeout=10s")
    assert "No resources found" in kubectl("get", "gdg", "-n", "kc-crd").stderr


def test_rollout_status_wait_and_delete(kubectl: Kubectl, http: httpx.Client) -> None:
    kubectl("create", "ns", "kc-rollout")
    kubectl("apply", "-n", "kc-rollout", "-f", "-", stdin=APP)
    rollout = subprocess.Popen(
        [*kubectl.argv, "rollout", "status", "deployment/web", "-n", "kc-rollout", "--timeout=30s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kubectl.env,
    )
    time.sleep(0.5)
    assert rollout.poll() is None  # waiting for the replicas
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    http.patch(
        "/apis/apps/v1/namespaces/kc-rollout/deployments/web/status",
        headers=MERGE,
        json={"status": status},
    )
    out, err = rollout.communicate(timeout=30)
    assert rollout.returncode == 0, err
    assert 'deployment "web" successfully rolled out' in out
    kubectl("scale", "deployment/web", "--replicas=3", "-n", "kc-rollout")
    assert (
        http.get("/apis/apps/v1/namespaces/kc-rollout/deployments/web").json()["spec"]["replicas"]
        == 3
    )
    kubectl("label", "cm", "settings", "tier=gold", "-n", "kc-rollout")
    assert "settings" in kubectl("get", "cm", "-l", "tier=gold", "-n", "kc-rollout").stdout
    deleted = kubectl("delete", "-n", "kc-rollout", "-f", "-", "--timeout=20s", stdin=APP).stdout
    assert 'deployment.apps "web" deleted' in deleted
    assert http.get("/apis/apps/v1/namespaces/kc-rollout/deployments/web").status_code == 404
