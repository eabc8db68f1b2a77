"""The runner link is cheap for a peer without credentials: frames before ``hello`` are
answered one at a time (no task, no memory per frame), a link that does not say hello
within seconds is closed, and meanwhile ``/health`` answers and a healthy runner stays
ready (issue 16, item 2)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import orjson
import psutil
import pytest
import trio
import trio_websocket

from fifoflow.dispatcher.link import HELLO_SECONDS

from .test_dispatcher import DispatcherProcess, linked_id, runner_status, start_runner

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

FRAMES = 200_000


async def _closed(ws: trio_websocket.WebSocketConnection) -> bool:
    """Whether the server closed the link (it sends nothing else before hello)."""
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed:
        return True


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path / "dispatcher", heartbeat=0.5)
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


async def test_a_flood_before_hello_costs_little_and_ends(
    tmp_path: Path, dispatcher: DispatcherProcess
) -> None:
    runner = start_runner(tmp_path, "healthy", dispatcher, dispatcher.token())
    try:
        runner_id = linked_id(runner)
        assert dispatcher.proc is not None
        server = psutil.Process(dispatcher.proc.pid)
        rss_before = server.memory_info().rss
        url = dispatcher.url.replace("http", "ws") + "/link"
        frame = orjson.dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {}}).decode()
        health_ms: list[float] = []

        async def flood(ws: trio_websocket.WebSocketConnection) -> int:
            sent = 0
            try:
                for _ in range(FRAMES):
                    await ws.send_message(frame)
                    sent += 1
            except trio_websocket.ConnectionClosed:
                pass  # closed for not saying hello: what we wait for
            return sent

        async def probe_health(done: trio.Event) -> None:
            async with httpx.AsyncClient(base_url=dispatcher.url) as http:
                while not done.is_set():
                    start = time.perf_counter()
                    response = await http.get(
                        "/health",
                        headers={
                            "Authorization": f"Bearer {(dispatcher.state_dir / 'token').read_text().strip()}"
                        },
                        timeout=10,
                    )
                    assert response.status_code == 200
                    health_ms.append((time.perf_counter() - start) * 1000)
                    await trio.sleep(0.05)  # a probe's pace, not a synchronization

        with trio.fail_after(HELLO_SECONDS + 30):
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(probe_health, done)
                # (not open_websocket_url: its exit waits on a close the flood left
                # half-done; the client's own tasks are cancelled here instead)
                ws = await trio_websocket.connect_websocket_url(nursery, url)
                sent = await flood(ws)
                closed = await _closed(ws)
                done.set()
                nursery.cancel_scope.cancel()
        assert closed, "the link stayed open without a hello"
        rss_after = server.memory_info().rss
        grown = (rss_after - rss_before) / 2**20
        print(
            f"flood: {sent} frames before hello; dispatcher RSS {rss_before / 2**20:.1f} ->"
            f" {rss_after / 2**20:.1f} MiB; /health p50 {sorted(health_ms)[len(health_ms) // 2]:.1f} ms,"
            f" max {max(health_ms):.1f} ms over {len(health_ms)} probes"
        )
        assert grown < 64, f"the dispatcher grew {grown:.0f} MiB under a flood before hello"
        assert max(health_ms) < 2000
        assert runner_status(dispatcher, runner_id) == "ready"
    finally:
        assert runner.stop() == 0


async def test_a_link_that_never_says_hello_is_closed(dispatcher: DispatcherProcess) -> None:
    url = dispatcher.url.replace("http", "ws") + "/link"
    with trio.fail_after(HELLO_SECONDS + 10):
        async with trio_websocket.open_websocket_url(url) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()


async def test_a_flood_after_hello_is_bounded(dispatcher: DispatcherProcess) -> None:
    """A registered runner that floods its link: at most a bounded number of its calls are
    handled at once (runner/rpc.py MAX_INFLIGHT), the rest wait in its socket."""
    assert dispatcher.proc is not None
    server = psutil.Process(dispatcher.proc.pid)
    url = dispatcher.url.replace("http", "ws") + "/link"
    token = dispatcher.token()

    async def call(ws: trio_websocket.WebSocketConnection, method: str, **params: object) -> dict:
        await ws.send_message(
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).decode()
        )
        return orjson.loads(await ws.get_message())["result"]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket_url(nursery, url)
            identity = await call(ws, "register", token=token, name="flooder")
            await call(ws, "hello", runnerId=identity["runnerId"], secret=identity["secret"])
            rss_before = server.memory_info().rss
            frame = orjson.dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {}}).decode()
            for _ in range(FRAMES // 2):
                await ws.send_message(frame)
            async with httpx.AsyncClient() as http:
                response = await http.get(
                    dispatcher.url + "/health",
                    headers={
                        "Authorization": f"Bearer {(dispatcher.state_dir / 'token').read_text().strip()}"
                    },
                    timeout=10,
                )
            assert response.status_code == 200
            grown = (server.memory_info().rss - rss_before) / 2**20
            nursery.cancel_scope.cancel()
    print(f"flood after hello: {FRAMES // 2} frames; dispatcher grew {grown:.1f} MiB")
    assert grown < 64
