"""Runs on one runner's executor, in process: a real Runner and RunExecutor (warm hosts),
no dispatcher and no book; the reporter is a small in-process one.

Figures:
- ``runs_per_s``: python -> node -> python runs (one input each) with ``concurrency``
  attempts offered at once (offer to result delivered), per round.
- ``latency``: one run at a time on an idle executor, offer to result delivered
  (``start`` + the attempt + ``reporter.result``), p50/p99 in ms.
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import Any

import attrs
import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.runs.errors import RunRefused
from fifoflow.runner.runs.executor import RunExecutor
from fifoflow.runner.runs.model import RunOffer, RunProgress, RunResult, Target

CHAIN = {
    "fifoflow": 1,
    "id": "bench",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg + 1\n"},
        {"id": "b", "runtime": "node", "code": "exports.handle = (msg, ctx) => msg * 2;\n"},
        {"id": "c", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg - 1\n"},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}


class _Reporter:
    def __init__(self) -> None:
        self.done: dict[str, trio.Event] = {}
        self.states: dict[str, str] = {}

    async def progress(self, p: RunProgress) -> bool:
        return True

    async def result(self, r: RunResult) -> bool:
        self.states[r.runId] = r.state
        self.done.setdefault(r.runId, trio.Event()).set()
        return True


def _offer() -> RunOffer:
    return RunOffer(
        runId="r" + secrets.token_hex(8), attempt=1, flow=CHAIN, inputs=[Target("a", "in", 1)]
    )


async def _one(ex: RunExecutor, rep: _Reporter) -> float:
    o = _offer()
    t0 = time.perf_counter()
    while True:
        try:
            await ex.start(o)
            break
        except RunRefused:  # full: wait for a slot
            await ex.wait_free()
    await rep.done.setdefault(o.runId, trio.Event()).wait()
    return time.perf_counter() - t0


async def _bench(runs: int, concurrency: int, samples: int, rounds: int) -> dict[str, Any]:
    rep = _Reporter()
    async with open_runner(RunnerConfig()) as runner, trio.open_nursery() as nursery:
        ex = RunExecutor(runner, max_runs=concurrency, reporter=rep, warm=2)
        await nursery.start(ex.run)
        await ex.pool.wait_warm()
        for _ in range(10):  # warm-up
            await _one(ex, rep)
        latencies = [await _one(ex, rep) * 1000 for _ in range(samples)]
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            async with trio.open_nursery() as inner:
                limiter = trio.Semaphore(concurrency)

                async def go(slots: trio.Semaphore) -> None:
                    async with slots:
                        await _one(ex, rep)

                for _ in range(runs):
                    inner.start_soon(go, limiter)
            rates.append(runs / (time.perf_counter() - t0))
        failed = sum(1 for s in rep.states.values() if s != "succeeded")
        nursery.cancel_scope.cancel()
    latencies.sort()
    return {
        "runs_per_s": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "concurrency": concurrency,
            "runs": runs,
        },
        "latency_ms": {
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max": latencies[-1],
            "samples": samples,
        },
        "failed": failed,
        "pool": attrs.asdict(ex.pool.statistics()),
    }


def run(
    runs: int = 400, concurrency: int = 8, samples: int = 200, rounds: int = 3
) -> dict[str, Any]:
    return trio.run(_bench, runs, concurrency, samples, rounds)


def print_report(found: dict[str, Any]) -> None:
    rate, lat = found["runs_per_s"], found["latency_ms"]
    print(
        f"runs (python -> node -> python, one runner, in process): "
        f"{rate['median']:,.0f} runs/s (min {rate['min']:,.0f}, max {rate['max']:,.0f}) "
        f"at {rate['concurrency']} concurrent; one run offer->result p50 {lat['p50']:.1f} ms, "
        f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms; failed runs: {found['failed']}"
    )


if __name__ == "__main__":
    print_report(run())


# ---------------------------------------------------------------------- through a dispatcher

_ENDED = {"succeeded", "failed", "timed_out", "canceled"}


async def _dispatched(runs: int, samples: int, rounds: int) -> dict[str, Any]:
    """A real ``fifoflow dispatcher serve --local-runners 2``: runs submitted over REST by
    8 clients at once, their ends heard on the dispatcher's ``/ws`` (``run`` events)."""
    import tempfile
    from pathlib import Path

    import httpx
    import orjson
    import psutil
    import trio_websocket

    from ..dispatcher.test_dispatcher import DispatcherProcess, wait_until

    with tempfile.TemporaryDirectory(prefix="fifoflow-bench-runs-") as tmp:
        d = DispatcherProcess(Path(tmp) / "dispatcher")
        d.command = lambda: [*DispatcherProcess.command(d), "--local-runners", "2"]  # type: ignore[method-assign]
        d.start()
        try:
            wait_until(
                "two local runners",
                lambda: [r["status"] for r in d.api("GET", "/runners")] == ["ready"] * 2,
                timeout=60,
            )
            token = (d.state_dir / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            ws_url = d.url.replace("http", "ws", 1) + f"/ws?access_token={token}"
            ended: dict[str, trio.Event] = {}
            states: dict[str, str] = {}
            body = {"document": CHAIN}

            async with (
                httpx.AsyncClient(base_url=d.url, headers=headers, timeout=60) as client,
                trio_websocket.open_websocket_url(ws_url) as ws,
                trio.open_nursery() as nursery,
            ):
                await ws.send_message(
                    orjson.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "subscribe",
                            "params": {"kinds": ["run"]},
                        }
                    ).decode()
                )

                async def listen() -> None:
                    while True:
                        frame = orjson.loads(await ws.get_message())
                        event = (frame.get("params") or {}).get("event") or {}
                        if event.get("kind") == "run" and event.get("state") in _ENDED:
                            states[event["run"]] = event["state"]
                            ended.setdefault(event["run"], trio.Event()).set()

                nursery.start_soon(listen)

                async def one(n: int) -> float:
                    t0 = time.perf_counter()
                    answer = await client.post("/runs", json={**body, "inputs": [{"msg": n}]})
                    answer.raise_for_status()
                    await ended.setdefault(answer.json()["id"], trio.Event()).wait()
                    return time.perf_counter() - t0

                for n in range(20):  # warm-up (both runners' warm hosts, connections)
                    await one(n)
                latencies = sorted([await one(n) * 1000 for n in range(samples)])
                proc = psutil.Process(d.proc.pid)  # type: ignore[union-attr]
                rates, cpu = [], []
                for _ in range(rounds):
                    c0, t0 = proc.cpu_times(), time.perf_counter()
                    slots = trio.Semaphore(8)

                    async def go(n: int, slots: trio.Semaphore) -> None:
                        async with slots:
                            await one(n)

                    async with trio.open_nursery() as inner:
                        for n in range(runs):
                            inner.start_soon(go, n, slots)
                    took = time.perf_counter() - t0
                    c1 = proc.cpu_times()
                    rates.append(runs / took)
                    cpu.append(((c1.user + c1.system) - (c0.user + c0.system)) / took)
                nursery.cancel_scope.cancel()
            failed = sum(1 for s in states.values() if s != "succeeded")
        finally:
            d.stop()
    return {
        "runs_per_s": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "runs": runs,
            "clients": 8,
            "runners": 2,
            "dispatcher_cpu": statistics.median(cpu),
        },
        "latency_ms": {
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "max": latencies[-1],
            "samples": samples,
        },
        "failed": failed,
    }


def run_dispatched(runs: int = 500, samples: int = 100, rounds: int = 3) -> dict[str, Any]:
    return trio.run(_dispatched, runs, samples, rounds)


def print_dispatched(found: dict[str, Any]) -> None:
    rate, lat = found["runs_per_s"], found["latency_ms"]
    print(
        f"runs through a dispatcher (python -> node -> python, 2 local runners, 8 clients): "
        f"{rate['median']:,.0f} runs/s (min {rate['min']:,.0f}, max {rate['max']:,.0f}; target >= 100), "
        f"dispatcher CPU {rate['dispatcher_cpu']:.2f} cores; one run on idle runners, "
        f"submit->result p50 {lat['p50']:.1f} ms (target <= 50), p99 {lat['p99']:.1f} ms; "
        f"failed runs: {found['failed']}"
    )
