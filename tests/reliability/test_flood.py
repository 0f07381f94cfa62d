"""A flood far above capacity: 20 times the queue size at once, twice (small bodies, then
1.5 MB image bodies). The server refuses what it cannot queue with 429 + Retry-After at once,
its memory stays bounded (RSS sampled during the flood), and it is healthy, ready and correct
afterwards. Then a flood of clients whose bodies never finish arriving: they hold no queue
slot, and normal clients are answered meanwhile. No timing assertions: counts and memory.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from mmop.runtime import contract
from tests.support.runtime import FLOOD_QUEUE, MIB, RuntimeServer
from tests.support.wait import wait_until

FLOOD = 20 * FLOOD_QUEUE
# Generous (a bounded queue and receive budget grow the server by some 50-130 MB here), yet
# tight enough to fail when admission is not bounded: with every request of the large flood
# admitted at once, the same server grew by about 375 MB (measured with --max-queue-size 1000;
# docs/reliability.md).
HEADROOM = 256 * MIB


def image_body(size: int) -> dict[str, Any]:
    if size <= 32:
        data = contract.tiny_png()
    else:
        pixels = np.random.default_rng(size).integers(0, 255, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=0)
        data = buffer.getvalue()
    encoded = base64.b64encode(data).decode()
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}


@dataclass
class RssSampler:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    pid: int
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        process = psutil.Process(self.pid)
        thread = threading.Thread(target=self._run, args=(process,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)

    def _run(self, process: psutil.Process) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self.samples += 1
            time.sleep(0.01)


async def _flood(server: RuntimeServer, body: dict[str, Any]) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:

        async def one() -> httpx.Response | Exception:
            try:
                return await client.post(server.infer_path, json=body)
            except httpx.TransportError as error:
                return error

        return await asyncio.gather(*(one() for _ in range(FLOOD)))


def _settled_rss(pid: int) -> int:
    """RSS once the server has gone quiet (the lowest of a few samples)."""
    process = psutil.Process(pid)
    readings: list[int] = []
    for _ in range(5):
        readings.append(int(process.memory_info().rss))
        time.sleep(0.2)
    return min(readings)


def _queue_depth(server: RuntimeServer) -> float:
    text = httpx.get(server.url + contract.METRICS_PATH, timeout=10).text
    line = next(li for li in text.splitlines() if li.startswith("mmop_queue_depth"))
    return float(line.rsplit(" ", 1)[1])


def test_a_flood_far_above_capacity_gets_429_and_memory_stays_bounded(
    flood_server: RuntimeServer,
) -> None:
    small, large = image_body(32), image_body(700)
    with flood_server.client() as client:  # warm allocator pools and caches first
        for body in (small, large, large):
            assert client.post(flood_server.infer_path, json=body).status_code == 200
    baseline = _settled_rss(flood_server.process.pid)

    report: dict[str, Any] = {"baseline_rss": baseline, "queue": FLOOD_QUEUE}
    for label, body in (("small", small), ("large", large)):
        with RssSampler(flood_server.process.pid).running() as sampler:
            answers = asyncio.run(_flood(flood_server, body))
        responses = [a for a in answers if isinstance(a, httpx.Response)]
        codes = Counter(r.status_code for r in responses)
        errors = [repr(a) for a in answers if not isinstance(a, httpx.Response)]
        report[label] = {
            "sent": FLOOD,
            "body_bytes": len(httpx.Request("POST", "/", json=body).content),
            "codes": dict(codes),
            "transport_errors": len(errors),
            "peak_rss": sampler.peak,
            "rss_samples": sampler.samples,
        }
        assert errors == [], errors[:3]
        assert set(codes) <= {200, 429}, codes
        assert codes[429] > 0 and codes[200] >= FLOOD_QUEUE, codes
        for response in responses:
            if response.status_code == 429:
                assert response.headers["retry-after"] == "1"
                assert response.headers["content-type"] == "application/json"
                assert "queue is full" in response.json()["error"]
        assert sampler.samples > 0
        assert sampler.peak < baseline + HEADROOM, report  # stricter than 2 x baseline

    assert _queue_depth(flood_server) == 0
    after = _settled_rss(flood_server.process.pid)
    report["after_rss"] = after
    print("flood report:", report)
    assert after < baseline + HEADROOM, report
    with flood_server.client() as client:
        assert client.get(contract.LIVE_PATH).json() == {"live": True}
        assert client.get(contract.READY_PATH).json() == {"ready": True}
        labels = client.get(contract.model_path(flood_server.name)).json()["parameters"]["labels"]
        answer = client.post(flood_server.infer_path, json=small)
    assert answer.status_code == 200
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["scores"]["shape"] == [1, len(labels)]
    assert outputs["label"]["data"][0] in labels
    assert abs(sum(outputs["scores"]["data"]) - 1.0) < 1e-4


SLOW_CLIENTS = 4 * FLOOD_QUEUE


def _metric(server: RuntimeServer, name: str) -> float:
    text = httpx.get(server.url + contract.METRICS_PATH, timeout=10).text
    line = next(li for li in text.splitlines() if li.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def _wait_for(check: Any, *, what: str, within: float = 30.0) -> None:
    wait_until(check, within=within, what=what, every=0.05)


def test_a_slow_body_flood_holds_no_queue_slot(flood_server: RuntimeServer) -> None:
    """4 x the queue of clients send headers and one byte of a 2 KB body, then nothing: they
    hold connections, not queue slots, so normal clients are answered meanwhile."""
    path = flood_server.infer_path
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2048\r\n\r\n{"
    ).encode()
    slow: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            connection = socket.create_connection(("127.0.0.1", flood_server.port), timeout=30)
            connection.sendall(head)
            slow.append(connection)
        _wait_for(
            lambda: _metric(flood_server, contract.METRIC_RECEIVING) >= SLOW_CLIENTS,
            what=f"{SLOW_CLIENTS} bodies arriving",
        )
        assert _queue_depth(flood_server) == 0  # arriving bodies hold no slot
        body = image_body(32)
        limits = httpx.Limits(max_connections=FLOOD_QUEUE)
        with (
            flood_server.client(limits=limits) as client,
            concurrent.futures.ThreadPoolExecutor(FLOOD_QUEUE) as pool,
        ):
            codes = list(
                pool.map(lambda _: client.post(path, json=body).status_code, range(2 * FLOOD_QUEUE))
            )
        print(
            f"slow-body flood: {SLOW_CLIENTS} slow clients; normal clients: {Counter(codes)}; "
            f"still arriving: {_metric(flood_server, contract.METRIC_RECEIVING):g}"
        )
        assert codes == [200] * (2 * FLOOD_QUEUE), Counter(codes)
        assert _metric(flood_server, contract.METRIC_RECEIVING) >= SLOW_CLIENTS
    finally:
        for connection in slow:
            connection.close()
    _wait_for(
        lambda: _metric(flood_server, contract.METRIC_RECEIVING) == 0,
        what="the slow clients' requests ended",
    )
    assert _queue_depth(flood_server) == 0
    with flood_server.client() as client:
        assert client.get(contract.READY_PATH).json() == {"ready": True}
