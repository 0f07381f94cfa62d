"""The local router in front of two real runtime pods (versions v1 and v2 of model ``alpha``):
VirtualService weights, HTTPRoute weights, plain Service routing, routing by OIP path and
namespace header, a real inference, and the 404 / 503 answers."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mmop.devcluster import demo
from mmop.devcluster.cluster import DevCluster

Pods = Callable[..., list[dict[str, Any]]]
REQUESTS = 200


def _service(name: str, selector: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def _virtual_service(v1: int, v2: int) -> dict[str, Any]:
    host = "alpha.default.svc.cluster.local"
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "alpha", "namespace": "default"},
        "spec": {
            "hosts": ["alpha", host],
            "http": [
                {
                    "route": [
                        {
                            "destination": {"host": host, "subset": "v1", "port": {"number": 80}},
                            "weight": v1,
                        },
                        {
                            "destination": {"host": host, "subset": "v2", "port": {"number": 80}},
                            "weight": v2,
                        },
                    ]
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def split(
    dev_cluster: DevCluster,
    make_deployment: Callable[..., dict],
    list_pods: Pods,
    wait_for: Callable[..., Any],
    api: httpx.Client,
) -> Iterator[dict[str, str]]:
    """Two versions of ``alpha``, one pod each, behind every kind of route; returns pod ->
    version."""
    deployments = [
        make_deployment(
            f"alpha-{v}", labels={"app": "alpha", "mmop.io/version": v}, served_name="alpha"
        )
        for v in ("v1", "v2")
    ]
    dev_cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}},
            *deployments,
            _service("alpha", {"app": "alpha"}),
            _service("alpha-v1", {"app": "alpha", "mmop.io/version": "v1"}),
            _service("alpha-v2", {"app": "alpha", "mmop.io/version": "v2"}),
            _service("gamma", {"app": "alpha"}),
            _service("beta", {"app": "alpha"}),
            _service("empty", {"app": "nothing-here"}),
            _service("alpha", {"app": "alpha"}, namespace="other"),
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "alpha"},
                "spec": {
                    "host": "alpha.default.svc.cluster.local",
                    "subsets": [
                        {"name": v, "labels": {"mmop.io/version": v}} for v in ("v1", "v2")
                    ],
                },
            },
            _virtual_service(80, 20),
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "beta"},
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": "beta", "port": 80}],
                    "rules": [
                        {
                            "backendRefs": [
                                {"name": "alpha-v1", "port": 80, "weight": 30},
                                {"name": "alpha-v2", "port": 80, "weight": 70},
                            ]
                        }
                    ],
                },
            },
        ]
    )

    def both_ready() -> list[dict[str, Any]]:
        pods = list_pods("app=alpha")
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return ready if len(ready) == 2 == len(pods) else []

    pods = wait_for(both_ready, "both alpha pods to be ready")
    yield {p["metadata"]["name"]: p["metadata"]["labels"]["mmop.io/version"] for p in pods}
    for v in ("v1", "v2"):
        api.delete(f"/apis/apps/v1/namespaces/default/deployments/alpha-{v}")


def _versions(router: httpx.Client, host: str, pods: dict[str, str], n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        response = router.get("/v2/health/ready", headers={"Host": host})
        assert response.status_code == 200, response.text
        version, pod = response.headers["X-Mmop-Version"], response.headers["X-Mmop-Pod"]
        assert pods[pod] == version
        counts[version] += 1
    return counts


def test_virtual_service_weights_split_requests(
    router: httpx.Client, split: dict[str, str]
) -> None:
    counts = _versions(router, "alpha", split, REQUESTS)
    assert counts["v1"] + counts["v2"] == REQUESTS
    assert 130 <= counts["v1"] <= 190  # 80 % of 200, +- 5 standard deviations


def test_weight_changes_are_followed(
    router: httpx.Client,
    split: dict[str, str],
    dev_cluster: DevCluster,
    wait_for: Callable[..., Any],
) -> None:
    dev_cluster.apply([_virtual_service(0, 100)])
    try:
        wait_for(
            lambda: _versions(router, "alpha.default", split, 20) == Counter(v2=20),
            "all traffic on v2",
        )
        assert _versions(router, "alpha.default.svc.cluster.local", split, 50) == Counter(v2=50)
    finally:
        dev_cluster.apply([_virtual_service(80, 20)])


def test_http_route_weights_split_requests(router: httpx.Client, split: dict[str, str]) -> None:
    counts = _versions(router, "beta.default.svc.cluster.local:80", split, REQUESTS)
    assert 30 <= counts["v1"] <= 90  # 30 % of 200, +- 4.6 standard deviations
    assert counts["v1"] + counts["v2"] == REQUESTS


def test_service_routing_turns_through_ready_pods(
    router: httpx.Client, split: dict[str, str]
) -> None:
    seen = [router.get("/v2/health/live", headers={"Host": "gamma.default"}) for _ in range(6)]
    pods = [r.headers["X-Mmop-Pod"] for r in seen]
    assert set(pods) == set(split)
    assert all(a != b for a, b in itertools.pairwise(pods))
    assert {r.headers["X-Mmop-Route"] for r in seen} == {"Service gamma"}


def test_inference_routed_by_path(router: httpx.Client, split: dict[str, str]) -> None:
    response = router.post(
        "/v2/models/alpha/infer?trace=1", json=demo.request_body(), headers={"Host": "127.0.0.1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "alpha"
    assert {o["name"] for o in body["outputs"]} == {"scores", "label"}
    assert response.headers["X-Mmop-Route"] == "VirtualService alpha"
    assert response.headers["X-Mmop-Pod"] in split


def test_namespace_header_unknown_models_and_no_ready_pod(
    router: httpx.Client,
    split: dict[str, str],
) -> None:
    other = router.get("/v2/models/alpha/ready", headers={"X-Mmop-Namespace": "other"})
    assert other.status_code == 503
    assert "no ready pod for other/alpha" in other.json()["error"]
    unknown = router.get("/v2/models/nope/ready")
    assert unknown.status_code == 404
    assert "error" in unknown.json()
    assert router.get("/v2/health/ready", headers={"Host": "nope.default"}).status_code == 404
    empty = router.get("/v2/health/ready", headers={"Host": "empty"})
    assert empty.status_code == 503
    assert empty.json() == {"error": "no ready pod for default/empty"}
