"""One pod's container as a local process: start ``mmop-runtime`` with the pod's environment,
probe it (startup, readiness, liveness), restart it with exponential back-off when it exits or
fails its liveness probe (CrashLoopBackOff), and stop it with SIGTERM, then SIGKILL after the
grace period. Output goes to a log file per pod.

The container's ``image`` is ignored: pods run this Python environment's programs. A container
whose command is one of mmop's own (``mmop ...``, such as the chart's operator pod, or
``mmop-runtime ...``) runs that command with its arguments; any other runs ``mmop-runtime``.
Only the first container runs; other containers (sidecars) are reported as running and ready
without a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mmop.devcluster.kubelet import podenv, podvolumes, probes
from mmop.devcluster.kubelet.ipam import NODE_IP
from mmop.devcluster.kubelet.podstatus import ContainerView, terminated_state
from mmop.devcluster.kubelet.resources import node_capacity

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
MESSAGE_BYTES = 2048  # what FallbackToLogsOnError keeps: the last 2 KiB ...
MESSAGE_LINES = 80  # ... or 80 lines, whichever is less
ENV_RETRY_SECONDS = 2.0

SourceFetcher = Callable[[str, set[str], set[str]], Awaitable[podenv.EnvSources]]


def runtime_command() -> tuple[str, ...]:
    """What every pod runs: this environment's ``mmop-runtime``."""
    return (sys.executable, "-m", "mmop.runtime.cli")


_OWN_PROGRAMS: dict[str, tuple[str, ...]] = {
    "mmop": ("-m", "mmop.operator.cli"),
    "mmop-runtime": ("-m", "mmop.runtime.cli"),
}


def container_command(container: Mapping[str, Any], *, default: tuple[str, ...]) -> tuple[str, ...]:
    """The local command for a container: mmop's own programs as written (command + args, run
    with this interpreter), anything else ``default`` (the runtime)."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    words = command + args if command else args
    if words and os.path.basename(words[0]) in _OWN_PROGRAMS:
        return (sys.executable, *_OWN_PROGRAMS[os.path.basename(words[0])], *words[1:])
    return default


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the parent (thread) dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Backoff:
    """Restart delays: none for the first restart, then ``initial`` doubling up to ``maximum``;
    a container that ran ``reset_after`` seconds starts over."""

    initial: float = 2.0
    maximum: float = 60.0
    reset_after: float = 60.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after:
            self.failures = 0
        delay = (
            0.0
            if self.failures == 0
            else min(self.maximum, self.initial * 2 ** (self.failures - 1))
        )
        self.failures += 1
        return delay


@dataclass(frozen=True)
class WorkerSettings:
    """How pods run locally (from the kubelet's configuration)."""

    command: tuple[str, ...] = field(default_factory=runtime_command)
    probe_period_cap: float = 1.0
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    base_env: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    kubeconfig: Path | None = None
    """Given as KUBECONFIG to pods that mount a service-account token (the local stand-in
    for in-cluster credentials)."""
    cluster_proxy: str | None = None
    """The router's URL, as pods' HTTP_PROXY: how pods reach Services by DNS name."""


def exit_code_of(returncode: int) -> int:
    """A process's status as a container's exit code (signals as 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def tail_message(path: Path, offset: int) -> str:
    """The end of what a run wrote to its log (FallbackToLogsOnError's message)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            start = max(offset, end - MESSAGE_BYTES)
            handle.seek(start)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()[-MESSAGE_LINES:]
    return "\n".join(lines).strip()


class PodWorker:
    """Runs one pod until :meth:`stop`."""

    def __init__(
        self,
        pod: dict[str, Any],
        *,
        ip: str,
        pod_dir: Path,
        claims_dir: Path,
        log_path: Path,
        settings: WorkerSettings,
        http: httpx.AsyncClient,
        fetch_sources: SourceFetcher,
        on_change: Callable[[], None],
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        meta = pod.get("metadata") or {}
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name") or "")
        self.uid = str(meta.get("uid") or "")
        self.ip = ip
        self.start_time = now_stamp()
        self.pod = pod
        self.pod_dir = pod_dir
        self.log_path = log_path
        self._claims_dir = claims_dir
        self._settings = settings
        self._http = http
        self._fetch_sources = fetch_sources
        self._on_change = on_change
        self._extra_env = dict(extra_env or {})
        spec = pod.get("spec") or {}
        containers = list(spec.get("containers") or [{"name": "main"}])
        self.container: dict[str, Any] = containers[0]
        self.views = [
            ContainerView(
                name=str(self.container.get("name", "main")),
                image=str(self.container.get("image", "")),
            )
        ]
        for extra in containers[1:]:  # sidecars are not run (see the module docstring)
            self.views.append(
                ContainerView(
                    name=str(extra.get("name", "")),
                    image=str(extra.get("image", "")),
                    state="running",
                    reason="",
                    started_at=self.start_time,
                    ready=True,
                    started=True,
                )
            )
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self._grace_now = self.grace
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._restart_wanted = asyncio.Event()
        self._last_failure = ""
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(
            initial=settings.backoff_initial,
            maximum=settings.backoff_max,
            reset_after=max(60.0, settings.backoff_max),
        )

    @property
    def view(self) -> ContainerView:
        return self.views[0]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod-{self.namespace}/{self.name}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop the container (SIGTERM, then SIGKILL after ``grace`` seconds) and the worker."""
        if grace is not None:
            self._grace_now = grace
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def kill_now(self) -> None:
        """SIGKILL the process group at once (the kubelet is going away)."""
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _changed(self) -> None:
        self._on_change()

    # --- the container's life ------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._create_volumes()
            while not self._stopping.is_set():
                env = await self._build_env()
                if self._stopping.is_set():
                    break
                if env is None:
                    await self._sleep(ENV_RETRY_SECONDS)
                    continue
                started = time.monotonic()
                try:
                    offset = await self._spawn(env)
                except OSError as error:
                    self.view.state, self.view.reason = "waiting", "RunContainerError"
                    self.view.message = str(error)
                    self._changed()
                else:
                    returncode = await self._supervise()
                    await self._record_exit(returncode, offset)
                if self._stopping.is_set():
                    break
                delay = self._backoff.next_delay(time.monotonic() - started)
                if delay > 0:
                    self.view.state = "waiting"
                    self.view.reason = "CrashLoopBackOff"
                    self.view.message = (
                        f"back-off {delay:g}s restarting failed container={self.view.name} "
                        f"pod={self.name}_{self.namespace}({self.uid})"
                    )
                    self._changed()
                    await self._sleep(delay)
                if not self._stopping.is_set():
                    self.view.restart_count += 1
        except Exception:
            log.exception("pod %s/%s: worker failed", self.namespace, self.name)
            raise

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _layout(self) -> tuple[podenv.EnvSources, podvolumes.VolumeLayout]:
        """The Secrets and ConfigMaps the pod reads (fetched now) and its volumes' layout."""
        spec = self.pod.get("spec") or {}
        env_secrets, env_maps = podenv.referenced_objects(self.container)
        vol_secrets, vol_maps = podvolumes.volume_references(spec)
        sources = await self._fetch_sources(
            self.namespace, env_secrets | vol_secrets, env_maps | vol_maps
        )
        layout = podvolumes.layout(
            spec, self.container, pod_dir=self.pod_dir, claims_dir=self._claims_dir, sources=sources
        )
        return sources, layout

    async def _create_volumes(self) -> None:
        """The pod's directories and volume files, once per pod (they outlive restarts)."""
        _, layout = await self._layout()
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        for directory in layout.directories:
            directory.mkdir(parents=True, exist_ok=True)
        for path, content in layout.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    async def _build_env(self) -> dict[str, str] | None:
        """The process environment, built afresh for every start like a real kubelet does; None
        (and the container waiting in CreateContainerConfigError) when it cannot be built."""
        sources, layout = await self._layout()
        pod = dict(self.pod)
        pod["status"] = {
            **(self.pod.get("status") or {}),
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "hostIP": NODE_IP,
        }
        try:
            if layout.refused:
                raise podenv.EnvError("; ".join(layout.refused))
            env = podenv.process_env(
                self.container,
                pod=pod,
                sources=sources,
                mounts=layout.mounts,
                pod_ip=self.ip,
                allocatable=node_capacity(gpus=self._settings.gpus),
                base=self._settings.base_env,
                cluster_proxy=self._settings.cluster_proxy,
            )
        except podenv.EnvError as error:
            if self.view.reason != "CreateContainerConfigError" or self.view.message != str(error):
                self.view.state = "waiting"
                self.view.reason = "CreateContainerConfigError"
                self.view.message = str(error)
                self._changed()
            return None
        env.update(self._extra_env)
        automount = (self.pod.get("spec") or {}).get("automountServiceAccountToken", True)
        if automount is not False and self._settings.kubeconfig is not None:
            env["KUBECONFIG"] = str(self._settings.kubeconfig)
        return env

    async def _spawn(self, env: dict[str, str]) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as handle:
            offset = handle.tell()
            header = (
                f"--- mmop dev: {now_stamp()} start container {self.view.name} of pod "
                f"{self.namespace}/{self.name} on {self.ip} (restart "
                f"{self.view.restart_count}) ---\n"
            )
            handle.write(header.encode())
            handle.flush()
            self._process = await asyncio.create_subprocess_exec(
                *container_command(self.container, default=self._settings.command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=str(self.pod_dir),
                start_new_session=True,  # a process group of its own: killpg reaches children
                preexec_fn=die_with_parent,
            )
        view = self.view
        view.state, view.reason, view.message = "running", "", ""
        view.started_at, view.finished_at, view.exit_code = now_stamp(), None, None
        view.pid = self._process.pid
        view.ready = False
        view.started = False
        self._restart_wanted.clear()
        self._changed()
        log.info(
            "pod %s/%s: started pid %s on %s", self.namespace, self.name, self._process.pid, self.ip
        )
        return offset

    async def _supervise(self) -> int:
        """Probe the running process until it exits, is stopped or must restart; returns its
        return code."""
        process = self._process
        assert process is not None
        prober = asyncio.create_task(self._probe_loop())
        waiter = asyncio.create_task(process.wait())
        stopper = asyncio.create_task(self._stopping.wait())
        restarter = asyncio.create_task(self._restart_wanted.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper, restarter}, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                await self._terminate(self._grace_now)
            return await waiter
        finally:
            for task in (prober, stopper, restarter):
                task.cancel()
            for task in (prober, stopper, restarter):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _record_exit(self, returncode: int, offset: int) -> None:
        code = exit_code_of(returncode)
        message = tail_message(self.log_path, offset) if code != 0 else ""
        view = self.view
        finished = now_stamp()
        state = terminated_state(
            exit_code=code,
            message=message,
            started_at=view.started_at,
            finished_at=finished,
            pid=view.pid,
        )
        view.last_terminated = state
        view.state, view.reason, view.message = "terminated", state["reason"], message
        view.exit_code, view.finished_at = code, finished
        view.ready = False
        self._changed()
        log.info("pod %s/%s: pid %s exited with %s", self.namespace, self.name, view.pid, code)

    async def _terminate(self, grace: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        # Anything the runtime left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    # --- probes ----------------------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        cap = self._settings.probe_period_cap
        startup = probes.parse_probe(
            self.container.get("startupProbe"), container=self.container, period_cap=cap
        )
        readiness = probes.parse_probe(
            self.container.get("readinessProbe"), container=self.container, period_cap=cap
        )
        liveness = probes.parse_probe(
            self.container.get("livenessProbe"), container=self.container, period_cap=cap
        )
        if startup is not None and not await self._wait_started(startup):
            await self._restart(f"Startup probe failed: {self._last_failure}")
            return
        self.view.started = True
        if readiness is None:
            self.view.ready = True
        self._changed()
        tasks = []
        if readiness is not None:
            tasks.append(asyncio.create_task(self._readiness_loop(readiness)))
        if liveness is not None:
            tasks.append(asyncio.create_task(self._liveness_loop(liveness)))
        try:
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _check(self, spec: probes.ProbeSpec) -> bool:
        ok, why = await probes.attempt(self._http, spec, pod_ip=self.ip)
        if not ok:
            self._last_failure = why
        return ok

    async def _wait_started(self, spec: probes.ProbeSpec) -> bool:
        await asyncio.sleep(spec.initial_delay)
        counter = probes.ProbeCounter(spec, passing=False)
        while True:
            ok = await self._check(spec)
            counter.record(ok)
            if ok:
                return True
            if counter.failures >= spec.failure_threshold:
                return False
            await asyncio.sleep(spec.period)

    async def _readiness_loop(self, spec: probes.ProbeSpec) -> None:
        await asyncio.sleep(spec.initial_delay)
        counter = probes.ProbeCounter(spec, passing=False)
        while True:
            ready = counter.record(await self._check(spec))
            if ready != self.view.ready:
                self.view.ready = ready
                self._changed()
            await asyncio.sleep(spec.period)

    async def _liveness_loop(self, spec: probes.ProbeSpec) -> None:
        await asyncio.sleep(spec.initial_delay)
        counter = probes.ProbeCounter(spec, passing=True)
        while True:
            if not counter.record(await self._check(spec)):
                await self._restart(f"Liveness probe failed: {self._last_failure}")
                return
            await asyncio.sleep(spec.period)

    async def _restart(self, reason: str) -> None:
        log.info("pod %s/%s: %s; restarting the container", self.namespace, self.name, reason)
        self.view.ready = False
        self._changed()
        self._restart_wanted.set()
