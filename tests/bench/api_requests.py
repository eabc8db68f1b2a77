"""Runner API request throughput: a runner process (``fifoflow runner serve``) and a
client in this process, on 127.0.0.1.

Figures (calls/s unless said otherwise), each the median of ``rounds`` rounds:
- ``api_http_health``: ``GET /health``, one connection, one call at a time (baseline:
  the cheapest authenticated route, so ratios show what injecting costs on top).
- ``api_http_inject``: ``POST .../inputs/in`` with one message, one call at a time.
- ``api_http_inject_8conns``: the same from 8 connections at once.
- ``api_http_inject_batch``: 1000 messages per call, in messages/s.
- ``api_ws_inject``: JSON-RPC ``inject`` over one WebSocket, one call at a time.
- ``api_ws_inject_pipelined``: 64 calls in flight on one WebSocket.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from fifoflow.api.client import RunnerClient

from ..api.helpers import ServerProcess

FLOW = {
    "fifoflow": 1,
    "id": "sink",
    "modules": [
        {"id": "m", "runtime": "python", "code": "def handle(msg, ctx):\n    return None\n"}
    ],
}


async def _rate(calls: int, fn: Any, concurrency: int = 1) -> float:
    per_task = calls // concurrency
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):

            async def worker() -> None:
                for _ in range(per_task):
                    await fn()

            nursery.start_soon(worker)
    return per_task * concurrency / (time.perf_counter() - start)


async def _measure(url: str, token: str, calls: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    async with RunnerClient(url, token) as client:
        await client.add_or_update_flow(FLOW)
        await client.start_flow("sink")
        clients = [RunnerClient(url, token) for _ in range(8)]
        batch = list(range(1000))
        try:
            async with client.rpc() as rpc:

                async def ws_inject() -> None:
                    await rpc.call("inject", flowId="sink", moduleId="m", msg=1)

                async def health() -> None:
                    await client.health()

                async def inject() -> None:
                    await client.inject("sink", "m", "in", [1])

                pool = iter(clients * (calls // 8 + 1))

                async def inject_pool() -> None:
                    await next(pool).inject("sink", "m", "in", [1])

                async def inject_batch() -> None:
                    await client.inject("sink", "m", "in", batch)

                for _ in range(rounds):
                    for name, fn, conc, n, scale in (
                        ("api_http_health", health, 1, calls, 1),
                        ("api_http_inject", inject, 1, calls, 1),
                        ("api_http_inject_8conns", inject_pool, 8, calls, 1),
                        ("api_http_inject_batch", inject_batch, 1, max(calls // 50, 20), 1000),
                        ("api_ws_inject", ws_inject, 1, calls, 1),
                        ("api_ws_inject_pipelined", ws_inject, 64, calls, 1),
                    ):
                        if name == "api_http_inject_8conns":
                            pool = iter(clients * (n // 8 + 1))
                        out.setdefault(name, []).append(await _rate(n, fn, conc) * scale)
        finally:
            for c in clients:
                await c.aclose()
    return out


def run(calls: int = 2000, rounds: int = 3) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
        state_dir = Path(tmp) / "state"
        server = ServerProcess(state_dir)
        url = server.start()
        try:
            token = (state_dir / "token").read_text().strip()
            values = trio.run(_measure, url, token, calls, rounds)
        finally:
            server.stop()
    figures = {}
    for name, vals in values.items():
        unit = "msg/s" if name == "api_http_inject_batch" else "calls/s"
        figures[name] = {
            "unit": unit,
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
        }
    base = figures["api_http_health"]["median"]
    for fig in figures.values():
        fig["ratio_to_http_health"] = fig["median"] / base
    return figures


if __name__ == "__main__":
    for name, fig in run().items():
        print(
            f"{name:<26} {fig['median']:>12,.0f} {fig['unit']:<8} {fig['ratio_to_http_health']:.2f}x health"
        )
