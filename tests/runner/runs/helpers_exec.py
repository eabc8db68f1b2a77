"""Test side of the executor's protocol boundary: a RunReporter that records what it
is told and lets a test wait for it; offers and flows for the executor tests."""

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.runs.executor import RunExecutor
from fifoflow.runner.runs.model import FailOn, RunOffer, RunProgress, RunResult, Target

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

PY_INC = "def handle(msg, ctx):\n    return msg + 1\n"
NODE_DOUBLE = "exports.handle = (msg, ctx) => msg * 2;\n"
PY_DEC = "def handle(msg, ctx):\n    return msg - 1\n"

#: python -> node -> python; (n + 1) * 2 - 1
CHAIN = {
    "modules": [
        {"id": "a", "runtime": "python", "code": PY_INC},
        {"id": "b", "runtime": "node", "code": NODE_DOUBLE},
        {"id": "c", "runtime": "python", "code": PY_DEC},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}


def run_id() -> str:
    return "r" + secrets.token_hex(8)


def offer(
    doc: dict[str, Any],
    msgs: list[Any],
    *,
    to: str = "a.in",
    attempt: int = 1,
    rid: str | None = None,
    **options: Any,
) -> RunOffer:
    module, port = to.split(".")
    return RunOffer(
        runId=rid or run_id(),
        attempt=attempt,
        flow={"fifoflow": 1, "id": "job", **doc},
        inputs=[Target(module, port, m) for m in msgs],
        **options,
    )


class Reporter:
    """Records progress and results. ``lease``: what progress answers; ``take``:
    whether results are taken (else kept by the executor)."""

    def __init__(self) -> None:
        self.progress_seen: list[RunProgress] = []
        self.results: dict[tuple[str, int], RunResult] = {}
        self.result_calls = 0
        self.lease = True
        self.take = True
        self._changed = trio.Event()

    async def progress(self, p: RunProgress) -> bool:
        self.progress_seen.append(p)
        self._poke()
        return self.lease

    async def result(self, r: RunResult) -> bool:
        self.result_calls += 1
        self._poke()
        if not self.take:
            return False
        self.results[(r.runId, r.attempt)] = r
        return True

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_result(self, o: RunOffer, seconds: float = 20) -> RunResult:
        with trio.fail_after(seconds):
            while (o.runId, o.attempt) not in self.results:
                await self._changed.wait()
        return self.results[(o.runId, o.attempt)]

    async def wait_for(self, predicate: Any, seconds: float = 20) -> None:
        with trio.fail_after(seconds):
            while not predicate():
                await self._changed.wait()


@asynccontextmanager
async def executor(
    archive: Path | None = None, reporter: Reporter | None = None, **options: Any
) -> AsyncIterator[RunExecutor]:
    """A real Runner and a RunExecutor on it, both stopped (every host reaped) on exit."""
    async with open_runner(RunnerConfig()) as runner, trio.open_nursery() as nursery:
        ex = RunExecutor(
            runner,
            archive=archive,
            reporter=reporter if reporter is not None else Reporter(),
            **{"max_runs": 4, **options},
        )
        await nursery.start(ex.run)
        try:
            yield ex
        finally:
            nursery.cancel_scope.cancel()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


__all__ = ["CHAIN", "FailOn", "Reporter", "alive", "executor", "offer", "run_id"]
