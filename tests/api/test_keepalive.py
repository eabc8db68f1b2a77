"""An answer sent before the request body was read never leaves the connection stuck:
the next request on the same keep-alive connection gets its answer, or the server closes
the connection (a body over the limit). Both apps, every kind of early answer, bodies
larger than what hypercorn queues for the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from fifoflow.flows import parse_flow

from ..dispatcher.test_dispatcher import DispatcherProcess
from .helpers import CHAIN, serve_runner

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


#: larger than hypercorn's queue to the app (10 chunks of up to 64 KiB)
BIG = 2_000_000


async def _read_answer(stream: trio.SocketStream, buffer: bytearray) -> str | None:
    """The status line of the next answer (its body read too), or None if the server
    closed the connection."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v)
        for k, _, v in (line.partition(":") for line in lines[1:])
        if k.lower() == "content-length"
    )
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        rest += chunk
    buffer[:] = rest[length:]
    return lines[0]


async def _early_then_health(
    url: str, token: str, method: str, path: str, size: int
) -> tuple[str | None, str | None]:
    """Send ``method path`` with a ``size``-byte body and, on the same connection once
    the answer is in, ``GET /health``. Returns both status lines (None: closed)."""
    host, port = url.removeprefix("http://").split(":")
    body = b"[" + b"1," * (size // 2) + b"1]"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    health = f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    buffer = bytearray()
    with trio.fail_after(20):  # a stuck connection fails here
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            first: str | None = None
            async with trio.open_nursery() as nursery:

                async def send_body() -> None:
                    try:
                        await stream.send_all(head + body)
                    except trio.BrokenResourceError:
                        pass  # the server closed it after answering (a body over the limit)

                nursery.start_soon(send_body)
                first = await _read_answer(stream, buffer)
            if first is None:
                return None, None
            try:
                await stream.send_all(health)
            except trio.BrokenResourceError:
                return first, None
            return first, await _read_answer(stream, buffer)


def _code(status_line: str | None) -> str:
    return status_line.split()[1] if status_line else "closed"


EARLY = [
    ("wrong token", "POST", "/flows/chain/modules/add/inputs/in", "401"),
    ("no such route", "POST", "/nothing-here", "404"),
    ("method not allowed", "PATCH", "/flows/chain", "405"),
    ("unknown query parameter", "POST", "/flows/chain/modules/add/inputs/in?bad=1", "422"),
    ("no such flow", "POST", "/flows/ghost/modules/m/inputs/in", "4"),
]


@pytest.mark.parametrize(("why", "method", "path", "status"), EARLY)
async def test_runner_connection_serves_the_next_request(
    why: str, method: str, path: str, status: str
) -> None:
    async with serve_runner() as served:
        await served.runner.apply_flow(
            parse_flow(CHAIN, base_dir=None, runtimes=served.runner.runtimes)
        )
        token = "wrong" if why == "wrong token" else served.token
        first, second = await _early_then_health(served.url, token, method, path, BIG)
    assert _code(first)[: len(status)] == status, (why, first)
    assert _code(second) == ("401" if why == "wrong token" else "200"), (why, second)


async def test_a_body_over_the_limit_closes_the_connection() -> None:
    async with serve_runner(max_body=100_000) as served:
        first, second = await _early_then_health(served.url, served.token, "PUT", "/flows/x", BIG)
    assert (_code(first), second) == ("413", None)  # closed, not stuck


async def test_dispatcher_connection_serves_the_next_request(dispatcher: DispatcherProcess) -> None:
    token = (dispatcher.state_dir / "token").read_text().strip()
    for method, path in (("POST", "/nothing-here"), ("PATCH", "/flows"), ("POST", "/events?x=1")):
        first, second = await _early_then_health(dispatcher.url, token, method, path, BIG)
        assert _code(first)[0] == "4", (path, first)
        assert _code(second) == "200", (path, second)
