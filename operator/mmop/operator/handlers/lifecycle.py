"""Operator start-up and clean-up: kopf settings, the client, the health and metrics server."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpx
import kopf
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mmop.operator import kube
from mmop.operator.handlers.state import MEMO_KEY, OperatorState
from mmop.operator.metrics import OperatorMetrics
from mmop.operator.reconcile import bounded, hub
from mmop.operator.reconcile.model import Context
from mmop.operator.settings import OperatorSettings

log = logging.getLogger(__name__)
STALE_LOOP_SECONDS = 300  # no reconcile pass finished for this long while models exist: unhealthy
# Distinct from the dev cluster's own clients (kubelet, router: mmop/...), so audit logs and
# the RBAC test can tell the operator's requests apart.
OPERATOR_USER_AGENT = "mmop-operator/0.1"


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Keep all state in annotations and our own status fields; status stays typed and pruned.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mmop.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mmop.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "mmop.io/finalizer"
    settings.posting.enabled = False  # our Events say more than kopf's handler-error Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.batching.error_delays = (1, 2, 5, 10, 20, 30)


def handle_login() -> kopf.ConnectionInfo:
    """kopf authenticates with the same credentials as our client (one loader for both)."""
    conn = kube.Connection.auto(os.environ.get("KUBECONFIG") or None)
    return kopf.ConnectionInfo(
        server=conn.server,
        token=conn.token,
        ca_path=conn.ca_file,
        ca_data=conn.ca_data,
        certificate_path=conn.cert_file,
        private_key_path=conn.key_file,
        insecure=not conn.verify,
        default_namespace=None,
    )


async def handle_startup(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = OperatorSettings()
    configure_kopf(settings, ours)
    connection = kube.Connection.auto(os.environ.get("KUBECONFIG") or None)
    # No pool limit: calls to runtime pods are bounded per model (bounded.Gates), so a pool
    # shared by all models could only let one model's slow pods block the others.
    # The hub is HTTPS and its calls are cut at a deadline: kube.async_transport closes a
    # socket whose handshake the deadline interrupted.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
    http = httpx.AsyncClient(
        timeout=ours.http_timeout_seconds,
        limits=limits,
        transport=kube.async_transport(True, limits),
    )
    resolver = (
        hub.http_resolver(
            http,
            endpoint=ours.hub_endpoint,
            token=ours.hub_token,
            limits=bounded.Limits(
                max_bytes=ours.probe_max_bytes, timeout=ours.http_timeout_seconds * 2
            ),
        )
        if ours.pin_hub_revisions
        else None
    )
    context = Context(
        client=kube.KubeClient(
            connection,
            field_manager="mmop-operator",
            user_agent=OPERATOR_USER_AGENT,
            max_in_flight=ours.api_max_in_flight,
        ),
        http=http,
        settings=ours,
        metrics=OperatorMetrics(),
        gates=bounded.Gates(ours.probe_connections_per_model),
        resolve_commit=resolver,
    )
    state = OperatorState(context=context)
    state.health_runner = await _start_health_server(state, port=ours.health_port)
    memo[MEMO_KEY] = state
    log.info(
        "mmop operator started against %s (health and metrics on :%d)",
        connection.server,
        ours.health_port,
    )


async def handle_cleanup(*, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState | None = memo.get(MEMO_KEY)
    if state is None:
        return
    await state.context.client.close()
    await state.context.http.aclose()
    if state.health_runner is not None:
        await state.health_runner.cleanup()


async def _start_health_server(state: OperatorState, *, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        metrics = state.context.metrics
        last = metrics.last_loop._value.get()
        models = metrics.models._value.get()
        if models and last and time.time() - last > STALE_LOOP_SECONDS:
            return web.json_response(
                {"ok": False, "reason": "reconcile loops are stuck"}, status=503
            )
        return web.json_response({"ok": True, "models": int(models)})

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(state.context.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host="0.0.0.0", port=port).start()
    return runner
