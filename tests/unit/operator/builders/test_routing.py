"""builders/routing.py: Istio and Gateway API routes with weights that sum to 100."""

from __future__ import annotations

from typing import Any

import pytest

from mmop.operator import models
from mmop.operator.builders import routing
from mmop.operator.builders.plan import plan_versions
from mmop.operator.settings import BuildOptions
from tests.support.models import WithCanary


def _gateway(
    mm: models.MultimodalModel, gateways: list[str], hosts: list[str] | None = None
) -> models.MultimodalModel:
    traffic = models.Traffic(router=models.Router.GATEWAY_API, gateways=gateways, hosts=hosts or [])
    return mm.model_copy(update={"spec": mm.spec.model_copy(update={"traffic": traffic})})


def _named_routes(vs: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [route for route in vs["spec"]["http"] if route["name"] == name]
    return found


class TestVirtualService:
    @pytest.mark.parametrize("weight", [0, 10, 25, 50, 100])
    def test_weights_sum_to_100(
        self,
        clip: models.MultimodalModel,
        with_canary: WithCanary,
        options: BuildOptions,
        weight: int,
    ) -> None:
        mm = with_canary(clip, weight=weight)
        vs = routing.build_virtual_service(mm, plan_versions(mm), options=options)
        http, grpc = _named_routes(vs, "versions"), _named_routes(vs, "grpc")
        for route in (http["route"], grpc["route"]):
            assert [r["destination"]["subset"] for r in route] == ["v1", "v2"]
            assert [r["weight"] for r in route] == [100 - weight, weight]
        assert {r["destination"]["port"]["number"] for r in grpc["route"]} == {8081}
        assert {r["destination"]["port"]["number"] for r in http["route"]} == {80}

    def test_grpc_route_comes_first_and_matches_its_port(
        self, clip: models.MultimodalModel, with_canary: WithCanary, options: BuildOptions
    ) -> None:
        """Istio takes the first route that matches: an unmatched HTTP route first would send
        gRPC calls to the HTTP port."""
        mm = with_canary(clip, weight=25)
        vs = routing.build_virtual_service(mm, plan_versions(mm), options=options)
        first, second = vs["spec"]["http"]
        assert first["name"] == "grpc"
        assert first["match"] == [{"port": 8081}]
        assert second["name"] == "versions"
        assert "match" not in second

    def test_stable_only(self, clip: models.MultimodalModel, options: BuildOptions) -> None:
        vs = routing.build_virtual_service(clip, plan_versions(clip), options=options)
        assert vs["spec"]["hosts"] == ["clip", "clip.ml.svc.cluster.local"]
        assert vs["spec"]["gateways"] == ["mesh"]
        (only,) = _named_routes(vs, "versions")["route"]
        assert only == {
            "destination": {
                "host": "clip.ml.svc.cluster.local",
                "subset": "v1",
                "port": {"number": 80},
            },
            "weight": 100,
        }


class TestDestinationRule:
    def test_one_subset_per_version(
        self, clip: models.MultimodalModel, with_canary: WithCanary, options: BuildOptions
    ) -> None:
        mm = with_canary(clip, weight=25)
        dr = routing.build_destination_rule(mm, plan_versions(mm), options=options)
        assert dr["spec"]["host"] == "clip.ml.svc.cluster.local"
        assert dr["spec"]["subsets"] == [
            {"name": "v1", "labels": {"mmop.io/version": "v1"}},
            {"name": "v2", "labels": {"mmop.io/version": "v2"}},
        ]


class TestHttpRoute:
    def test_weighted_backends(self, clip: models.MultimodalModel, with_canary: WithCanary) -> None:
        mm = with_canary(_gateway(clip, ["infra/public"], ["clip.example.com"]), weight=25)
        route = routing.build_http_route(mm, plan_versions(mm))
        backends = route["spec"]["rules"][0]["backendRefs"]
        assert [(b["name"], b["weight"]) for b in backends] == [("clip-v1", 75), ("clip-v2", 25)]
        assert route["spec"]["parentRefs"] == [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "public",
                "namespace": "infra",
            }
        ]
        assert route["spec"]["hostnames"] == ["clip.example.com"]

    def test_mesh_attaches_to_the_service(self, clip: models.MultimodalModel) -> None:
        mm = _gateway(clip, ["mesh"], ["ignored.example.com"])
        route = routing.build_http_route(mm, plan_versions(mm))
        assert route["spec"]["parentRefs"] == [
            {"group": "", "kind": "Service", "name": "clip", "port": 80}
        ]
        assert "hostnames" not in route["spec"]
