"""Journaled flows vs checkpointed ones, side by side in one run (runner/JOURNAL.md).

- ``chain``: python -> node -> python, one inject of ``n`` messages, outputs/s.
- ``batched``: the same flow fed by 8 concurrent clients, each injecting batches of 100
  and waiting for each answer (a journaled inject is answered after its group's fsync).
- ``inject latency``: one message per inject, one client, a light fixed rate: how long
  ``inject`` takes (p50/p99); the journal's part is the wait for the group commit.
- ``fdatasync``: what one ``write`` + ``fdatasync`` of 512 bytes costs on the state dir's
  file system (what ``--journal-fsync always`` pays per group).

Each durability: ``checkpoint`` (the default), ``journal`` with fsync ``always`` and with
``never``. Target: journaled (always) >= 50 % of checkpoint throughput.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from fifoflow.flows import parse_flow
from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runtimes.registry import discover

RUNTIMES = discover()
PY_ID = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return msg\n"
NODE_ID = "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return msg; };\n"
MODES = (("checkpoint", "always"), ("journal", "always"), ("journal", "never"))
CLIENTS, BATCH = 8, 100


def _flow(durability: str) -> Any:
    doc = {
        "fifoflow": 1,
        "id": "jchain",
        "durability": durability,
        "modules": [
            {"id": "a", "runtime": "python", "code": PY_ID},
            {"id": "b", "runtime": "node", "code": NODE_ID},
            {"id": "c", "runtime": "python", "code": PY_ID},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }
    return parse_flow(doc, base_dir=None, runtimes=RUNTIMES.keys())


class _Count:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = trio.Event()

    def expect(self, n: int) -> None:
        self.count, self.target, self.done = 0, n, trio.Event()

    async def __call__(self, module: str, port: str, msgs: list[Any]) -> None:
        self.count += len(msgs)
        if self.count >= self.target:
            self.done.set()


async def _measure(
    durability: str, fsync: str, n: int, rounds: int, samples: int
) -> dict[str, Any]:
    msg = {"n": 1, "payload": "x" * 16}
    chain, batched = [], []
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        config = RunnerConfig(state_dir=Path(tmp), journal_fsync=fsync)
        async with open_runner(config) as runner:
            flow = _flow(durability)
            await runner.add_or_update_flow(flow)
            counter = _Count()
            runner.set_output_sink(flow.id, counter)
            await runner.start_flow(flow.id)
            for r in range(rounds + 1):  # a warm-up round first, not counted
                counter.expect(n)
                start = time.perf_counter()
                await runner.inject(flow.id, "a", "in", [msg] * n)
                with trio.fail_after(120):
                    await counter.done.wait()
                if r:
                    chain.append(n / (time.perf_counter() - start))
                await runner.wait_idle(flow.id)

                per_client = max(1, n // (CLIENTS * BATCH))
                counter.expect(per_client * CLIENTS * BATCH)

                async def client(per_client: int = per_client) -> None:
                    for _ in range(per_client):
                        await runner.inject(flow.id, "a", "in", [msg] * BATCH)

                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(CLIENTS):
                        nursery.start_soon(client)
                with trio.fail_after(120):
                    await counter.done.wait()
                if r:
                    batched.append(counter.target / (time.perf_counter() - start))
                await runner.wait_idle(flow.id)
            latencies = []
            for i in range(samples + 20):
                start = time.perf_counter()
                await runner.inject(flow.id, "a", "in", [i])
                elapsed = time.perf_counter() - start
                if i >= 20:
                    latencies.append(elapsed * 1e6)
                await runner.wait_idle(flow.id)
                await trio.sleep(0.002)  # a light fixed rate, not synchronization
            journal = runner._journals.get(flow.id)
            groups = journal.groups if journal is not None else 0
            await runner.stop_flow(flow.id)
    latencies.sort()
    return {
        "chain_msg_s": statistics.median(chain),
        "batched_msg_s": statistics.median(batched),
        "inject_p50_us": latencies[len(latencies) // 2],
        "inject_p99_us": latencies[int(len(latencies) * 0.99) - 1],
        "groups": groups,
    }


def fsync_cost(folder: Path, writes: int = 500) -> float:
    """Microseconds per 512-byte append + fdatasync in ``folder``."""
    path = folder / f".fsync-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(writes):
            os.write(fd, b"x" * 512)
            os.fdatasync(fd)
        return (time.perf_counter() - start) / writes * 1e6
    finally:
        os.close(fd)
        path.unlink()


def run(n: int = 50_000, rounds: int = 3, samples: int = 300) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for durability, fsync in MODES:
        name = durability if durability == "checkpoint" else f"journal_{fsync}"
        found[name] = trio.run(_measure, durability, fsync, n, rounds, samples)
    found["fdatasync_us"] = fsync_cost(Path(tempfile.gettempdir()))
    base = found["checkpoint"]
    for key in ("journal_always", "journal_never"):
        for figure in ("chain_msg_s", "batched_msg_s"):
            found[key][f"{figure}_ratio"] = found[key][figure] / base[figure]
    return found


def print_report(found: dict[str, Any]) -> None:
    print()
    print("durability: checkpoint vs journal (python -> node -> python, state in every module)")
    print(
        f"  {'':<16} {'chain msg/s':>12} {'batched msg/s':>14} {'inject p50 us':>14} "
        f"{'inject p99 us':>14} {'groups':>8}"
    )
    for name in ("checkpoint", "journal_always", "journal_never"):
        f = found[name]
        print(
            f"  {name:<16} {f['chain_msg_s']:>12,.0f} {f['batched_msg_s']:>14,.0f} "
            f"{f['inject_p50_us']:>14,.0f} {f['inject_p99_us']:>14,.0f} {f['groups']:>8,}"
        )
    for name in ("journal_always", "journal_never"):
        f = found[name]
        print(
            f"  {name}: {f['chain_msg_s_ratio']:.0%} of checkpoint (chain), "
            f"{f['batched_msg_s_ratio']:.0%} (batched)"
        )
    always = found["journal_always"]
    met = min(always["chain_msg_s_ratio"], always["batched_msg_s_ratio"]) >= 0.5
    print(f"  target: journal (fsync always) >= 50% of checkpoint: {'met' if met else 'NOT met'}")
    print(f"  one 512-byte append + fdatasync here: {found['fdatasync_us']:,.0f} us")


if __name__ == "__main__":
    print_report(run())
