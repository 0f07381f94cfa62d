"""Every object a MultimodalModel should own right now, in the order they are applied."""

from __future__ import annotations

from typing import Any

from mmop.operator import models
from mmop.operator.builders import autoscaling, deployment, disruption, routing, service
from mmop.operator.builders.plan import VersionPlan, plan_versions
from mmop.operator.settings import BuildOptions


def build_children(
    mm: models.MultimodalModel, *, options: BuildOptions, plans: list[VersionPlan] | None = None
) -> list[dict[str, Any]]:
    """Deployments, Services, HPAs, PDBs and the route of every planned version."""
    plans = plan_versions(mm) if plans is None else plans
    objects: list[dict[str, Any]] = []
    for plan in plans:
        objects.append(deployment.build_deployment(mm, plan, options=options))
        objects.append(service.build_version_service(mm, plan))
        hpa = autoscaling.build_hpa(mm, plan)
        if hpa is not None:
            objects.append(hpa)
        pdb = disruption.build_pdb(mm, plan)
        if pdb is not None:
            objects.append(pdb)
    objects.append(service.build_main_service(mm, plans))
    router = mm.spec.traffic.router
    if router == models.Router.ISTIO:
        objects.append(routing.build_destination_rule(mm, plans, options=options))
        objects.append(routing.build_virtual_service(mm, plans, options=options))
    elif router == models.Router.GATEWAY_API:
        objects.append(routing.build_http_route(mm, plans))
    return objects
