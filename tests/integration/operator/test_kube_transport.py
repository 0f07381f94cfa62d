"""The client's sockets: a request cancelled during the TLS handshake closes its socket
(httpcore alone leaves it to the garbage collector, encode/httpcore#443).

Checked from the server's side, not by counting ResourceWarnings: with the collector off, the
server must read end of file on every connection the client opened and gave up. A process-wide
``gc.collect()`` would also report sockets other tests leaked, and would close the leaked ones
before anything could look at them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Iterator

import pytest

from mmop.operator import kube

CANCELLED = 3


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers a TLS
    ClientHello: every handshake hangs until the client gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Leaked sockets stay open instead of being closed by a collection in the middle."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _accept_all(listener: socket.socket) -> list[socket.socket]:
    listener.settimeout(2)
    accepted = [listener.accept()[0] for _ in range(CANCELLED)]
    listener.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        accepted.append(listener.accept()[0])  # one more would be a connection nobody counted
    return accepted


def _closed_by_peer(conn: socket.socket) -> bool:
    """The client's ClientHello, then end of file; a timeout means the client kept it open."""
    conn.settimeout(2)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    return True


@pytest.mark.usefixtures("no_collector")
async def test_a_request_cancelled_in_the_tls_handshake_closes_its_socket(
    silent_listener: socket.socket,
) -> None:
    server = f"https://127.0.0.1:{silent_listener.getsockname()[1]}"
    async with kube.KubeClient(kube.Connection(server=server), timeout=30) as client:
        for _ in range(CANCELLED):
            request = asyncio.create_task(client.get(kube.NAMESPACE, name="default"))
            await asyncio.sleep(0.3)  # connected, waiting for the ServerHello
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        # still inside the client: closing its pool must not be what closes the sockets
        accepted = _accept_all(silent_listener)
        try:
            assert len(accepted) == CANCELLED
            assert [_closed_by_peer(conn) for conn in accepted] == [True] * CANCELLED
        finally:
            for conn in accepted:
                conn.close()
