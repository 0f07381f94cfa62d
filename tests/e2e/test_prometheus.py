"""A real Prometheus (the distribution's `prometheus`) scraping the runtime pods of the dev
cluster with the chart's PodMonitor, rendered by real helm; the operator's canary analysis reads
it (prometheusUrl). A good canary is promoted and a failing one rolled back, decided from
Prometheus; Prometheus and the pods give the same counters; the chart's prometheus-adapter rules,
expanded as the adapter expands them, give the per-pod metrics the HPAs ask for.

Its own dev cluster and operator (other operator settings than the session's), for this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from mmop.devcluster import prometheus as prom
from mmop.devcluster.cluster import DevCluster, free_port
from mmop.operator.reconcile import observe, probes
from mmop.runtime import contract
from tests.support.manifests import model_manifest
from tests.support.traffic import Traffic
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mmop"
SCRAPE_INTERVAL = "1s"
Kubectl = Callable[..., str]


@pytest.fixture(scope="module")
def chart(helm_bin: str) -> list[dict[str, Any]]:
    """charts/mmop rendered with the monitors and the adapter rules on."""
    out = subprocess.run(
        [
            helm_bin,
            "template",
            "mmop",
            str(CHART),
            "--namespace",
            "mmop-system",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "prometheusAdapter.rules.enabled=true",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def pod_monitor(chart: list[dict[str, Any]]) -> dict[str, Any]:
    (monitor,) = [d for d in chart if d["kind"] == "PodMonitor"]
    return monitor


@pytest.fixture(scope="module")
def adapter_rules(chart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (cm,) = [d for d in chart if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
    rules: list[dict[str, Any]] = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    return rules


@pytest.fixture(scope="module")
def pcluster(
    tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str, pod_monitor: dict[str, Any]
) -> Iterator[DevCluster]:
    # One fake GPU: the adapter test's model asks for it (a GPU autoscaling metric needs one).
    with DevCluster(tmp_path_factory.mktemp("prom-dev"), gpus=1, router_seed=5) as dev:
        url = dev.start_prometheus(
            scrape_interval=SCRAPE_INTERVAL, pod_monitor=pod_monitor, binary=prometheus_bin
        )
        dev.start_operator(
            env={"MMOP_OPERATOR_RESYNC_SECONDS": "2", "MMOP_OPERATOR_PROMETHEUS_URL": url}
        )
        yield dev


@pytest.fixture(scope="module")
def pkubectl(pcluster: DevCluster, kubectl_bin: str) -> Kubectl:
    def run(*args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [kubectl_bin, "--kubeconfig", str(pcluster.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    return run


def _apply(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))


def _status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = json.loads(kubectl("get", "multimodalmodel", name, "-o", "json"))
    status: dict[str, Any] = body.get("status") or {}
    return status


def _query(cluster: DevCluster, promql: str) -> list[dict[str, Any]]:
    assert cluster.prometheus_url is not None
    answer = httpx.get(
        f"{cluster.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
    ).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _pods(kubectl: Kubectl, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kubectl("get", "pods", "-l", selector, "-o", "json"))[
        "items"
    ]
    return items


def _logged_queries(cluster: DevCluster) -> list[str]:
    log = cluster.prometheus_dir / "queries.log"
    if not log.exists():
        return []
    return [json.loads(line)["params"]["query"] for line in log.read_text().splitlines() if line]


@pytest.fixture
def model(pcluster: DevCluster, pkubectl: Kubectl, tiny_clip: Path) -> Iterator[str]:
    name = f"p{uuid.uuid4().hex[:6]}"
    _apply(pkubectl, model_manifest(name, source=tiny_clip))
    pkubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
    yield name
    pkubectl("delete", "multimodalmodel", name, "--wait=false", check=False)
    wait_until(
        lambda: not pkubectl("get", "deployments", "-l", f"mmop.io/model={name}", "-o", "name"),
        within=60,
        what="children deleted",
    )


@pytest.fixture
def ptraffic(pcluster: DevCluster, model: str) -> Iterator[Traffic]:
    t = Traffic(pcluster.router_url, model).start()
    yield t
    t.stop()


def test_prometheus_scrapes_runtime_pods_with_the_charts_labels(
    pcluster: DevCluster, pkubectl: Kubectl, model: str
) -> None:
    (pod,) = _pods(pkubectl, f"mmop.io/model={model}")
    name = pod["metadata"]["name"]
    targets = wait_until(
        lambda: [
            t
            for t in httpx.get(f"{pcluster.prometheus_url}/api/v1/targets", timeout=10).json()[
                "data"
            ]["activeTargets"]
            if t["labels"].get("pod") == name and t["health"] == "up"
        ],
        within=30,
        what="the pod's target up",
    )
    labels = targets[0]["labels"]
    assert labels["namespace"] == "default"
    assert labels["mmop_io_model"] == model
    assert labels["mmop_io_version"] == "v1"
    assert labels["container"] == "runtime"
    assert labels["job"] == "mmop-system/mmop-runtime"
    assert targets[0]["scrapeUrl"] == f"http://{pod['status']['podIP']}:8080/metrics"
    # honorLabels: the runtime's own "endpoint" label survives (the adapter rules select on it)
    body = contract.smoke_test_request(contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION)
    response = httpx.post(f"{pcluster.router_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    rows = wait_until(
        lambda: _query(pcluster, f'mmop_requests_total{{pod="{name}",endpoint="infer"}}'),
        within=30,
        what="the inference counted in Prometheus",
    )
    assert rows[0]["metric"]["namespace"] == "default"


def test_prometheus_and_the_pods_give_the_same_counters(
    pcluster: DevCluster, pkubectl: Kubectl, model: str, ptraffic: Traffic
) -> None:
    wait_until(lambda: ptraffic.mark() >= 20, within=60, what="some traffic")
    ptraffic.stop()
    infos = [p for p in observe.pod_infos(_pods(pkubectl, f"mmop.io/model={model}")) if p.ready]
    assert infos

    async def both() -> tuple[Any, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            from_pods = await probes.scrape(http, infos)
            from_prometheus = await probes.prometheus_snapshot(
                http, url=str(pcluster.prometheus_url), namespace="default", pods=infos
            )
            return from_pods, from_prometheus

    # Once a scrape after the last request has landed, both must agree exactly.
    def same() -> tuple[Any, Any] | None:
        pods, prometheus = asyncio.run(both())
        return (pods, prometheus) if pods is not None and pods == prometheus else None

    pods_snapshot, _ = wait_until(same, within=30, what="Prometheus caught up with the pods")
    assert pods_snapshot.requests >= 20
    assert pods_snapshot.buckets["+Inf"] == pods_snapshot.requests


def test_canary_is_promoted_from_prometheus(
    pcluster: DevCluster, pkubectl: Kubectl, tiny_clip: Path, model: str, ptraffic: Traffic
) -> None:
    mark = ptraffic.mark()
    _apply(pkubectl, model_manifest(model, source=tiny_clip, version="v2"))
    done = wait_until(
        lambda: (s := _status(pkubectl, model)).get("stableVersion") == "v2" and s,
        within=180,
        what="promotion",
    )
    assert done["history"][-1]["result"] == "Promoted"
    assert [a for a in ptraffic.answers[mark:] if a[0] != 200] == []
    # decided from Prometheus: the operator asked it about the canary's pods
    canary_queries = [q for q in _logged_queries(pcluster) if f'pod=~"{model}-v2-' in q]
    assert any("mmop_requests_total" in q for q in canary_queries), _logged_queries(pcluster)


def test_canary_with_errors_is_rolled_back_from_prometheus(
    pcluster: DevCluster, pkubectl: Kubectl, tiny_clip: Path, model: str, ptraffic: Traffic
) -> None:
    mark = ptraffic.mark()
    bad = model_manifest(model, source=tiny_clip, version="v2")
    bad["spec"]["runtime"]["env"] = [
        {"name": "MMOP_FAULT_ERROR_RATE", "value": "0.6"},
        {"name": "MMOP_FAULT_SPARE_SMOKE_TEST", "value": "true"},
    ]
    _apply(pkubectl, bad)
    failed = wait_until(
        lambda: (s := _status(pkubectl, model)).get("phase") == "Failed" and s,
        within=180,
        what="rollback",
    )
    assert failed["stableVersion"] == "v1"
    assert failed["history"][-1]["result"] == "RolledBack"
    assert "error rate" in failed["history"][-1]["reason"]
    assert any(v == "v2" for (_, v) in ptraffic.since(mark))
    assert [a for a in ptraffic.answers[mark:] if a[1] == "v1" and a[0] != 200] == []
    canary_queries = [q for q in _logged_queries(pcluster) if f'pod=~"{model}-v2-' in q]
    assert any('code=~"5..|4.."' in q for q in canary_queries), _logged_queries(pcluster)


def _series_for_rule(cluster: DevCluster, rule: dict[str, Any]) -> list[dict[str, str]]:
    answer = httpx.get(
        f"{cluster.prometheus_url}/api/v1/series",
        params={"match[]": rule["seriesQuery"]},
        timeout=10,
    ).json()
    assert answer["status"] == "success", answer
    series: list[dict[str, str]] = answer["data"]
    return series


def test_adapter_rules_give_the_per_pod_metrics_the_hpas_ask_for(
    pcluster: DevCluster,
    pkubectl: Kubectl,
    tiny_clip: Path,
    adapter_rules: list[dict[str, Any]],
) -> None:
    name = f"a{uuid.uuid4().hex[:6]}"
    manifest = model_manifest(name, source=tiny_clip)
    del manifest["spec"]["replicas"]
    # The dev node's fake GPU; without a driver the local kubelet runs the pod on the CPU
    # (MMOP_DEVICE is the operator's, so the spec cannot say so).
    manifest["spec"]["resources"]["gpu"] = 1
    manifest["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "metrics": [
            {"type": "QPS", "targetPerReplica": 20},
            {"type": "GPU", "targetUtilization": 80},
        ],
    }
    _apply(pkubectl, manifest)
    pkubectl("wait", "--for=condition=Ready", f"multimodalmodel/{name}", "--timeout=180s")
    traffic = Traffic(pcluster.router_url, name).start()
    try:
        (hpa,) = json.loads(pkubectl("get", "hpa", "-l", f"mmop.io/model={name}", "-o", "json"))[
            "items"
        ]
        asked = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
        assert asked == {contract.METRIC_REQUESTS_PER_SECOND, contract.METRIC_GPU_UTILIZATION}
        deployment = json.loads(
            pkubectl("get", "deployment", hpa["spec"]["scaleTargetRef"]["name"], "-o", "json")
        )
        selector = ",".join(
            f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
        )
        pods = sorted(p["metadata"]["name"] for p in _pods(pkubectl, selector))
        assert pods

        def per_pod(rule: dict[str, Any]) -> dict[str, float] | None:
            # What the adapter does: discover series, name them, expand metricsQuery, query.
            overrides = rule["resources"]["overrides"]
            by_resource = {v["resource"]: label for label, v in overrides.items()}
            matching = [
                s
                for s in _series_for_rule(pcluster, rule)
                if s.get(by_resource["pod"]) in pods
                and re.match(rule["name"]["matches"], s["__name__"])
            ]
            if not matching:
                return None
            series_name = matching[0]["__name__"]
            query = prom.adapter_metrics_query(
                rule["metricsQuery"],
                series=series_name,
                namespace="default",
                pods=pods,
                namespace_label=by_resource["namespace"],
                pod_label=by_resource["pod"],
            )
            rows = _query(pcluster, query)
            values = {r["metric"][by_resource["pod"]]: float(r["value"][1]) for r in rows}
            return values if set(values) == set(pods) else None

        for metric in sorted(asked):
            (rule,) = [r for r in adapter_rules if r["name"]["as"] == metric]
            if metric == contract.METRIC_REQUESTS_PER_SECOND:
                values = wait_until(
                    lambda rule=rule: (v := per_pod(rule)) and all(x > 0 for x in v.values()) and v,
                    within=90,
                    what=f"{metric} per pod",
                )
                # the rate of user inference requests, in requests per second: the traffic
                # thread sends a few per second, never thousands
                assert all(0 < x < 100 for x in values.values()), values
            else:
                # No CUDA on this machine: the runtime exports its GPU gauge as 0; the rule still
                # finds the series and yields a value per pod
                values = wait_until(lambda rule=rule: per_pod(rule), within=30, what=metric)
                assert set(values.values()) == {0.0}, values
    finally:
        traffic.stop()
        pkubectl("delete", "multimodalmodel", name, "--wait=false", check=False)


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_mmop_dev_prometheus(tmp_path: Path, prometheus_bin: str) -> None:
    """`mmop dev --demo --prometheus`: prints Prometheus' URL, which scrapes the demo pod, starts
    the operator pointed at it, and Ctrl-C stops Prometheus with the rest."""
    state, out_path = tmp_path / "state", tmp_path / "mmop-dev.out"
    prom_port = free_port()
    command = [
        str(Path(sys.executable).with_name("mmop")),
        "dev",
        "--demo",
        "--prometheus",
        "--prometheus-port",
        str(prom_port),
        "--scrape-interval",
        "1s",
        "--state-dir",
        str(state),
        "--router-port",
        "0",
    ]
    url = f"http://127.0.0.1:{prom_port}"
    with out_path.open("wb") as out:
        dev = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MMOP_PROMETHEUS": prometheus_bin},
        )
    children: list[psutil.Process] = []
    try:
        wait_until(
            lambda: dev.poll() is not None or f"prometheus  {url}" in out_path.read_text(),
            within=120,
            what="the printed Prometheus URL",
        )
        assert dev.poll() is None, out_path.read_text()
        up = wait_until(
            lambda: [
                r
                for r in httpx.get(
                    f"{url}/api/v1/query", params={"query": "up == 1"}, timeout=10
                ).json()["data"]["result"]
                if r["metric"].get("mmop_io_model") == "clip-demo"
            ],
            within=240,
            what="the demo pod scraped",
        )
        assert up[0]["metric"]["namespace"] == "default"
        children = psutil.Process(dev.pid).children(recursive=True)
        operator = [c for c in children if "mmop.operator" in " ".join(c.cmdline())]
        assert operator, [c.cmdline() for c in children]
        assert operator[0].environ().get("MMOP_OPERATOR_PROMETHEUS_URL") == url
        assert any(c.exe() == os.path.realpath(prometheus_bin) for c in children if c.is_running())
    finally:
        if dev.poll() is None:
            children = children or psutil.Process(dev.pid).children(recursive=True)
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(90)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait(10)
    assert dev.returncode == 0, out_path.read_text()
    left = [c for c in children if not _gone(c)]
    assert left == [], [c.cmdline() for c in left]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/-/ready", timeout=2)
