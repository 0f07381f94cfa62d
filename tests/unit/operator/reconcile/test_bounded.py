"""reconcile/bounded.py against a real HTTP server on loopback playing a hostile runtime pod:
answers too large (declared or streamed), trickling, compressed, or hanging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from mmop.operator.reconcile import bounded, probes
from mmop.operator.reconcile.observe import PodInfo

CHUNK = b"x" * 65536


class Pod:
    """The hostile pod: its handlers, and an event that releases the hanging ones."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hanging = 0
        self.sent = 0

    async def ok(self, _: web.Request) -> web.Response:
        return web.Response(text="mmop_fine 1\n")

    async def declared(self, _: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(64 * 1024 * 1024)})
        await response.prepare(_)
        await response.write(CHUNK)
        await self.release.wait()
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while not self.release.is_set():
                await response.write(CHUNK)
                self.sent += len(CHUNK)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while not self.release.is_set():
                await response.write(b"#")
                await asyncio.sleep(0.05)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def gzip(self, _: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})

    async def hang(self, _: web.Request) -> web.Response:
        self.hanging += 1
        await self.release.wait()
        return web.Response(text="late\n")


@pytest.fixture
async def pod() -> AsyncIterator[tuple[Pod, str]]:
    state = Pod()
    app = web.Application()
    for name in ("ok", "declared", "endless", "trickle", "gzip", "hang"):
        app.router.add_route("*", f"/{name}", getattr(state, name))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield state, f"http://127.0.0.1:{port}"
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None)) as client:
        yield client


LIMITS = bounded.Limits(max_bytes=1024 * 1024, timeout=10)


async def test_a_small_answer_is_read_whole(pod: tuple[Pod, str], http: httpx.AsyncClient) -> None:
    _, url = pod
    answer = await bounded.get(http, f"{url}/ok", limits=LIMITS)
    assert (answer.status_code, answer.text) == (200, "mmop_fine 1\n")


async def test_a_declared_oversized_answer_is_refused_unread(
    pod: tuple[Pod, str], http: httpx.AsyncClient
) -> None:
    _, url = pod
    with pytest.raises(bounded.ProbeError, match="67108864 bytes exceeds 1048576"):
        await bounded.get(http, f"{url}/declared", limits=LIMITS)


async def test_an_endless_answer_stops_at_the_cap(
    pod: tuple[Pod, str], http: httpx.AsyncClient
) -> None:
    state, url = pod
    with pytest.raises(bounded.ProbeError, match="exceeds 1048576 bytes"):
        await bounded.get(http, f"{url}/endless", limits=LIMITS)
    assert state.sent >= LIMITS.max_bytes  # it really streamed more than the cap
    # and the client stopped reading soon after it (what is left is socket buffers)
    state.release.set()
    assert state.sent < 64 * LIMITS.max_bytes


async def test_a_trickling_answer_ends_at_the_deadline(
    pod: tuple[Pod, str], http: httpx.AsyncClient
) -> None:
    _, url = pod
    # httpx's own timeout (30 s per read) would never fire: a byte arrives every 50 ms.
    with pytest.raises(bounded.ProbeError, match=r"no complete answer within 0\.5 s"):
        await bounded.get(http, f"{url}/trickle", limits=bounded.Limits(timeout=0.5))


async def test_a_compressed_answer_is_refused(
    pod: tuple[Pod, str], http: httpx.AsyncClient
) -> None:
    _, url = pod
    with pytest.raises(bounded.ProbeError, match="compressed"):
        await bounded.get(http, f"{url}/gzip", limits=LIMITS)


async def test_one_models_hanging_pods_do_not_delay_another_model(
    pod: tuple[Pod, str], http: httpx.AsyncClient
) -> None:
    state, url = pod
    gates = bounded.Gates(connections=2)
    slow = bounded.Limits(timeout=30, gate=gates.for_model("ns", "slow"))
    fast = bounded.Limits(timeout=5, gate=gates.for_model("ns", "fast"))
    stuck = [asyncio.create_task(bounded.get(http, f"{url}/hang", limits=slow)) for _ in range(5)]
    deadline = asyncio.get_running_loop().time() + 10
    while state.hanging < 2:  # both of the slow model's slots are taken
        assert asyncio.get_running_loop().time() < deadline, "the hanging calls never arrived"
        await asyncio.sleep(0.01)
    answer = await bounded.get(http, f"{url}/ok", limits=fast)
    assert answer.status_code == 200
    assert state.hanging == 2  # the slow model's other three calls wait for its own slots
    state.release.set()
    assert [a.status_code for a in await asyncio.gather(*stuck)] == [200] * 5
    gates.forget("ns", "slow")
    assert len(gates) == 1


async def test_an_oversized_canary_metrics_page_makes_the_check_inconclusive(
    pod: tuple[Pod, str], http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """probes.scrape of a pod whose /metrics never ends: None (no data, never a pass)."""
    _, url = pod
    monkeypatch.setattr(probes, "_base", lambda _: url)
    monkeypatch.setattr(probes.contract, "METRICS_PATH", "/endless")
    canary = PodInfo(name="c", version="v2", revision="r", ip="127.0.0.1", ready=True)
    assert await probes.scrape(http, [canary], limits=LIMITS) is None
