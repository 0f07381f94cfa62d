"""Weighted routes: Istio VirtualService + DestinationRule, or a Gateway API HTTPRoute."""

from __future__ import annotations

from typing import Any

from mmop.operator import models, naming
from mmop.operator.builders import meta
from mmop.operator.builders.plan import VersionPlan
from mmop.operator.builders.service import GRPC_SERVICE_PORT, SERVICE_PORT
from mmop.operator.settings import BuildOptions

ISTIO_API = "networking.istio.io/v1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
MESH = "mesh"


def weights(plans: list[VersionPlan]) -> list[tuple[VersionPlan, int]]:
    """(version, weight) pairs that always sum to 100."""
    pairs = [(p, p.weight) for p in plans]
    total = sum(w for _, w in pairs)
    if total != 100:  # only a broken plan gets here; give everything to stable
        pairs = [(p, 100 if p.role == "stable" else 0) for p in plans]
    return pairs


def build_destination_rule(
    mm: models.MultimodalModel, plans: list[VersionPlan], *, options: BuildOptions
) -> dict[str, Any]:
    name, ns = mm.metadata.name, mm.metadata.namespace
    return {
        "apiVersion": ISTIO_API,
        "kind": "DestinationRule",
        "metadata": meta.object_meta(mm, name=name),
        "spec": {
            "host": naming.service_host(name, ns, options.cluster_domain),
            "subsets": [{"name": p.name, "labels": {naming.LABEL_VERSION: p.name}} for p in plans],
        },
    }


def build_virtual_service(
    mm: models.MultimodalModel, plans: list[VersionPlan], *, options: BuildOptions
) -> dict[str, Any]:
    name, ns = mm.metadata.name, mm.metadata.namespace
    host = naming.service_host(name, ns, options.cluster_domain)
    hosts = [name, host, *[h for h in mm.spec.traffic.hosts if h not in (name, host)]]

    def route(port: int) -> list[dict[str, Any]]:
        return [
            {
                "destination": {"host": host, "subset": p.name, "port": {"number": port}},
                "weight": w,
            }
            for p, w in weights(plans)
        ]

    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": meta.object_meta(mm, name=name),
        "spec": {
            "hosts": hosts,
            "gateways": list(mm.spec.traffic.gateways),
            "http": [
                # gRPC first: a route without a port match would send it to the HTTP port.
                {
                    "name": "grpc",
                    "match": [{"port": GRPC_SERVICE_PORT}],
                    "route": route(GRPC_SERVICE_PORT),
                },
                {"name": "versions", "route": route(SERVICE_PORT)},
            ],
        },
    }


def _parent_ref(mm: models.MultimodalModel, gateway: str) -> dict[str, Any]:
    if gateway == MESH:
        # GAMMA: a route attached to the model's Service governs in-mesh traffic to it.
        return {"group": "", "kind": "Service", "name": mm.metadata.name, "port": SERVICE_PORT}
    namespace, _, name = gateway.rpartition("/")
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    return ref


def build_http_route(mm: models.MultimodalModel, plans: list[VersionPlan]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parentRefs": [_parent_ref(mm, g) for g in mm.spec.traffic.gateways],
        "rules": [
            {
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": naming.versioned_name(mm.metadata.name, p.name),
                        "port": SERVICE_PORT,
                        "weight": w,
                    }
                    for p, w in weights(plans)
                ],
            }
        ],
    }
    # Hostnames belong to Gateway listeners; a GAMMA (mesh) route matches by its Service.
    if mm.spec.traffic.hosts and any(g != MESH for g in mm.spec.traffic.gateways):
        spec["hostnames"] = list(mm.spec.traffic.hosts)
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": meta.object_meta(mm, name=mm.metadata.name),
        "spec": spec,
    }
