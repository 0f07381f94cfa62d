"""devcluster/router/decisions.py: model lookup by host or path, routes (VirtualService, HTTPRoute,
Service), weighted version choice with a seeded RNG, ready pods and round-robin."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from mmop.devcluster.router import decisions
from mmop.devcluster.router.decisions import (
    Backend,
    ClusterView,
    Request,
    ServiceRef,
    StaticObjects,
)


def _meta(name: str, ns: str = "ml", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z", **extra}


def _service(name: str, selector: dict[str, str], ns: str = "ml", target: Any = "http") -> dict:
    return {
        "metadata": _meta(name, ns),
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": target}]},
    }


def _pod(name: str, version: str, *, ready: bool = True, ip: str = "127.0.0.2") -> dict:
    return {
        "metadata": _meta(name, labels={"mmop.io/model": "clip", "mmop.io/version": version}),
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _virtual_service(weights: dict[str, int], hosts: list[str] | None = None) -> dict:
    return {
        "metadata": _meta("clip"),
        "spec": {
            "hosts": hosts or ["clip", "clip.ml.svc.cluster.local"],
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": "clip.ml.svc.cluster.local",
                                "subset": v,
                                "port": {"number": 80},
                            },
                            "weight": w,
                        }
                        for v, w in weights.items()
                    ]
                }
            ],
        },
    }


DESTINATION_RULE = {
    "metadata": _meta("clip"),
    "spec": {
        "host": "clip.ml.svc.cluster.local",
        "subsets": [
            {"name": "v1", "labels": {"mmop.io/version": "v1"}},
            {"name": "v2", "labels": {"mmop.io/version": "v2"}},
        ],
    },
}
SERVICES = [
    _service("clip", {"mmop.io/model": "clip"}),
    _service("clip-v1", {"mmop.io/model": "clip", "mmop.io/version": "v1"}),
    _service("clip-v2", {"mmop.io/model": "clip", "mmop.io/version": "v2"}),
]
PODS = [
    _pod("clip-v1-a", "v1"),
    _pod("clip-v1-b", "v1", ip="127.0.0.3"),
    _pod("clip-v2-a", "v2", ip="127.0.0.4"),
    _pod("clip-v2-x", "v2", ready=False),
]


def _http_route(weights: dict[str, int]) -> dict:
    return {
        "metadata": _meta("clip"),
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "clip", "port": 80}],
            "rules": [
                {
                    "backendRefs": [
                        {
                            "group": "",
                            "kind": "Service",
                            "name": f"clip-{v}",
                            "port": 80,
                            "weight": w,
                        }
                        for v, w in weights.items()
                    ]
                }
            ],
        },
    }


def _view(**kinds: list[dict]) -> ClusterView:
    kinds.setdefault("services", SERVICES)
    kinds.setdefault("pods", PODS)
    return ClusterView(**{k: StaticObjects(v) for k, v in kinds.items()})


class TestHosts:
    @pytest.mark.parametrize(
        ("host", "ref"),
        [
            ("clip", ServiceRef("default", "clip")),
            ("clip:8000", ServiceRef("default", "clip")),
            ("clip.ml", ServiceRef("ml", "clip")),
            ("clip.ml.svc", ServiceRef("ml", "clip")),
            ("clip.ml.svc.cluster.local", ServiceRef("ml", "clip")),
            ("CLIP.ML.svc.cluster.local.:80", ServiceRef("ml", "clip")),
            ("127.0.0.1:8000", None),
            ("localhost", None),
            ("[::1]:8000", None),
            ("clip.example.com", None),
        ],
    )
    def test_parse_host(self, host: str, ref: ServiceRef | None) -> None:
        assert decisions.parse_host(host, default_namespace="default") == ref

    @pytest.mark.parametrize(
        ("host", "cluster"),
        [
            ("clip.ml.svc", True),
            ("clip.ml.svc.cluster.local:8080", True),
            ("CLIP.ML.SVC.cluster.local.", True),
            ("clip.ml", False),
            ("clip", False),
            ("clip.ml.svc.example.com", False),
            ("127.0.0.5:8080", False),
            ("example.com", False),
        ],
    )
    def test_is_cluster_host(self, host: str, cluster: bool) -> None:
        assert decisions.is_cluster_host(host) is cluster

    def test_model_from_path(self) -> None:
        assert decisions.model_from_path("/v2/models/clip/infer") == "clip"
        assert decisions.model_from_path("/v2/models/clip") == "clip"
        assert decisions.model_from_path("/v2/health/ready") is None


class TestFindRoute:
    def test_virtual_service_by_host(self) -> None:
        view = _view(
            virtual_services=[_virtual_service({"v1": 75, "v2": 25})],
            destination_rules=[DESTINATION_RULE],
        )
        route = decisions.find_route(view, Request(host="clip.ml", path="/v2/health/ready"))
        assert route is not None
        assert route.via == "VirtualService clip"
        assert [(b.version, b.weight, dict(b.labels)) for b in route.backends] == [
            ("v1", 75, {"mmop.io/version": "v1"}),
            ("v2", 25, {"mmop.io/version": "v2"}),
        ]

    def test_virtual_service_short_host_is_relative_to_its_namespace(self) -> None:
        view = _view(
            virtual_services=[_virtual_service({"v1": 100}, hosts=["clip"])],
            destination_rules=[DESTINATION_RULE],
        )
        route = decisions.find_route(view, Request(host="clip.ml.svc.cluster.local", path="/"))
        assert route is not None
        assert route.via == "VirtualService clip"

    def test_external_host_of_a_virtual_service(self) -> None:
        vs = _virtual_service({"v1": 100}, hosts=["clip", "clip.example.com"])
        view = _view(virtual_services=[vs], destination_rules=[DESTINATION_RULE])
        route = decisions.find_route(view, Request(host="clip.example.com", path="/"))
        assert route is not None
        assert route.backends[0].version == "v1"

    def test_missing_subset_is_a_problem_not_a_crash(self) -> None:
        view = _view(
            virtual_services=[_virtual_service({"v3": 100})], destination_rules=[DESTINATION_RULE]
        )
        route = decisions.find_route(view, Request(host="clip.ml", path="/"))
        assert route is not None
        assert route.backends[0].problem is not None
        assert decisions.ready_pods(view, route.backends[0]) == []

    def test_http_route_attached_to_the_service(self) -> None:
        view = _view(http_routes=[_http_route({"v1": 90, "v2": 10})])
        route = decisions.find_route(view, Request(host="clip.ml.svc", path="/"))
        assert route is not None
        assert route.via == "HTTPRoute clip"
        assert [(b.service, b.weight) for b in route.backends] == [("clip-v1", 90), ("clip-v2", 10)]

    def test_plain_service(self) -> None:
        route = decisions.find_route(_view(), Request(host="clip.ml", path="/"))
        assert route is not None
        assert route.via == "Service clip"
        assert route.backends == (Backend(version="", weight=1, namespace="ml", service="clip"),)

    def test_path_with_namespace_header(self) -> None:
        request = Request(
            host="127.0.0.1:8000",
            path="/v2/models/clip/infer",
            method="POST",
            headers={"x-mmop-namespace": "ml"},
        )
        route = decisions.find_route(_view(), request)
        assert route is not None
        assert route.model == ServiceRef("ml", "clip")

    def test_path_defaults_to_the_default_namespace(self) -> None:
        request = Request(host="localhost", path="/v2/models/clip/infer")
        assert decisions.find_route(_view(), request) is None

    def test_unknown_host_falls_back_to_the_path(self) -> None:
        request = Request(
            host="nothing.ml", path="/v2/models/clip/ready", headers={"X-Mmop-Namespace": "ml"}
        )
        route = decisions.find_route(_view(), request)
        assert route is not None
        assert route.model.name == "clip"

    def test_a_proxied_request_is_routed_by_its_host_only(self) -> None:
        # the router as a pod's HTTP proxy: a pod IP or another host is not a model by its path
        request = Request(host="127.0.0.5:8080", path="/v2/models/clip/infer")
        assert decisions.find_route(_view(), request, default_namespace="ml") is not None
        assert decisions.find_route(_view(), request, default_namespace="ml", by_path=False) is None
        by_host = Request(host="clip.ml.svc.cluster.local:8080", path="/v2/models/other/infer")
        route = decisions.find_route(_view(), by_host, by_path=False)
        assert route is not None
        assert route.model == ServiceRef("ml", "clip")

    def test_virtual_service_match_rules(self) -> None:
        vs = _virtual_service({"v1": 100})
        vs["spec"]["http"].insert(
            0,
            {
                "match": [{"headers": {"x-canary": {"exact": "yes"}}, "uri": {"prefix": "/v2"}}],
                "route": [{"destination": {"host": "clip", "subset": "v2"}}],
            },
        )
        view = _view(virtual_services=[vs], destination_rules=[DESTINATION_RULE])
        canary = decisions.find_route(
            view, Request(host="clip.ml", path="/v2/x", headers={"X-Canary": "yes"})
        )
        plain = decisions.find_route(view, Request(host="clip.ml", path="/v2/x"))
        assert canary is not None and plain is not None
        assert [(b.version, b.weight) for b in canary.backends] == [("v2", 100)]
        assert [b.version for b in plain.backends] == ["v1"]

    def test_a_route_for_the_grpc_port_is_skipped(self) -> None:
        """The operator's VirtualService starts with a route matching the gRPC Service port; the
        local router carries HTTP (Service port 80), so it takes the next route."""
        vs = _virtual_service({"v1": 100})
        vs["spec"]["http"].insert(
            0,
            {
                "name": "grpc",
                "match": [{"port": 8081}],
                "route": [
                    {"destination": {"host": "clip", "subset": "v2", "port": {"number": 8081}}}
                ],
            },
        )
        view = _view(virtual_services=[vs], destination_rules=[DESTINATION_RULE])
        route = decisions.find_route(view, Request(host="clip.ml", path="/v2/models/clip/infer"))
        assert route is not None
        assert [(b.version, b.port) for b in route.backends] == [("v1", 80)]

    def test_http_route_path_match(self) -> None:
        route_obj = _http_route({"v1": 1})
        route_obj["spec"]["rules"][0]["matches"] = [
            {"path": {"type": "PathPrefix", "value": "/v2/models"}}
        ]
        view = _view(http_routes=[route_obj])
        hit = decisions.find_route(view, Request(host="clip.ml", path="/v2/models/clip/infer"))
        miss = decisions.find_route(view, Request(host="clip.ml", path="/v2/modelsx"))
        assert hit is not None and miss is not None
        assert len(hit.backends) == 1
        assert miss.backends == ()


class TestChoice:
    def test_weights_split_draws(self) -> None:
        backends = [Backend("v1", 80, "ml", "clip"), Backend("v2", 20, "ml", "clip")]
        rng = random.Random(42)
        counts = Counter(decisions.choose_backend(backends, rng).version for _ in range(10_000))
        assert 7_700 < counts["v1"] < 8_300
        assert counts["v1"] + counts["v2"] == 10_000

    def test_seeded_rng_repeats(self) -> None:
        backends = [Backend("v1", 50, "ml", "clip"), Backend("v2", 50, "ml", "clip")]
        one, two = random.Random(7), random.Random(7)
        first = [decisions.choose_backend(backends, one) for _ in range(50)]
        second = [decisions.choose_backend(backends, two) for _ in range(50)]
        assert first == second
        assert {b.version for b in first if b} == {"v1", "v2"}

    def test_zero_weight_is_never_chosen(self) -> None:
        backends = [Backend("v1", 100, "ml", "clip"), Backend("v2", 0, "ml", "clip")]
        rng = random.Random(0)
        assert {decisions.choose_backend(backends, rng).version for _ in range(200)} == {"v1"}

    def test_all_zero_is_none(self) -> None:
        assert decisions.choose_backend([Backend("v1", 0, "ml", "clip")], random.Random()) is None


class TestPods:
    def test_ready_pods_of_a_subset(self) -> None:
        backend = Backend("v2", 10, "ml", "clip", labels={"mmop.io/version": "v2"})
        assert [p["metadata"]["name"] for p in decisions.ready_pods(_view(), backend)] == [
            "clip-v2-a"
        ]

    def test_service_without_selector_has_no_pods(self) -> None:
        view = _view(services=[{"metadata": _meta("clip"), "spec": {}}])
        assert decisions.ready_pods(view, Backend("", 1, "ml", "clip")) == []

    def test_target_port_by_name_and_number(self) -> None:
        backend = Backend("", 1, "ml", "clip", port=80)
        assert decisions.target_port(_view(), backend, PODS[0]) == 8080
        numeric = _view(services=[_service("clip", {"a": "b"}, target=9000)])
        assert decisions.target_port(numeric, backend, PODS[0]) == 9000

    def test_version_prefers_the_pod_label(self) -> None:
        assert decisions.pod_version(PODS[0], Backend("clip-v1", 1, "ml", "clip-v1")) == "v1"
        bare = {"metadata": {"name": "p"}}
        assert decisions.pod_version(bare, Backend("clip-v1", 1, "ml", "clip-v1")) == "clip-v1"

    def test_round_robin_turns_per_key(self) -> None:
        turns = decisions.RoundRobin()
        pods = PODS[:2]
        picked = [turns.pick(("ml", "clip", "v1"), pods)["metadata"]["name"] for _ in range(4)]
        assert picked == ["clip-v1-a", "clip-v1-b", "clip-v1-a", "clip-v1-b"]
        assert turns.pick(("ml", "clip", "v2"), pods)["metadata"]["name"] == "clip-v1-a"
