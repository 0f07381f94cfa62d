"""Minimal CRDs for the routing kinds the operator writes: Istio's VirtualService and
DestinationRule (networking.istio.io/v1) and Gateway API's HTTPRoute
(gateway.networking.k8s.io/v1). Their schemas keep every field
(``x-kubernetes-preserve-unknown-fields``): the real schemas are checked by the builders'
unit tests, not here."""

from __future__ import annotations

from typing import Any


def _open_schema() -> dict[str, Any]:
    return {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


def minimal_crd(
    *,
    group: str,
    version: str,
    kind: str,
    plural: str,
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A namespaced CRD with one served version, a status subresource and an open schema."""
    names: dict[str, Any] = {
        "kind": kind,
        "plural": plural,
        "singular": kind.lower(),
        "listKind": f"{kind}List",
    }
    if short_names:
        names["shortNames"] = list(short_names)
    if categories:
        names["categories"] = list(categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": _open_schema(),
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def routing_crds() -> list[dict[str, Any]]:
    return [
        minimal_crd(
            group="networking.istio.io",
            version="v1",
            kind="VirtualService",
            plural="virtualservices",
            short_names=("vs",),
            categories=("istio-io", "networking-istio-io"),
        ),
        minimal_crd(
            group="networking.istio.io",
            version="v1",
            kind="DestinationRule",
            plural="destinationrules",
            short_names=("dr",),
            categories=("istio-io", "networking-istio-io"),
        ),
        minimal_crd(
            group="gateway.networking.k8s.io",
            version="v1",
            kind="HTTPRoute",
            plural="httproutes",
            categories=("gateway-api",),
        ),
    ]
