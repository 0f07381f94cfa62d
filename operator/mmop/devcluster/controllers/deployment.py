"""The Deployment controller of the dev cluster: Deployments -> Pods (created, replaced on a
template change, scaled) and each Deployment's status. Decisions are the pure functions of
:mod:`.deployment_decisions`; this module reads the watch cache and writes through the API."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mmop.devcluster.controllers import deployment_decisions
from mmop.devcluster.informer import Cache
from mmop.operator import kube

log = logging.getLogger(__name__)


def terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def uid_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class DeploymentController:
    """Keeps every Deployment's pods and status in line with its spec."""

    def __init__(self, client: kube.KubeClient, cache: Cache, *, rng: random.Random) -> None:
        self._client = client
        self._cache = cache
        self._rng = rng

    async def sync(self, now: datetime) -> None:
        """One pass: pods for every Deployment, then orphans."""
        for deployment in self._cache[kube.DEPLOYMENT]:
            if not terminating(deployment):
                await self._sync_deployment(deployment, now)
        await self._delete_orphans()

    def _owned_pods(self, deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
        ns = str((deployment.get("metadata") or {}).get("namespace") or "")
        uid = uid_of(deployment)
        return [
            p
            for p in self._cache[kube.POD].in_namespace(ns)
            if deployment_decisions.controller_uid(p) == uid and not terminating(p)
        ]

    def _views(
        self, deployment: Mapping[str, Any], now: datetime
    ) -> tuple[str, list[deployment_decisions.PodView]]:
        spec = deployment.get("spec") or {}
        hash_ = deployment_decisions.template_hash(spec.get("template") or {})
        min_ready = int(spec.get("minReadySeconds") or 0)
        views = [
            deployment_decisions.pod_view(
                p, current_hash=hash_, now=now, min_ready_seconds=min_ready
            )
            for p in self._owned_pods(deployment)
        ]
        return hash_, views

    async def _sync_deployment(self, deployment: dict[str, Any], now: datetime) -> None:
        meta = deployment.get("metadata") or {}
        name, ns = str(meta.get("name")), str(meta.get("namespace"))
        hash_, views = self._views(deployment, now)
        plan = deployment_decisions.plan_pods(
            desired=deployment_decisions.desired_replicas(deployment),
            strategy=deployment_decisions.strategy(deployment),
            new=[v for v in views if v.current],
            old=[v for v in views if not v.current],
        )
        for _ in range(plan.create):
            pod = deployment_decisions.build_pod(
                deployment, hash_=hash_, name=deployment_decisions.pod_name(name, hash_, self._rng)
            )
            created = await self._client.create(kube.POD, pod, namespace=ns)
            self._cache[kube.POD].remember(created)
            log.info("deployment %s/%s: created pod %s", ns, name, pod["metadata"]["name"])
        for pod_name in plan.delete:
            await self._delete_pod(ns, pod_name, why=f"deployment {ns}/{name}")

    async def _delete_pod(self, ns: str, name: str, *, why: str) -> None:
        pod = self._cache[kube.POD].get(ns, name)
        await self._client.delete(kube.POD, name=name, namespace=ns)
        if pod is not None:
            self._cache[kube.POD].forget(pod)
        log.info("%s: deleted pod %s", why, name)

    async def _delete_orphans(self) -> None:
        """Pods whose Deployment is gone, in case garbage collection has not removed them."""
        alive = {uid_of(d) for d in self._cache[kube.DEPLOYMENT]}
        for pod in self._cache[kube.POD]:
            owner = deployment_decisions.controller_uid(pod)
            if owner is not None and owner not in alive and not terminating(pod):
                meta = pod.get("metadata") or {}
                await self._delete_pod(
                    str(meta.get("namespace")), str(meta.get("name")), why="orphan"
                )

    async def write_statuses(self, now: datetime) -> None:
        """Each Deployment's status, written only when it changed."""
        for deployment in self._cache[kube.DEPLOYMENT]:
            if terminating(deployment):
                continue
            meta = deployment.get("metadata") or {}
            hash_, views = self._views(deployment, now)
            status = deployment_decisions.deployment_status(
                deployment, views, now=now, replica_set=f"{meta.get('name')}-{hash_}"
            )
            if status == deployment.get("status"):
                continue
            with contextlib.suppress(kube.NotFoundError):
                updated = await self._client.patch_status(
                    kube.DEPLOYMENT,
                    name=str(meta.get("name")),
                    namespace=str(meta.get("namespace")),
                    status=status,
                )
                self._cache[kube.DEPLOYMENT].remember(updated)
