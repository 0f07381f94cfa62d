"""The client's sockets: a request cancelled during the TLS handshake closes its socket
(httpcore alone leaves it to the garbage collector, encode/httpcore#443)."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Iterator

import pytest

from mmop.operator import kube


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers a TLS
    ClientHello: every handshake hangs until the client gives up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"


async def test_a_request_cancelled_in_the_tls_handshake_closes_its_socket(
    silent_server: str,
) -> None:
    async with kube.KubeClient(kube.Connection(server=silent_server), timeout=30) as client:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(3):
                request = asyncio.create_task(client.get(kube.NAMESPACE, name="default"))
                await asyncio.sleep(0.3)  # connected, waiting for the ServerHello
                request.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await request
            gc.collect()
    leaks = [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]
    assert leaks == []
