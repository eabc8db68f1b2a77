"""RunExecutor's archive: results kept until delivered, across restarts; unfinished
attempts; drain; retention; the Runner's own executor."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.runs.model import RunState

from .helpers_exec import CHAIN, Reporter, executor, offer

if TYPE_CHECKING:
    from pathlib import Path

SLOW = {
    "modules": [
        {
            "id": "a",
            "runtime": "python",
            "code": "import time\ndef handle(msg, ctx):\n    time.sleep(msg)\n    return msg\n",
            "timeout": 60,
        }
    ],
    "wires": [],
}


async def test_undelivered_result_is_kept_and_redelivered(tmp_path: Path) -> None:
    rep = Reporter()
    rep.take = False
    async with executor(archive=tmp_path, reporter=rep, retry_interval=600) as ex:
        o = offer(CHAIN, [1])
        await ex.start(o)
        await rep.wait_for(lambda: rep.result_calls >= 1)
        await ex.wait_idle()
        assert [r.runId for r in ex.undelivered()] == [o.runId]
        assert ex.held() == [{"runId": o.runId, "attempt": 1, "finished": True}]
        folder = tmp_path / o.runId / "1"
        assert (folder / "result.json").exists()
        assert not (folder / "delivered").exists()
        rep.take = True
        ex.redeliver()
        r = await rep.wait_result(o)
        assert r.state is RunState.SUCCEEDED
        # the marker is written and the result dropped right after the reporter took it
        assert ex.undelivered() == []
        assert (folder / "delivered").exists()
        assert ex.held() == []


async def test_undelivered_results_are_retried_in_the_background(tmp_path: Path) -> None:
    rep = Reporter()
    rep.take = False
    async with executor(archive=tmp_path, reporter=rep, retry_interval=0.1) as ex:
        o = offer(CHAIN, [1])
        await ex.start(o)
        await rep.wait_for(lambda: rep.result_calls >= 1)
        rep.take = True
        r = await rep.wait_result(o)
        assert r.state is RunState.SUCCEEDED


async def test_result_survives_an_executor_restart(tmp_path: Path) -> None:
    rep = Reporter()
    rep.take = False
    o = offer(CHAIN, [1, 2])
    async with executor(archive=tmp_path, reporter=rep, retry_interval=600) as ex:
        await ex.start(o)
        await rep.wait_for(lambda: rep.result_calls >= 1)
        await ex.wait_idle()
    rep2 = Reporter()
    rep2.take = False
    async with executor(archive=tmp_path, reporter=rep2, retry_interval=600) as ex:
        assert ex.held() == [{"runId": o.runId, "attempt": 1, "finished": True}]
        (kept,) = ex.undelivered()
        assert kept.state is RunState.SUCCEEDED
        assert [x["msg"] for x in kept.outputs] == [3, 5]
        rep2.take = True
        ex.redeliver()
        r = await rep2.wait_result(o)
        assert r == kept
    assert (tmp_path / o.runId / "1" / "delivered").exists()


async def test_unfinished_attempt_after_a_restart_is_held_not_restarted(tmp_path: Path) -> None:
    rep = Reporter()
    o = offer(SLOW, [30])
    async with executor(archive=tmp_path, reporter=rep) as ex:
        await ex.start(o)
        await ex.wait_hosts(o.runId, 1)
    # the executor stopped mid-run (as a runner that dies): an offer, no result
    assert (tmp_path / o.runId / "1" / "offer.json").exists()
    assert not (tmp_path / o.runId / "1" / "result.json").exists()
    assert rep.result_calls == 0
    rep2 = Reporter()
    async with executor(archive=tmp_path, reporter=rep2) as ex:
        assert ex.held() == [{"runId": o.runId, "attempt": 1, "finished": False}]
        assert ex.unfinished() == [(o.runId, 1)]
        assert ex.free() == ex.max_runs  # not running
        assert ex.forget(o.runId, 1)
        assert ex.held() == []
        assert not (tmp_path / o.runId).exists()
    assert rep2.result_calls == 0


async def test_drain_waits_then_stops_the_rest(tmp_path: Path) -> None:
    rep = Reporter()
    async with executor(archive=tmp_path, reporter=rep) as ex:
        slow = offer(SLOW, [30])
        quick = offer(SLOW, [0.3])
        await ex.start(slow)
        await ex.start(quick)
        await ex.wait_hosts(slow.runId, 1)
        left = await ex.drain(3)
        assert left == [(slow.runId, 1)]
        assert not ex.accepting
        assert (await rep.wait_result(quick)).state is RunState.SUCCEEDED
        assert (slow.runId, 1) not in rep.results
        assert ex.held() == [{"runId": slow.runId, "attempt": 1, "finished": False}]
        assert (tmp_path / slow.runId / "1" / "offer.json").exists()


async def test_retention_removes_old_delivered_attempts(tmp_path: Path) -> None:
    rep = Reporter()
    old, new = offer(CHAIN, [1]), offer(CHAIN, [2])
    async with executor(archive=tmp_path, reporter=rep) as ex:
        for o in (old, new):
            await ex.start(o)
            await rep.wait_result(o)
        await ex.wait_idle()
    marker = tmp_path / old.runId / "1" / "delivered"
    long_ago = time.time() - 7200
    os.utime(marker, (long_ago, long_ago))
    async with executor(archive=tmp_path, reporter=Reporter(), retention=3600):
        assert not (tmp_path / old.runId).exists()
        assert (tmp_path / new.runId / "1" / "result.json").exists()


async def test_runner_holds_an_executor_when_max_runs_is_set(tmp_path: Path) -> None:
    config = RunnerConfig(state_dir=tmp_path, max_runs=2, warm_hosts=1)
    async with open_runner(config) as runner:
        ex = runner.executor
        assert ex is not None
        assert ex.max_runs == 2
        assert not ex.accepting  # nobody wired a reporter yet
        rep = Reporter()
        ex.reporter = rep
        o = offer(CHAIN, [1])
        await ex.start(o)
        assert (await rep.wait_result(o)).state is RunState.SUCCEEDED
        assert (tmp_path / "runs" / o.runId / "1" / "delivered").exists()
    async with open_runner(RunnerConfig()) as runner:
        assert runner.executor is None
