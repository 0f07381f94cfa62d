"""Reconcile one MultimodalModel: observe, decide (state machine), write children, write status.

Level-based: every pass starts from what the cluster says, so a missed event, a restart or a
child edited behind our back all converge the same way. Only differences are written.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from mmop.operator import kube, metrics, models, naming
from mmop.operator.builders import deployment
from mmop.operator.builders.children import build_children
from mmop.operator.reconcile import bounded, hub, observe, probes, smoke
from mmop.operator.reconcile import quality as quality_probe
from mmop.operator.reconcile.children import ensure_children, list_children
from mmop.operator.reconcile.diff import merge_patch
from mmop.operator.rollout import capacity, commands, machine, observations, recovery, reports
from mmop.operator.rollout.events import Event, event_object
from mmop.operator.rollout.quality import GoldenResult
from mmop.operator.settings import OperatorSettings
from mmop.runtime import contract

log = logging.getLogger(__name__)

HUB_RETRY_SECONDS = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What every reconcile needs; built once at operator start-up and passed down."""

    client: kube.KubeClient
    http: httpx.AsyncClient
    settings: OperatorSettings
    metrics: metrics.OperatorMetrics
    clock: Callable[[], datetime] = field(default=_utcnow)
    gates: bounded.Gates = field(default_factory=bounded.Gates)
    """Per-model connection limits for calls to runtime pods."""
    resolve_commit: hub.Resolver | None = None
    """Pins hf:// revisions to commits (None: pods get the revision as written)."""

    def probe_limits(self, namespace: str, name: str) -> bounded.Limits:
        """Bytes, time and connections one call to this model's pods may take."""
        return bounded.Limits(
            max_bytes=self.settings.probe_max_bytes,
            timeout=self.settings.http_timeout_seconds,
            gate=self.gates.for_model(namespace, name),
        )


@dataclass(frozen=True)
class Outcome:
    action: str
    requeue_after: float | None
    writes: int = 0
    invalid: str | None = None


async def reconcile_model(ctx: Context, *, namespace: str, name: str) -> Outcome:
    started = time.monotonic()
    try:
        outcome = await _reconcile(ctx, namespace=namespace, name=name)
    except Exception:
        ctx.metrics.reconciles.labels(result="error").inc()
        raise
    ctx.metrics.reconcile_duration.observe(time.monotonic() - started)
    ctx.metrics.reconciles.labels(result="invalid" if outcome.invalid else "ok").inc()
    if outcome.action not in ("none", "gone"):
        ctx.metrics.decisions.labels(action=outcome.action).inc()
    return outcome


async def _reconcile(ctx: Context, *, namespace: str, name: str) -> Outcome:
    body = await ctx.client.get_or_none(kube.MULTIMODAL_MODEL, name=name, namespace=namespace)
    if body is None or body["metadata"].get("deletionTimestamp"):
        ctx.gates.forget(namespace, name)
        return Outcome("gone", None)
    now = ctx.clock()
    raw_status: dict[str, Any] = body.get("status") or {}
    status = _read_status(raw_status)
    try:
        mm = models.parse_model({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    except models.InvalidSpecError as error:
        return await _report_invalid(
            ctx, body=body, status=status, raw_status=raw_status, message=str(error), now=now
        )
    faults = [e.name for e in mm.spec.runtime.env if e.name.startswith(contract.FAULT_ENV_PREFIX)]
    if faults and not ctx.settings.allow_fault_env:
        return await _report_invalid(
            ctx,
            body=body,
            status=status,
            raw_status=raw_status,
            message=f"spec.runtime.env: {', '.join(faults)}: fault injection is not enabled in "
            "this operator (MMOP_OPERATOR_ALLOW_FAULT_ENV)",
            now=now,
        )
    mm.status = status
    pin_events: list[Event] = []
    held = await _pin_hub_revision(
        ctx, mm=mm, body=body, raw_status=raw_status, now=now, events=pin_events
    )
    if held is not None:
        return held

    actual, unserved = await list_children(ctx.client, namespace=namespace, model=name)
    recovered: list[Event] = []
    records = recovery.records_from(
        actual.get(kube.DEPLOYMENT, {}), owner_uid=mm.metadata.uid or ""
    )
    if recovery.needs_recovery(status, records):
        found = recovery.recover_status(spec=mm.spec, status=status, records=records, now=now)
        if found.status is None:
            return await _hold(ctx, body=body, mm=mm, raw_status=raw_status, message=found.message)
        status = mm.status = found.status
        recovered.append(Event("Warning", "StatusRecovered", found.message))
        log.warning("%s/%s: %s", namespace, name, found.message)
    pods = await ctx.client.list_items(
        kube.POD,
        namespace=namespace,
        label_selector=naming.selector_string(naming.pod_selector(name)),
    )
    obs = await _observe(
        ctx, mm=mm, deployments=actual.get(kube.DEPLOYMENT, {}), pods=pods, now=now
    )
    decision = machine.next_rollout_decision(
        spec=mm.spec,
        status=status,
        generation=mm.metadata.generation,
        obs=obs,
        tick=ctx.settings.rollout_tick_seconds,
    )
    new_status = decision.status
    new_status.url = naming.model_url(mm, ctx.settings.cluster_domain)
    new_status.selector = naming.selector_string(naming.pod_selector(name))
    live = {
        new_status.stable_revision,
        new_status.canary_revision,
        mm.spec.revision(),
        *(v.revision for v in new_status.versions),
    }
    new_status.hub_commits = {r: c for r, c in new_status.hub_commits.items() if r in live}

    mm.status = new_status
    if new_status.canary_version is not None or new_status.phase == models.Phase.DEPLOYING:
        # Pods are about to start: their smoke-test token must exist first.
        await smoke.smoke_token(ctx.client, mm, create=True)
    desired = build_children(mm, options=ctx.settings.build_options())
    retiring = {v.name for v in new_status.versions if v.role == models.VersionRole.RETIRING}
    report = await ensure_children(
        ctx.client,
        namespace=namespace,
        owner_uid=mm.metadata.uid or "",
        desired=desired,
        actual=actual,
        unserved=unserved,
        keep_versions=retiring,
    )
    events = [*pin_events, *recovered, *decision.events]
    if new_status.canary_version in report.conflict_versions:
        # Its objects' names belong to another model: it must never get traffic.
        stopped = machine.stop_canary(
            spec=mm.spec,
            status=new_status,
            generation=mm.metadata.generation,
            obs=obs,
            reason="NameConflict",
            message="; ".join(report.conflicts),
        )
        new_status = stopped.status
        new_status.url = naming.model_url(mm, ctx.settings.cluster_domain)
        new_status.selector = naming.selector_string(naming.pod_selector(name))
        events.extend(stopped.events)
        decision = dataclasses.replace(
            decision, action=stopped.action, requeue_after=stopped.requeue_after
        )
    generation = mm.metadata.generation
    events += reports.routes_ready(
        new_status,
        unserved=report.unserved,
        router=mm.spec.traffic.router,
        now=now,
        generation=generation,
    )
    events += reports.children_synced(
        new_status,
        conflicts=report.conflicts,
        refused=report.refused,
        now=now,
        generation=generation,
    )

    writes = report.writes + await _write(
        ctx, body=body, raw_status=raw_status, status=new_status, events=events, now=now
    )
    if report.writes or decision.action != "none":
        log.info(
            "%s/%s: %s (phase %s, weight %s%%); created %s updated %s deleted %s",
            namespace,
            name,
            decision.action,
            new_status.phase.value,
            new_status.canary_weight,
            report.created,
            report.updated,
            report.deleted,
        )
    return Outcome(decision.action, decision.requeue_after, writes=writes)


def _read_status(raw: dict[str, Any]) -> models.MultimodalModelStatus:
    try:
        return models.MultimodalModelStatus.model_validate(raw)
    except ValidationError as error:
        # Never crash-loop on a status someone edited by hand: start over from the cluster.
        log.warning("unreadable status, starting from scratch: %s", error)
        return models.MultimodalModelStatus()


async def _observe(
    ctx: Context,
    *,
    mm: models.MultimodalModel,
    deployments: dict[str, dict[str, Any]],
    pods: list[dict[str, Any]],
    now: datetime,
) -> observations.Observations:
    status, name = mm.status, mm.metadata.name
    expected: dict[str, str] = {}
    if status.stable_version and status.stable_revision:
        expected[status.stable_version] = status.stable_revision
    if status.canary_version and status.canary_revision:
        expected[status.canary_version] = status.canary_revision
    for v in status.versions:
        expected.setdefault(v.name, v.revision)
    # The first deploy: the machine is about to make the spec's version stable.
    expected.setdefault(mm.spec.version, mm.spec.revision())

    by_version: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        version = (pod["metadata"].get("labels") or {}).get(naming.LABEL_VERSION, "")
        by_version.setdefault(version, []).append(pod)
    versions = {
        version: observe.observe_version(
            deployments.get(naming.versioned_name(name, version)),
            by_version.get(version, []),
            revision=revision,
        )
        for version, revision in expected.items()
    }

    smoke_result = None
    canary_metrics = stable_metrics = None
    golden = None
    if status.canary_version and status.canary_revision:
        infos = _serving_pods(by_version, status.canary_version, status.canary_revision)
        canary = versions.get(status.canary_version)
        limits = ctx.probe_limits(mm.metadata.namespace, name)
        if machine.wants_smoke_test(status) and canary is not None and canary.available and infos:
            try:
                token = await _auth_token(ctx, mm)
            except _SecretUnreadable as error:
                smoke_result = observations.SmokeResult(False, str(error))
            else:
                smoke_token = await smoke.smoke_token(ctx.client, mm, create=False)
                smoke_result = await probes.smoke_test(
                    ctx.http,
                    pod=infos[0],
                    model=name,
                    task=mm.spec.model.task,
                    token=token,
                    smoke_token=smoke_token,
                    limits=limits,
                )
                if smoke_result.ok and machine.wants_golden_check(mm.spec, status):
                    golden = await _golden_check(
                        ctx,
                        mm=mm,
                        pods=by_version,
                        canary=infos[0],
                        canary_token=token,
                        smoke_token=smoke_token,
                        limits=limits,
                    )
        if machine.wants_canary_metrics(status):
            canary_metrics = await _metrics(ctx, mm, infos, limits=limits)
            if status.stable_version and status.stable_revision:
                stable_pods = _serving_pods(
                    by_version, status.stable_version, status.stable_revision
                )
                stable_metrics = await _metrics(ctx, mm, stable_pods, limits=limits)
    gpus = await _free_gpus(ctx, mm) if machine.wants_capacity(mm.spec, status) else None
    return observations.Observations(
        now=now,
        versions=versions,
        gpus=gpus,
        smoke=smoke_result,
        canary_metrics=canary_metrics,
        stable_metrics=stable_metrics,
        golden=golden,
        command=commands.parse_request(mm.metadata.annotations),
    )


async def _free_gpus(ctx: Context, mm: models.MultimodalModel) -> capacity.GpuCapacity | None:
    """The free GPUs the canary could use: the matching Nodes' allocatable minus the requests of
    every Pod bound there (all namespaces). None when the operator may not list them: the state
    machine then takes nothing from the stable (Surge, as without capacity planning)."""
    try:
        nodes = await ctx.client.list_items(kube.NODE)
        pods = await ctx.client.list_items(kube.POD)
    except kube.ApiError as error:
        if error.status not in (401, 403, 404):
            raise
        log.warning(
            "%s/%s: cannot list Nodes and Pods for the free GPUs (HTTP %s): the operator needs "
            "list on nodes and pods cluster-wide",
            mm.metadata.namespace,
            mm.metadata.name,
            error.status,
        )
        return None
    return capacity.free_gpus(
        nodes=nodes,
        pods=pods,
        resource=mm.spec.resources.gpu_resource,
        node_selector=mm.spec.scheduling.node_selector,
        tolerations=deployment.pod_tolerations(mm.spec.serving()),
    )


async def _golden_check(
    ctx: Context,
    *,
    mm: models.MultimodalModel,
    pods: dict[str, list[dict[str, Any]]],
    canary: observe.PodInfo,
    canary_token: str | None,
    smoke_token: str | None,
    limits: bounded.Limits,
) -> GoldenResult:
    """Compare one ready stable pod's answers to the golden set with the canary pod's."""
    status = mm.status
    stable = next(
        (
            p
            for p in observe.pod_infos(pods.get(status.stable_version or "", []))
            if p.ready and p.ip and p.revision == status.stable_revision
        ),
        None,
    )
    stable_token = canary_token
    if status.stable_spec is not None:
        # The stable may run with another token Secret than the one the canary's spec names.
        stable_token = await _token_from(
            ctx, status.stable_spec.runtime.auth_secret_ref, namespace=mm.metadata.namespace
        )
    return await quality_probe.golden_check(
        ctx.client,
        ctx.http,
        mm=mm,
        stable=stable,
        canary=canary,
        stable_token=stable_token,
        canary_token=canary_token,
        smoke_token=smoke_token,
        limits=limits,
    )


def _serving_pods(
    by_version: dict[str, list[dict[str, Any]]], version: str, revision: str
) -> list[observe.PodInfo]:
    return [
        p
        for p in observe.pod_infos(by_version.get(version, []))
        if p.ready and p.ip and p.revision == revision
    ]


async def _metrics(
    ctx: Context,
    mm: models.MultimodalModel,
    pods: list[observe.PodInfo],
    *,
    limits: bounded.Limits,
) -> models.MetricsSnapshot | None:
    """One version's cumulative counters: its pods' /metrics, or Prometheus when configured."""
    prometheus = ctx.settings.prometheus_url
    if prometheus:
        return await probes.prometheus_snapshot(
            ctx.http, url=prometheus, namespace=mm.metadata.namespace, pods=pods, limits=limits
        )
    return await probes.scrape(ctx.http, pods, limits=limits)


class _SecretUnreadable(Exception):
    """The operator may not read the model's auth Secret (RBAC): the check fails, saying why."""


async def _auth_token(ctx: Context, mm: models.MultimodalModel) -> str | None:
    return await _token_from(ctx, mm.spec.runtime.auth_secret_ref, namespace=mm.metadata.namespace)


async def _token_from(
    ctx: Context, ref: models.SecretKeyRef | None, *, namespace: str
) -> str | None:
    if ref is None:
        return None
    try:
        secret = await ctx.client.get_or_none(kube.SECRET, name=ref.name, namespace=namespace)
    except kube.ApiError as error:
        if error.status not in (401, 403):
            raise
        raise _SecretUnreadable(
            f"cannot read Secret {namespace}/{ref.name} for the test inference "
            f"(HTTP {error.status}): the operator needs get on Secrets in {namespace} "
            "(chart value rbac.secretNamespaces)"
        ) from None
    data = (secret or {}).get("data") or {}
    if ref.key not in data:
        return None
    return base64.b64decode(data[ref.key]).decode().strip()


async def _pin_hub_revision(
    ctx: Context,
    *,
    mm: models.MultimodalModel,
    body: dict[str, Any],
    raw_status: dict[str, Any],
    now: datetime,
    events: list[Event],
) -> Outcome | None:
    """Resolve the spec's hf:// revision to a commit before its pods first exist; None to go
    on, or the Outcome of holding everything (the hub cannot say which weights to deploy)."""
    status, spec = mm.status, mm.spec
    revision = spec.revision()
    repo = hub.hub_repo(spec.model)
    if repo is None or ctx.resolve_commit is None or revision in status.hub_commits:
        return None
    running = {
        status.stable_revision,
        status.canary_revision,
        *(v.revision for v in status.versions),
    }
    if revision in running:
        return None  # deployed before pinning existed: changing its pods now would be a rollout
    source = f"hf://{repo}@{spec.model.revision}"
    try:
        commit = await ctx.resolve_commit(repo, spec.model.revision)
    except hub.HubError as error:
        message = f"waiting to pin {source} to a commit: {str(error)[:300]}"
        warnings = reports.revision_unresolved(
            status, message=message, now=now, generation=mm.metadata.generation
        )
        await _write(ctx, body=body, raw_status=raw_status, status=status, events=warnings, now=now)
        log.warning("%s/%s: %s", mm.metadata.namespace, mm.metadata.name, message)
        return Outcome("hold", HUB_RETRY_SECONDS)
    status.hub_commits = {**status.hub_commits, revision: commit}
    events.extend(
        reports.revision_pinned(
            status,
            message=f"{source} pinned to commit {commit}",
            now=now,
            generation=mm.metadata.generation,
        )
    )
    return None


async def _hold(
    ctx: Context,
    *,
    body: dict[str, Any],
    mm: models.MultimodalModel,
    raw_status: dict[str, Any],
    message: str,
) -> Outcome:
    """No stable record and no safe way to rebuild it: write no child, say why in status."""
    now = ctx.clock()
    status = mm.status.model_copy(deep=True)
    warnings = reports.stable_record_missing(
        status, message=message, now=now, generation=mm.metadata.generation
    )
    if warnings:
        log.warning("%s/%s: %s", mm.metadata.namespace, mm.metadata.name, message)
    writes = await _write(
        ctx, body=body, raw_status=raw_status, status=status, events=warnings, now=now
    )
    return Outcome("hold", None, writes=writes)


async def _report_invalid(
    ctx: Context,
    *,
    body: dict[str, Any],
    status: models.MultimodalModelStatus,
    raw_status: dict[str, Any],
    message: str,
    now: datetime,
) -> Outcome:
    """Ready=False/InvalidSpec and an Event naming the field; no child is touched."""
    md = body["metadata"]
    warnings = reports.invalid_spec(
        status, message=message, now=now, generation=md.get("generation")
    )
    if warnings is None:
        return Outcome("invalid", None, invalid=message)
    writes = await _write(
        ctx, body=body, raw_status=raw_status, status=status, events=warnings, now=now
    )
    log.warning("%s/%s: invalid spec: %s", md["namespace"], md["name"], message)
    return Outcome("invalid", None, writes=writes, invalid=message)


async def _write(
    ctx: Context,
    *,
    body: dict[str, Any],
    raw_status: dict[str, Any],
    status: models.MultimodalModelStatus,
    events: list[Event],
    now: datetime,
) -> int:
    """The status (only what changed, as a merge patch), then the Events that explain it; the
    number of writes."""
    md = body["metadata"]
    writes = 0
    patch = merge_patch(raw_status, status.wire())
    if patch is not None:
        await ctx.client.patch_status(
            kube.MULTIMODAL_MODEL, name=md["name"], namespace=md["namespace"], status=patch
        )
        writes += 1
    for event in events:
        await post_event(ctx.client, body=body, event=event, now=now)
        writes += 1
    return writes


async def post_event(
    client: kube.KubeClient, *, body: dict[str, Any], event: Event, now: datetime
) -> None:
    """A core/v1 Event on the MultimodalModel (what `kubectl describe` shows)."""
    await client.create(
        kube.EVENT, event_object(body, event, now=now), namespace=body["metadata"]["namespace"]
    )
