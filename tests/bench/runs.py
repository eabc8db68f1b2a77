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
