"""Run the operator: ``mmop run`` and ``python -m mmop.operator``."""

from __future__ import annotations

import asyncio
import os

import kopf

from mmop.operator import logs


def run(
    *, namespace: str | None = None, kubeconfig: str | None = None, standalone: bool = True
) -> int:
    """Run kopf with mmop's handlers until interrupted. One replica (standalone, no peering):
    the chart runs a single pod with the Recreate strategy, so two never act at once."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    if namespace:
        os.environ.setdefault("MMOP_OPERATOR_NAMESPACE", namespace)
    logs.configure()
    from mmop.operator import main  # noqa: F401 - registers the handlers

    namespaces = [namespace] if namespace else []
    asyncio.run(
        kopf.operator(
            standalone=standalone,
            namespaces=namespaces,
            clusterwide=not namespaces,
        )
    )
    return 0
