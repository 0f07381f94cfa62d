"""Services: NAME (the model's entry point) and NAME-VERSION (one per version)."""

from __future__ import annotations

from typing import Any

from mmop.operator import models, naming
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
    """Pods behind Service NAME: only versions with weight > 0, with every router.

    Clients outside the mesh reach the model through this Service, so it must never select a
    canary at weight 0 (or a retiring version); with a mesh, Istio subsets and GAMMA routes
    are cut from the same endpoints, so a weighted canary must be in it. One version with
    weight: that version. Stable and canary both weighted: all the model's pods (label
    selectors have no "in"; the state machine retires old versions before a canary gets
    weight). If retiring versions are still recorded then, the stable alone (stable first).
    """
    name = mm.metadata.name
    live = [p for p in plans if p.weight > 0]
    stable = next((p for p in plans if p.role == "stable"), None)
    if len(live) == 1:
        return naming.pod_selector(name, live[0].name)
    retiring = any(v.role == models.VersionRole.RETIRING for v in mm.status.versions)
    if len(live) > 1 and not retiring:
        return naming.pod_selector(name)
    first = stable or (live[0] if live else plans[0])
    return naming.pod_selector(name, first.name)


def build_main_service(mm: models.MultimodalModel, plans: list[VersionPlan]) -> dict[str, Any]:
    return _service(
        metadata=meta.object_meta(mm, name=mm.metadata.name),
        selector=main_selector(mm, plans),
        grpc=main_service_has_grpc(mm),
    )


def build_version_service(mm: models.MultimodalModel, plan: VersionPlan) -> dict[str, Any]:
    return _service(
        metadata=meta.object_meta(
            mm, name=naming.versioned_name(mm.metadata.name, plan.name), version=plan.name
        ),
        selector=naming.pod_selector(mm.metadata.name, plan.name),
    )
