"""Quality-gate mirroring: a canary re-sends a sample of its answered requests to stable.

With ``--mirror-url`` and ``--mirror-percent`` > 0 (set by the operator on a canary only), a
sampled successful OIP infer request is sent again, after the client has its whole answer, to
the same model's infer path under the mirror URL (the stable version's Service), with the
client's ``Authorization`` and ``X-Mmop-Mirror: 1``. Both answers are scored with
``mmop.runtime.scoring.score_pair`` (one ``mmop_quality_score`` observation per batch item) and
every sampled request ends as one ``mmop_mirror_requests_total{result}``:

- ``compared``: both answered and were scored;
- ``dropped``: not sent, because ``mirror_max_inflight`` mirrors are already in flight or the
  target was unreachable a moment ago (back-off: 5 s after the first connection failure,
  doubling up to 60 s, reset by any answer);
- ``error``: connection failure, timeout, a status other than 200, or an answer over
  ``MAX_RESPONSE_BYTES``;
- ``incomparable``: ``score_pair`` refused the pair (different outputs or shapes).

The client never waits for any of this: the mirror starts after its response is sent, runs as a
task of its own under a whole-exchange timeout, and scoring runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx
import orjson

from mmop.runtime import contract, scoring
from mmop.runtime.metrics import Metrics
from mmop.runtime.settings import RuntimeSettings

log = logging.getLogger("mmop.runtime.mirror")

MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
BACKOFF_INITIAL_SECONDS: Final = 5.0
BACKOFF_MAX_SECONDS: Final = 60.0
# Request headers sent on with the body: what the target needs to parse it and let it in.
FORWARDED_HEADERS: Final = ("authorization", "content-type", "inference-header-content-length")


class Sampler:
    """Decides per request whether it is mirrored: ``percent`` of them, at random."""

    def __init__(self, percent: float, *, draw: Callable[[], float] = random.random) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0-100, not {percent}")
        self._fraction = percent / 100.0
        self._draw = draw

    def __call__(self) -> bool:
        return self._draw() < self._fraction


@dataclass
class Gate:
    """Bounded concurrency and back-off of the mirror, on an injected clock (pure, testable).

    ``try_enter`` says whether a sampled request may be sent now; every admitted request calls
    ``leave`` once, saying whether the target looked gone (a connection failure).
    """

    max_inflight: int
    backoff_initial: float = BACKOFF_INITIAL_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    inflight: int = 0
    delay: float = 0.0  # the current back-off; 0 while the target answers
    retry_at: float = field(default=0.0)  # no request before this time

    def __post_init__(self) -> None:
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")

    def backing_off(self, now: float) -> bool:
        return now < self.retry_at

    def try_enter(self, now: float) -> bool:
        if self.inflight >= self.max_inflight or self.backing_off(now):
            return False
        self.inflight += 1
        return True

    def leave(self, now: float, *, target_gone: bool) -> None:
        self.inflight = max(0, self.inflight - 1)
        if target_gone:
            self.delay = min(max(self.delay * 2, self.backoff_initial), self.backoff_max)
            self.retry_at = now + self.delay
        else:
            self.delay = 0.0
            self.retry_at = 0.0


class MirrorFailed(Exception):
    """The target answered, but not with something to compare (status, size)."""


class Mirror:
    """The mirror of one runtime server: sampling, the HTTP client, scoring into metrics."""

    def __init__(
        self,
        *,
        url: str,
        task: str,
        model_name: str,
        percent: float,
        max_inflight: int,
        timeout_seconds: float,
        metrics: Metrics,
        token: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") + contract.infer_path(model_name)
        self.task = task
        self.metric = scoring.metric_for_task(task)
        self.sample = Sampler(percent)
        self.gate = Gate(max_inflight=max_inflight)
        self.timeout_seconds = timeout_seconds
        self.metrics = metrics
        # The per-model smoke-test token: the target counts the copy as endpoint="mirror" only
        # when the header carries it (a client cannot hide its own requests that way).
        self._token = token or "1"
        # trust_env: HTTP_PROXY/NO_PROXY apply (the dev cluster reaches Service names that way)
        self._client = httpx.AsyncClient(
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=max_inflight),
            trust_env=True,
            follow_redirects=False,
            transport=transport,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.init_mirror(self.metric)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings, *, metrics: Metrics) -> Mirror | None:
        """The mirror ``settings`` ask for, or None when mirroring is off."""
        if not settings.mirror_enabled or settings.mirror_url is None:
            return None
        return cls(
            url=settings.mirror_url,
            task=settings.task,
            model_name=settings.model_name,
            percent=settings.mirror_percent,
            max_inflight=settings.mirror_max_inflight,
            timeout_seconds=settings.mirror_timeout_seconds,
            metrics=metrics,
            token=(
                settings.smoke_test_token.get_secret_value() if settings.smoke_test_token else ""
            ),
        )

    async def submit(self, *, body: bytes, headers: Mapping[str, str], answer: bytes) -> None:
        """Start mirroring one answered request (``answer``: the JSON the client got); returns
        at once. Meant as the response's background task: it runs after the answer is sent."""
        if not self.gate.try_enter(time.monotonic()):
            self.metrics.count_mirror(contract.MIRROR_DROPPED)
            return
        forwarded = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        forwarded[contract.MIRROR_HEADER] = self._token
        task = asyncio.create_task(self._mirror(body, forwarded, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._client.aclose()

    async def _mirror(self, body: bytes, headers: dict[str, str], answer: bytes) -> None:
        target_gone = False
        try:
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    stable = await self._exchange(body, headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                target_gone = True
                if self.gate.delay == 0.0:
                    log.info("mirror target %s unreachable (%s); backing off", self.url, exc)
                self.metrics.count_mirror(contract.MIRROR_ERROR)
                return
            except (httpx.HTTPError, TimeoutError, MirrorFailed) as exc:
                log.debug("mirror to %s failed: %s", self.url, exc or type(exc).__name__)
                self.metrics.count_mirror(contract.MIRROR_ERROR)
                return
            try:
                scores = await asyncio.to_thread(self._score, stable, answer)
            except ValueError as exc:
                log.debug("mirrored answers not comparable: %s", exc)
                self.metrics.count_mirror(contract.MIRROR_INCOMPARABLE)
                return
            self.metrics.observe_quality(self.metric, scores)
            self.metrics.count_mirror(contract.MIRROR_COMPARED)
        except Exception:  # never let a mirror failure surface anywhere else
            log.exception("mirroring failed")
            self.metrics.count_mirror(contract.MIRROR_ERROR)
        finally:
            self.gate.leave(time.monotonic(), target_gone=target_gone)

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> bytes:
        async with self._client.stream("POST", self.url, content=body, headers=headers) as reply:
            if reply.status_code != 200:
                raise MirrorFailed(f"status {reply.status_code}")
            declared = reply.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
                raise MirrorFailed(f"answer of {declared} bytes")
            chunks: list[bytes] = []
            received = 0
            async for chunk in reply.aiter_bytes():
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    raise MirrorFailed(f"answer over {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    def _score(self, stable: bytes, canary: bytes) -> list[float]:
        return scoring.score_pair(self.task, orjson.loads(stable), orjson.loads(canary))
