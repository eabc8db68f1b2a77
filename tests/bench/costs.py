"""What running costs: cold starts, memory, CPU.

- ``cold_start_<runtime>``: spawn of a runtime host until its ``hello`` (median of 5).
- ``cold_start_runner``: ``fifoflow runner serve`` from spawn until it listens (median of 3;
  includes the python interpreter and its imports).
- ``rss_*``: resident memory of the runner (this process) and of a flow's runtime hosts,
  idle after start and at the peak of a python -> node -> python throughput round.
- ``cpu_per_10k``: CPU time (user + system) of the runner and the hosts together, per
  10,000 messages through that chain.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.process import spawn_runtime
from fifoflow.runtimes.registry import discover

from ..api.helpers import ServerProcess

MiB = 1024 * 1024


async def _cold_start(runtime: str, times: int = 5) -> float:
    manifest = discover()[runtime]
    values = []
    for _ in range(times):
        start = time.perf_counter()
        async with spawn_runtime(manifest.argv(), name=f"cold-{runtime}", on_log=lambda *_: None):
            values.append((time.perf_counter() - start) * 1000)
    return statistics.median(values)


def _runner_cold_start(times: int = 3) -> float:
    values = []
    for _ in range(times):
        with tempfile.TemporaryDirectory(prefix="ffbench-") as tmp:
            server = ServerProcess(Path(tmp) / "state")
            start = time.perf_counter()
            server.start()
            values.append((time.perf_counter() - start) * 1000)
            server.stop()
    return statistics.median(values)


def _tree(pids: list[int]) -> list[psutil.Process]:
    return [psutil.Process(pid) for pid in pids]


async def _load(flow: Any, n: int) -> dict[str, float]:
    me = psutil.Process()
    async with open_runner(RunnerConfig()) as runner:
        await runner.add_or_update_flow(flow)
        await runner.start_flow(flow.id)
        hosts = _tree(
            [inst.process.pid for inst in runner.flow(flow.id).instances.values() if inst.process]
        )
        idle_runner = me.memory_info().rss
        idle_hosts = sum(p.memory_info().rss for p in hosts)
        got = trio.Event()
        count = 0

        async def sink(module: str, port: str, msgs: list[Any]) -> None:
            nonlocal count
            count += len(msgs)
            if count >= n:
                got.set()

        runner.set_output_sink(flow.id, sink)
        peak = {"runner": idle_runner, "hosts": idle_hosts}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak["runner"] = max(peak["runner"], me.memory_info().rss)
                peak["hosts"] = max(peak["hosts"], sum(p.memory_info().rss for p in hosts))

        def cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in (me, *hosts))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = cpu()
        await runner.inject(flow.id, "a", "in", [{"n": 1, "payload": "x" * 16}] * n)
        with trio.fail_after(120):
            await got.wait()
        used = cpu() - before
        stop.set()
        sampler.join()
        await runner.stop_flow(flow.id)
    return {
        "rss_runner_idle_mib": idle_runner / MiB,
        "rss_hosts_idle_mib": idle_hosts / MiB,
        "rss_runner_load_mib": peak["runner"] / MiB,
        "rss_hosts_load_mib": peak["hosts"] / MiB,
        "cpu_per_10k_ms": used / n * 10_000 * 1000,
    }


def run(flow: Any, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for runtime in ("python", "node", "exec"):
        out[f"cold_start_{runtime}_ms"] = trio.run(_cold_start, runtime)
    out["cold_start_runner_ms"] = _runner_cold_start()
    out.update(trio.run(_load, flow, n))
    return out
