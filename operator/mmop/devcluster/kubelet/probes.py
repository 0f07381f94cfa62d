"""Container probes: the spec as the kubelet reads it (periods shortened for local speed) and
one probe attempt over HTTP or TCP.

Periods are capped (1 s by default) so that a pod turns Ready about as soon as its server
answers; failure thresholds are scaled up by the same factor, so the time a probe has to fail
before the kubelet acts is what the manifest says (a liveness probe of 10 s x 3 still tolerates
30 s of silence). ``exec`` probes cannot run without the container image: they always pass.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

ProbeKind = Literal["http", "tcp", "exec"]


@dataclass(frozen=True)
class ProbeSpec:
    """One probe, resolved against its container (named ports become numbers)."""

    kind: ProbeKind
    port: int | None = None
    path: str = "/"
    scheme: str = "HTTP"
    host: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


def resolve_port(port: Any, container: Mapping[str, Any]) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for item in container.get("ports") or []:
        if item.get("name") == text:
            return int(item["containerPort"])
    return None


def parse_probe(
    probe: Mapping[str, Any] | None, *, container: Mapping[str, Any], period_cap: float
) -> ProbeSpec | None:
    """The probe to run, or None when the container has none of this kind."""
    if not probe:
        return None
    period = float(probe.get("periodSeconds") or 10)
    failures = int(probe.get("failureThreshold") or 3)
    local_period = min(period, period_cap) if period_cap > 0 else period
    common: dict[str, Any] = {
        "initial_delay": float(probe.get("initialDelaySeconds") or 0),
        "period": local_period,
        "timeout": float(probe.get("timeoutSeconds") or 1),
        "failure_threshold": max(1, math.ceil(period * failures / local_period)),
        "success_threshold": int(probe.get("successThreshold") or 1),
    }
    if "httpGet" in probe:
        get = probe["httpGet"]
        headers = tuple(
            (str(h["name"]), str(h.get("value", ""))) for h in get.get("httpHeaders") or []
        )
        return ProbeSpec(
            kind="http",
            port=resolve_port(get.get("port"), container),
            path=str(get.get("path") or "/"),
            scheme=str(get.get("scheme") or "HTTP").upper(),
            host=get.get("host") or None,
            headers=headers,
            **common,
        )
    if "tcpSocket" in probe or "grpc" in probe:
        target = probe.get("tcpSocket") or probe.get("grpc") or {}
        return ProbeSpec(
            kind="tcp",
            port=resolve_port(target.get("port"), container),
            host=target.get("host") or None,
            **common,
        )
    return ProbeSpec(kind="exec", **common)


async def attempt(http: httpx.AsyncClient, spec: ProbeSpec, *, pod_ip: str) -> tuple[bool, str]:
    """One probe attempt: (passed, why not)."""
    if spec.kind == "exec":
        return True, ""
    if spec.port is None:
        return False, "probe port does not name a container port"
    host = spec.host or pod_ip
    if spec.kind == "tcp":
        try:
            async with asyncio.timeout(spec.timeout):
                _, writer = await asyncio.open_connection(host, spec.port)
        except (OSError, TimeoutError) as error:
            return False, f"dial tcp {host}:{spec.port}: {error or 'timeout'}"
        writer.close()
        return True, ""
    url = f"{spec.scheme.lower()}://{host}:{spec.port}{spec.path}"
    try:
        response = await http.get(url, headers=dict(spec.headers), timeout=spec.timeout)
    except httpx.TimeoutException:
        return False, f'Get "{url}": context deadline exceeded'
    except httpx.HTTPError as error:
        return False, f'Get "{url}": {type(error).__name__}: {error}'
    if 200 <= response.status_code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status_code}"


@dataclass
class ProbeCounter:
    """Consecutive results of one probe and the verdict they give (the kubelet's rule)."""

    spec: ProbeSpec
    passing: bool
    successes: int = 0
    failures: int = 0

    def record(self, ok: bool) -> bool:
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= self.spec.success_threshold:
                self.passing = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= self.spec.failure_threshold:
                self.passing = False
        return self.passing
