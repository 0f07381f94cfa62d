"""Services: NAME (the model's entry point) and NAME-VERSION (one per version)."""

from __future__ import annotations

from typing import Any

from mmop.operator import models
from mmop.operator.builders import meta
from mmop.operator.builders.plan import VersionPlan
from mmop.runtime import contract

SERVICE_PORT = 80
GRPC_SERVICE_PORT = contract.GRPC_PORT


def _service(
    *, metadata: dict[str, Any], selector: dict[str, str], grpc: bool = True
) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [
        {
            "name": contract.HTTP_PORT_NAME,
            "port": SERVICE_PORT,
            "targetPort": contract.HTTP_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    if grpc:
        ports.append(
            {
                "name": contract.GRPC_PORT_NAME,
                "port": GRPC_SERVICE_PORT,
                "targetPort": contract.GRPC_PORT_NAME,
                "protocol": "TCP",
                "appProtocol": "grpc",  # Istio and Gateway API read it as HTTP/2 gRPC
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }


def main_service_has_grpc(mm: models.MultimodalModel) -> bool:
    """Whether Service NAME offers the gRPC port: only where the weights hold for it too.

    Istio's VirtualService has a gRPC route with the same weights, and plain Service routing
    weighs by its selector. A Gateway API HTTPRoute governs the HTTP port only (weighting gRPC
    takes a GRPCRoute), so there the gRPC port would reach every version, an unverified canary
    included: it is left out, and the per-version Services carry it.
    """
    return mm.spec.traffic.router != models.Router.GATEWAY_API


def main_selector(mm: models.MultimodalModel, plans: list[VersionPlan]) -> dict[str, str]:
    """Pods behind Service NAME.

    With a mesh (Istio, Gateway API) the route decides, so it selects every version. With plain
    Service routing the selector is the router: it pins the stable version until the canary
    has weight, then selects all versions and the replica ratio makes the split.
    """
    if mm.spec.traffic.router != models.Router.SERVICE:
        return meta.pod_selector(mm.metadata.name)
    canary_live = any(p.role == "canary" and p.weight > 0 for p in plans)
    if canary_live:
        return meta.pod_selector(mm.metadata.name)
    stable = next(p for p in plans if p.role == "stable")
    return meta.pod_selector(mm.metadata.name, stable.name)


def build_main_service(mm: models.MultimodalModel, plans: list[VersionPlan]) -> dict[str, Any]:
    return _service(
        metadata=meta.object_meta(mm, name=mm.metadata.name),
        selector=main_selector(mm, plans),
        grpc=main_service_has_grpc(mm),
    )


def build_version_service(mm: models.MultimodalModel, plan: VersionPlan) -> dict[str, Any]:
    return _service(
        metadata=meta.object_meta(
            mm, name=meta.versioned_name(mm.metadata.name, plan.name), version=plan.name
        ),
        selector=meta.pod_selector(mm.metadata.name, plan.name),
    )
