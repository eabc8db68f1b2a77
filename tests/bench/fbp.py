"""The FBP protocol endpoint: what watching a network costs, and how fast an IDE's edit lands.

- ``fbp_watched``: three ``core/Repeat`` modules in one python runtime, msgs/s fed by
  ``inject`` until the last one has them all; unwatched (the fast path: wires stay in the
  host) and watched (``Runner.watch_flow``: every wire through the runner, a ``wire`` event
  per batch, drained by one subscriber as the FBP endpoint does). Ratio watched/unwatched.
- ``fbp_edit``: round trip of ``graph:changenode`` (no flow change) and of
  ``graph:addnode`` + ``graph:addedge`` (each a hot swap of the running network) over the
  WebSocket, p50/p99 in ms.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import orjson
import trio
import trio_websocket

from fifoflow.api.fbp import FbpRuntime, serve_fbp
from fifoflow.flows import parse_flow
from fifoflow.flows.library import ComponentLibrary
from fifoflow.runner import open_runner

SECRET = "bench"


def _chain() -> dict[str, Any]:
    code = ComponentLibrary().get("core/Repeat").code
    return {
        "fifoflow": 1,
        "id": "fbpbench",
        "modules": [{"id": m, "runtime": "python", "code": code} for m in ("a", "b", "c")],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }


async def _throughput(messages: int, rounds: int, *, watched: bool) -> list[float]:
    found = []
    async with open_runner() as runner:
        flow = parse_flow(_chain(), base_dir=None, runtimes=runner.runtimes)
        await runner.apply_flow(flow)
        got = 0
        done = trio.Event()
        target = 0

        async def sink(module: str, port: str, msgs: list[Any]) -> None:
            nonlocal got
            got += len(msgs)
            if got >= target:
                done.set()

        runner.set_output_sink("fbpbench", sink)
        await runner.start_flow("fbpbench")
        await runner.watch_flow("fbpbench", watched)
        sub = runner.subscribe(flows=["fbpbench"], kinds=["wire"], capacity=100_000)
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                async for _ in sub:
                    pass

            nursery.start_soon(drain)
            batch = list(range(1000))
            for _ in range(rounds):
                got, done, target = 0, trio.Event(), messages
                began = time.perf_counter()
                for _ in range(messages // len(batch)):
                    await runner.inject("fbpbench", "a", "in", batch)
                await done.wait()
                found.append(messages / (time.perf_counter() - began))
            sub.close()
        await runner.stop_flow("fbpbench")
    return found


async def _edits(count: int) -> dict[str, dict[str, float]]:
    async with open_runner() as runner:
        fbp = FbpRuntime(runner, SECRET, ComponentLibrary())
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_fbp(
                    fbp, "127.0.0.1:0", shutdown=stop, max_message=1 << 20, task_status=task_status
                )
            )
            async with trio_websocket.open_websocket_url(urls[0], subprotocols=["noflo"]) as ws:

                async def call(protocol: str, command: str, answer: str, **payload: Any) -> None:
                    message = {"protocol": protocol, "command": command, "payload": payload}
                    await ws.send_message(orjson.dumps({**message, "secret": SECRET}).decode())
                    while True:
                        reply = orjson.loads(await ws.get_message())
                        if reply["command"] == "error":
                            raise RuntimeError(reply["payload"]["message"])
                        if reply["protocol"] == protocol and reply["command"] == answer:
                            return

                await call("graph", "clear", "clear", id="e")
                await call(
                    "graph", "addnode", "addnode", graph="e", id="n0", component="core/Repeat"
                )
                await call("network", "start", "started", graph="e")
                meta, swap = [], []
                for i in range(count):
                    began = time.perf_counter()
                    await call(
                        "graph", "changenode", "changenode", graph="e", id="n0", metadata={"x": i}
                    )
                    meta.append((time.perf_counter() - began) * 1000)
                    began = time.perf_counter()
                    await call(
                        "graph",
                        "addnode",
                        "addnode",
                        graph="e",
                        id=f"n{i + 1}",
                        component="core/Repeat",
                    )
                    src, tgt = {"node": f"n{i}", "port": "out"}, {"node": f"n{i + 1}", "port": "in"}
                    await call("graph", "addedge", "addedge", graph="e", src=src, tgt=tgt)
                    swap.append((time.perf_counter() - began) * 1000)
                await call("network", "stop", "stopped", graph="e")
            stop.set()

    def pct(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        }

    return {"changenode_ms": pct(meta), "addnode_addedge_ms": pct(swap)}


def run(messages: int, rounds: int, edits: int) -> dict[str, Any]:
    fast = trio.run(lambda: _throughput(messages, rounds, watched=False))
    slow = trio.run(lambda: _throughput(messages, rounds, watched=True))
    watched = {
        "unwatched_msg_s": statistics.median(fast),
        "watched_msg_s": statistics.median(slow),
        "ratio": statistics.median(slow) / statistics.median(fast),
    }
    return {"fbp_watched": watched, "fbp_edit": trio.run(_edits, edits)}


def print_report(result: dict[str, Any]) -> None:
    w, e = result["fbp_watched"], result["fbp_edit"]
    print()
    print(
        f"FBP: 3 core/Repeat in one python runtime, unwatched {w['unwatched_msg_s']:,.0f} msg/s,"
        f" watched (network:data) {w['watched_msg_s']:,.0f} msg/s, ratio {w['ratio']:.2f}"
    )
    for name, label in (
        ("changenode_ms", "changenode"),
        ("addnode_addedge_ms", "addnode+addedge (2 hot swaps)"),
    ):
        print(
            f"  edit round trip, {label:<30} p50 {e[name]['p50']:.2f} ms  p99 {e[name]['p99']:.2f} ms"
        )
