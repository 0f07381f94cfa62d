"""The server process: uvicorn around the app, gRPC beside it on the same event loop (unless
``grpc_port`` is 0), model loading in the background, SIGTERM drain of both.

Start-up: listen at once (liveness answers, readiness is 503 while the model loads), load and
warm up, then report ready. A load failure logs one line and ends the process with status 1.
SIGTERM: readiness and new requests get 503 (gRPC: UNAVAILABLE), in-flight requests finish (up to
``drain_timeout_seconds``), then the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import AsyncIterator
from types import FrameType

import grpc
import uvicorn
from fastapi import FastAPI

from mmop.runtime import loading, media
from mmop.runtime.dataplane import DataPlane
from mmop.runtime.errors import LoadError
from mmop.runtime.metrics import Metrics
from mmop.runtime.mirror import Mirror
from mmop.runtime.server import grpc_app
from mmop.runtime.server.app import create_app
from mmop.runtime.settings import RuntimeSettings

log = logging.getLogger("mmop.runtime")
GRPC_STOP_GRACE_SECONDS = 1.0


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains instead of closing at once.

    uvicorn re-raises the signal it caught after shutting down (so the exit status would be
    143); a drained shutdown is a clean one, so the signal is not recorded.
    """

    def __init__(self, config: uvicorn.Config, *, runner: ServerProcess) -> None:
        super().__init__(config)
        self._runner = runner
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._signalled:
            log.warning("second %s: exiting without waiting", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        self._signalled = True
        self._runner.begin_drain(sig)


class ServerProcess:
    """Runs one model server until it is drained or its model fails to load."""

    def __init__(self, settings: RuntimeSettings, *, source: loading.ModelSource) -> None:
        self.settings = settings
        self.metrics = Metrics(model=settings.model_name)
        self.plane = DataPlane(settings, metrics=self.metrics, source=source)
        self.mirror = Mirror.from_settings(settings, metrics=self.metrics)
        self.app = create_app(self.plane, lifespan=self._lifespan, mirror=self.mirror)
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            lifespan="on",
            log_config=None,
            access_log=settings.access_log,
            server_header=False,
            # Bodies are received before admission; this bounds the connections doing so (and
            # idle ones): beyond it uvicorn answers 503 at once.
            limit_concurrency=settings.max_connections,
            timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_seconds)),
        )
        self.server = _DrainingServer(config, runner=self)
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()

    def run(self) -> int:
        self.server.run()
        return self.exit_code

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        if not await self._start_grpc():
            yield
            return
        self._spawn(self._load())
        try:
            yield
        finally:
            if self._grpc is not None:
                # Drained already (admission is shared with HTTP): what is left are probes.
                await self._grpc.stop(GRPC_STOP_GRACE_SECONDS)
            if self.mirror is not None:
                await self.mirror.close()
            await self.plane.close()

    async def _start_grpc(self) -> bool:
        """Serve gRPC beside HTTP unless ``grpc_port`` is 0; False (and exit status 1) when its
        port cannot be bound, as uvicorn ends the process when the HTTP port is taken."""
        settings = self.settings
        if settings.grpc_port == 0:
            return True
        try:
            server = grpc_app.create_server(self.plane)
            await server.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            self.exit_code = 1
            self.server.should_exit = True
            return False
        self._grpc = server
        log.info("gRPC (OIP v2) on %s", grpc_app.listen_address(settings.host, settings.grpc_port))
        return True

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _load(self) -> None:
        try:
            await self.plane.lifecycle.load()
        except LoadError as exc:
            log.error("model load failed: %s", exc.message)
            self.exit_code = 1
            self.server.should_exit = True

    def begin_drain(self, sig: int) -> None:
        """Called from the signal handler (main thread, between two bytecodes of the loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.server.should_exit = True
            return
        name = signal.Signals(sig).name
        loop.call_soon_threadsafe(lambda: self._spawn(self._drain(name)))

    async def _drain(self, signal_name: str) -> None:
        plane = self.plane
        log.info(
            "%s received: draining %d in-flight requests", signal_name, plane.admission.inflight
        )
        plane.admission.start_draining()
        timeout = self.settings.drain_timeout_seconds
        if await plane.admission.wait_idle(timeout):
            log.info("drained; shutting down")
        else:
            log.warning(
                "%d requests still in flight after %g s; shutting down",
                plane.admission.inflight,
                timeout,
            )
        self.server.should_exit = True


def serve(settings: RuntimeSettings) -> int:
    """Run ``mmop-runtime`` with ``settings``; the process exit status is returned."""
    try:
        source = loading.preflight(settings)
    except LoadError as exc:
        log.error("model load failed: %s", exc.message)
        return 1
    media.configure_pil(max_image_pixels=settings.max_image_pixels)
    log.info(
        "starting %s (task %s) on %s:%d (gRPC port %d): max batch %d, max delay %g ms, queue %d",
        settings.model_name,
        settings.task,
        settings.host,
        settings.port,
        settings.grpc_port,
        settings.max_batch_size,
        settings.max_delay_ms,
        settings.max_queue_size,
    )
    if settings.fault_error_rate or settings.fault_latency_ms or settings.fault_wrong_answers:
        log.warning(
            "fault injection is on: error rate %g, added latency %g ms, wrong answers %s",
            settings.fault_error_rate,
            settings.fault_latency_ms,
            settings.fault_wrong_answers,
        )
    if settings.mirror_enabled:
        log.info(
            "mirroring %g %% of answered infer requests to %s",
            settings.mirror_percent,
            settings.mirror_url,
        )
    return ServerProcess(settings, source=source).run()
