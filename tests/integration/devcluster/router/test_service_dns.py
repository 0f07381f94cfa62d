"""Pods reach Services by their cluster DNS names: a canary pod mirrors its requests to
``http://dns-v1.default.svc.cluster.local:8080`` through the router (the pods' HTTP proxy), and the
router, used as a proxy, routes Service names, passes other hosts on and 404s unknown Services."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmop.devcluster.cluster import DevCluster
from mmop.runtime import contract

Pods = Callable[..., list[dict[str, Any]]]
STABLE_HOST = "dns-v1.default.svc.cluster.local"
TASK = contract.TASK_ZERO_SHOT_IMAGE_CLASSIFICATION


def _service(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"app": "dns", "mmop.io/version": version},
            "ports": [{"name": "http", "port": contract.HTTP_PORT, "targetPort": "http"}],
        },
    }


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def pods(
    dev_cluster: DevCluster,
    make_deployment: Callable[..., dict[str, Any]],
    list_pods: Pods,
    wait_for: Callable[..., Any],
    api: httpx.Client,
) -> Iterator[dict[str, dict[str, Any]]]:
    """Version -> ready pod: v1 (stable) and v2 (a canary mirroring everything to v1)."""
    # Both versions share the model's smoke-test token: the stable counts the copies as
    # endpoint="mirror" only when the header carries it.
    token = [{"name": contract.ENV_SMOKE_TEST_TOKEN, "value": "dns-smoke-token"}]
    mirror = [
        {"name": contract.ENV_MIRROR_URL, "value": f"http://{STABLE_HOST}:{contract.HTTP_PORT}"},
        {"name": contract.ENV_MIRROR_PERCENT, "value": "100"},
        *token,
    ]
    dev_cluster.apply(
        [
            make_deployment(
                f"dns-{version}",
                labels={"app": "dns", "mmop.io/version": version},
                served_name="dns",
                env=mirror if version == "v2" else token,
            )
            for version in ("v1", "v2")
        ]
        + [_service("dns-v1", "v1"), _service("dns-v2", "v2")]
    )

    def both_ready() -> dict[str, dict[str, Any]]:
        ready = [p for p in list_pods("app=dns") if _ready(p)]
        by_version = {p["metadata"]["labels"]["mmop.io/version"]: p for p in ready}
        return by_version if len(ready) == 2 == len(by_version) else {}

    yield wait_for(both_ready, "both dns pods to be ready")
    for version in ("v1", "v2"):
        api.delete(f"/apis/apps/v1/namespaces/default/deployments/dns-{version}")


def metric_value(page: str, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` matching ``labels`` in a Prometheus text page."""
    total = 0.0
    for line in page.splitlines():
        series, _, value = line.rpartition(" ")
        if series.partition("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def _pod_metrics(pod: dict[str, Any]) -> str:
    url = f"http://{pod['status']['podIP']}:{contract.HTTP_PORT}{contract.METRICS_PATH}"
    return httpx.get(url, timeout=10, trust_env=False).text


def test_a_canary_pod_mirrors_to_the_stable_service_by_its_dns_name(
    pods: dict[str, dict[str, Any]], router: httpx.Client, wait_for: Callable[..., Any]
) -> None:
    requests = 3
    body = contract.smoke_test_request(TASK)  # a valid request; sent without the smoke header
    for _ in range(requests):
        response = router.post(contract.infer_path("dns"), json=body, headers={"Host": "dns-v2"})
        assert response.status_code == 200, response.text
        assert response.headers["X-Mmop-Pod"] == pods["v2"]["metadata"]["name"]

    compared = contract.METRIC_MIRROR_REQUESTS + "_total"
    wait_for(
        lambda: metric_value(_pod_metrics(pods["v2"]), compared, result="compared") == requests,
        "the canary's mirrors to be compared",
        timeout=60,
    )
    canary = _pod_metrics(pods["v2"])
    agreement = {contract.LABEL_METRIC: "label_agreement"}
    assert metric_value(canary, contract.METRIC_QUALITY_SCORE + "_count", **agreement) == requests
    assert metric_value(canary, contract.METRIC_QUALITY_SCORE + "_sum", **agreement) == requests
    assert metric_value(canary, compared, result="error") == 0
    stable = _pod_metrics(pods["v1"])
    total = contract.METRIC_REQUESTS + "_total"
    assert metric_value(stable, total, endpoint=contract.ENDPOINT_MIRROR, code="200") == requests
    assert metric_value(stable, total, endpoint="infer") == 0


def test_the_router_as_a_proxy(pods: dict[str, dict[str, Any]], dev_cluster: DevCluster) -> None:
    with httpx.Client(proxy=dev_cluster.router_url, timeout=30, trust_env=False) as client:
        by_name = client.get(f"http://{STABLE_HOST}:{contract.HTTP_PORT}{contract.READY_PATH}")
        assert by_name.status_code == 200, by_name.text
        assert by_name.headers["X-Mmop-Pod"] == pods["v1"]["metadata"]["name"]

        # A pod IP is passed straight on, not routed by the model name in the path.
        ip = pods["v2"]["status"]["podIP"]
        direct = client.get(f"http://{ip}:{contract.HTTP_PORT}{contract.model_path('dns')}")
        assert direct.status_code == 200, direct.text
        assert "X-Mmop-Pod" not in direct.headers

        missing = client.get(f"http://nothing.default.svc.cluster.local{contract.READY_PATH}")
        assert missing.status_code == 404
        assert "nothing" in missing.json()["error"]


def test_pods_get_the_router_as_their_http_proxy(
    pods: dict[str, dict[str, Any]], dev_cluster: DevCluster
) -> None:
    container_id = pods["v2"]["status"]["containerStatuses"][0]["containerID"]
    raw = Path(f"/proc/{container_id.removeprefix('mmop://')}/environ").read_bytes()
    env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    assert env["HTTP_PROXY"] == env["http_proxy"] == dev_cluster.router_url
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
