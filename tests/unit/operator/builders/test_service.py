"""builders/service.py: the model's Service and the per-version Services."""

from __future__ import annotations

import pytest

from mmop.operator import models
from mmop.operator.builders import service
from mmop.operator.builders.plan import plan_versions
from tests.support.models import WithCanary


def _service_router(mm: models.MultimodalModel) -> models.MultimodalModel:
    traffic = models.Traffic(router=models.Router.SERVICE)
    return mm.model_copy(update={"spec": mm.spec.model_copy(update={"traffic": traffic})})


class TestBuildMainService:
    def test_mesh_selects_only_weighted_versions(
        self, clip: models.MultimodalModel, with_canary: WithCanary
    ) -> None:
        # Clients outside the mesh use Service NAME: a canary at weight 0 is not behind it.
        mm = with_canary(clip, weight=0)
        svc = service.build_main_service(mm, plan_versions(mm))
        assert svc["metadata"]["name"] == "clip"
        assert svc["spec"]["selector"] == {"mmop.io/model": "clip", "mmop.io/version": "v1"}
        assert svc["spec"]["ports"][0]["port"] == 80
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        assert svc["spec"]["ports"][1] == {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }

    def test_gateway_api_leaves_grpc_to_the_version_services(
        self, clip: models.MultimodalModel, with_canary: WithCanary
    ) -> None:
        """An HTTPRoute weighs the HTTP port only: gRPC on Service NAME would reach an unverified
        canary, so only the per-version Services carry it."""
        traffic = models.Traffic(router=models.Router.GATEWAY_API)
        gateway = clip.model_copy(
            update={"spec": clip.spec.model_copy(update={"traffic": traffic})}
        )
        mm = with_canary(gateway, weight=0)
        main = service.build_main_service(mm, plan_versions(mm))
        assert [p["name"] for p in main["spec"]["ports"]] == ["http"]
        for plan in plan_versions(mm):
            version = service.build_version_service(mm, plan)
            assert [p["name"] for p in version["spec"]["ports"]] == ["http", "grpc"]

    def test_plain_service_routing_offers_grpc(self, clip: models.MultimodalModel) -> None:
        mm = _service_router(clip)
        main = service.build_main_service(mm, plan_versions(mm))
        assert [p["name"] for p in main["spec"]["ports"]] == ["http", "grpc"]

    @pytest.mark.parametrize("router", list(models.Router))
    @pytest.mark.parametrize(
        ("weight", "selector"),
        [
            (0, {"mmop.io/model": "clip", "mmop.io/version": "v1"}),
            (25, {"mmop.io/model": "clip"}),
            (100, {"mmop.io/model": "clip", "mmop.io/version": "v2"}),
        ],
    )
    def test_every_router_selects_versions_with_weight(
        self,
        clip: models.MultimodalModel,
        with_canary: WithCanary,
        router: models.Router,
        weight: int,
        selector: dict[str, str],
    ) -> None:
        traffic = models.Traffic(router=router)
        mm = clip.model_copy(update={"spec": clip.spec.model_copy(update={"traffic": traffic})})
        mm = with_canary(mm, weight=weight)
        assert service.build_main_service(mm, plan_versions(mm))["spec"]["selector"] == selector

    def test_retiring_versions_are_never_selected(
        self, clip: models.MultimodalModel, with_canary: WithCanary
    ) -> None:
        mm = with_canary(clip, weight=25)
        old = models.VersionStatus(name="v0", revision="abc", role=models.VersionRole.RETIRING)
        mm.status.versions = [*mm.status.versions, old]
        # All-versions would include v0's pods: stable first instead.
        selector = service.build_main_service(mm, plan_versions(mm))["spec"]["selector"]
        assert selector == {"mmop.io/model": "clip", "mmop.io/version": "v1"}
        # After a promotion (no canary), only the new stable.
        promoted = with_canary(clip, weight=0)
        promoted.status.canary_version = None
        promoted.status.versions = [old]
        selector = service.build_main_service(promoted, plan_versions(promoted))["spec"]["selector"]
        assert selector == {"mmop.io/model": "clip", "mmop.io/version": "v1"}


class TestBuildVersionService:
    def test_selects_one_version(
        self, clip: models.MultimodalModel, with_canary: WithCanary
    ) -> None:
        mm = with_canary(clip, weight=10)
        canary = plan_versions(mm)[1]
        svc = service.build_version_service(mm, canary)
        assert svc["metadata"]["name"] == "clip-v2"
        assert svc["metadata"]["labels"]["mmop.io/version"] == "v2"
        assert svc["spec"]["selector"] == {"mmop.io/model": "clip", "mmop.io/version": "v2"}
