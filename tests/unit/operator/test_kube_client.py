"""The client wrapper's own behaviour against a tiny local HTTP server (no API server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from mmop.operator import kube


class Holding:
    """Answers every GET after a pause, counting how many requests it holds at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.served = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.now -= 1
        self.served += 1
        return web.json_response({"kind": "PodList", "items": []})


@pytest.fixture
async def holding() -> AsyncIterator[tuple[Holding, str]]:
    server = Holding()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_requests_beyond_max_in_flight_wait_in_the_client(
    holding: tuple[Holding, str],
) -> None:
    server, url = holding
    async with kube.KubeClient(kube.Connection(server=url), max_in_flight=3) as client:
        results = await asyncio.gather(
            *(client.list_items(kube.POD, namespace="ns") for _ in range(20))
        )
    assert results == [[]] * 20
    assert server.served == 20
    assert server.most == 3


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        kube.KubeClient(kube.Connection(server="http://127.0.0.1:1"), max_in_flight=0)
