"""RunExecutor with a real Runner, real hosts and pipes; the reporter is the test's
(the protocol boundary)."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import orjson
import pytest
import trio

from fifoflow.runner.runs.errors import RunRefused
from fifoflow.runner.runs.model import FailOn, RunState

from .helpers_exec import CHAIN, Reporter, alive, executor, offer

if TYPE_CHECKING:
    from pathlib import Path

    from fifoflow.runner.runs.executor import RunExecutor
    from fifoflow.runner.runs.model import RunOffer

RAISES_ON_2 = {
    "modules": [
        {
            "id": "a",
            "runtime": "python",
            "code": "def handle(msg, ctx):\n    if msg == 2:\n        raise ValueError('two')\n    return msg\n",
        }
    ],
    "wires": [],
}
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
COUNTER = {
    "modules": [
        {
            "id": "a",
            "runtime": "python",
            "code": (
                "import time\n"
                "def handle(msg, ctx):\n"
                "    time.sleep(0.005)\n"
                "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
                "    return ctx.state['n']\n"
            ),
        },
        {
            "id": "b",
            "runtime": "node",
            "code": "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return [msg, ctx.state.n]; };\n",
        },
    ],
    "wires": ["a.out -> b.in"],
}
EXIT_3 = {
    "modules": [
        {
            "id": "x",
            "runtime": "exec",
            "command": ["sh", "-c", "read line; echo 'bad things happened' >&2; exit 3"],
        }
    ],
    "wires": [],
}


async def test_chain_succeeds_with_outputs_and_progress() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(CHAIN, [1, 2, 3], lease=1.0)
        await ex.start(o)
        assert ex.held() == [{"runId": o.runId, "attempt": 1, "finished": False}]
        r = await rep.wait_result(o)
        folder = ex.attempt_dir(o.runId, 1)
        assert orjson.loads((folder / "offer.json").read_bytes())["runId"] == o.runId
        assert orjson.loads((folder / "result.json").read_bytes())["state"] == "succeeded"
        assert (folder / "delivered").exists()
        assert ex.held() == []
        assert ex.undelivered() == []
    assert r.state is RunState.SUCCEEDED, r
    assert [x["msg"] for x in r.outputs] == [3, 5, 7]
    assert {x["from"] for x in r.outputs} == {"c.out"}
    assert r.handled == {"a": 3, "b": 3, "c": 3}
    assert r.outputsTotal == 3
    assert not r.outputsSpilled
    assert r.finishedAt >= r.startedAt > 0


async def test_progress_renews_the_lease_while_it_runs() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(SLOW, [0.6], lease=0.2)
        await ex.start(o)
        await rep.wait_result(o)
    assert len(rep.progress_seen) >= 2
    assert all(p.runId == o.runId and p.attempt == 1 for p in rep.progress_seen)


@pytest.mark.parametrize(
    ("fail_on", "state"), [(FailOn.ERROR, RunState.FAILED), (FailOn.NEVER, RunState.SUCCEEDED)]
)
async def test_fail_on(fail_on: FailOn, state: RunState) -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(RAISES_ON_2, [1, 2, 3] if fail_on is FailOn.NEVER else [2], failOn=fail_on)
        await ex.start(o)
        r = await rep.wait_result(o)
    assert r.state is state, r
    assert r.errorsTotal == 1
    error = r.errors[0]
    assert error["module"] == "a"
    assert error["msg"] == 2
    assert error["error"]["type"] == "ValueError"
    assert "two" in error["error"]["traceback"]
    if fail_on is FailOn.ERROR:
        assert "ValueError" in (r.reason or "")
    else:
        assert [x["msg"] for x in r.outputs] == [1, 3]


async def test_timeout_ends_timed_out_and_kills_the_host() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(SLOW, [30], timeout=0.5)
        await ex.start(o)
        pid = (await hosts(ex, o, "python"))["python"]
        assert pid is not None
        r = await rep.wait_result(o)
        assert r.state is RunState.TIMED_OUT
        assert "timeout" in (r.reason or "")
        assert r.duration < 5
        assert not alive(pid)


async def test_cancel_mid_run() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(SLOW, [30], lease=0.2)
        await ex.start(o)
        pid = (await hosts(ex, o, "python"))["python"]
        assert pid is not None
        # the message is in the host (counted as given to the module)
        await rep.wait_for(lambda: any(p.handled.get("a") for p in rep.progress_seen))
        await ex.cancel(o.runId, 1, "canceled by the user")
        assert not alive(pid)
        r = await rep.wait_result(o)
    assert r.state is RunState.CANCELED
    assert r.reason == "canceled by the user"


@pytest.mark.parametrize("fail_on", [FailOn.ERROR, FailOn.NEVER])
async def test_exec_exit_code_and_stderr_tail(fail_on: FailOn) -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(EXIT_3, ["go"], to="x.in", failOn=fail_on)
        await ex.start(o)
        r = await rep.wait_result(o)
    assert r.exits["x"]["code"] == 3, r
    assert "bad things happened" in r.exits["x"]["stderr"]
    assert r.state is (RunState.FAILED if fail_on is FailOn.ERROR else RunState.SUCCEEDED)
    assert r.errors
    assert r.errors[0]["error"]["type"] == "ChildExited"


async def test_outputs_over_the_cap_are_spilled(tmp_path: Path) -> None:
    rep = Reporter()
    async with executor(archive=tmp_path, reporter=rep) as ex:
        o = offer(CHAIN, list(range(1500)))
        await ex.start(o)
        r = await rep.wait_result(o)
        assert r.state is RunState.SUCCEEDED
        assert len(r.outputs) == 1000
        assert r.outputsTotal == 1500
        assert r.outputsSpilled
        lines = (tmp_path / o.runId / "1" / "outputs.jsonl").read_bytes().splitlines()
        assert [orjson.loads(x)["msg"] for x in lines] == [(n + 1) * 2 - 1 for n in range(1500)]
        assert r.outputs == [orjson.loads(x) for x in lines[:1000]]


async def test_concurrent_runs_do_not_share_state() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        offers = [offer(COUNTER, ["x"] * 50) for _ in range(2)]
        for o in offers:
            await ex.start(o)
        pids = [await hosts(ex, o, "python", "node") for o in offers]
        results = [await rep.wait_result(o) for o in offers]
    assert pids[0]["python"] != pids[1]["python"]
    assert pids[0]["node"] != pids[1]["node"]
    for r in results:
        assert r.state is RunState.SUCCEEDED
        # each run counts from 1 to 50 on both sides: nothing of the other run's state
        assert [x["msg"] for x in r.outputs] == [[n, n] for n in range(1, 51)]


async def test_sequential_runs_reuse_a_warm_host_with_fresh_state() -> None:
    rep = Reporter()
    async with executor(reporter=rep, warm=1, max_runs=1) as ex:
        with trio.fail_after(20):
            await ex.pool.wait_warm()
        first = offer(COUNTER, ["x"] * 3)
        await ex.start(first)
        pid1 = await hosts(ex, first, "python", "node")
        r1 = await rep.wait_result(first)
        second = offer(COUNTER, ["x"] * 3)
        await ex.start(second)
        pid2 = await hosts(ex, second, "python", "node")
        r2 = await rep.wait_result(second)
        assert ex.pool.statistics().reused >= 2
    # the same processes, and the second run's modules start from an empty state
    assert pid1 == pid2
    assert (
        [x["msg"] for x in r1.outputs] == [x["msg"] for x in r2.outputs] == [[1, 1], [2, 2], [3, 3]]
    )


async def hosts(ex: RunExecutor, o: RunOffer, *keys: str) -> dict[str, int | None]:
    """The pids of a running attempt's hosts, once it has all of ``keys``."""
    with trio.fail_after(10):
        found = await ex.wait_hosts(o.runId, o.attempt)
    assert all(found.get(k) for k in keys), found
    return found


async def test_a_host_killed_fails_only_its_run() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        victim = offer(SLOW, [30])
        other = offer(SLOW, [1])
        await ex.start(victim)
        await ex.start(other)
        pid = (await hosts(ex, victim, "python"))["python"]
        await hosts(ex, other, "python")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        r = await rep.wait_result(victim)
        assert r.state is RunState.FAILED, r
        assert "ended" in (r.reason or "")
        r2 = await rep.wait_result(other)
        assert r2.state is RunState.SUCCEEDED
        assert [x["msg"] for x in r2.outputs] == [1]


async def test_lease_lost_stops_and_drops_the_attempt(tmp_path: Path) -> None:
    rep = Reporter()
    rep.lease = False
    async with executor(archive=tmp_path, reporter=rep) as ex:
        o = offer(SLOW, [30], lease=0.2)
        await ex.start(o)
        with trio.fail_after(10):
            await ex.wait_idle()
        assert ex.held() == []
        assert rep.result_calls == 0
        assert ex.undelivered() == []
        assert not (tmp_path / o.runId).exists()
        assert ex.free() == ex.max_runs


async def test_refusals(tmp_path: Path) -> None:
    rep = Reporter()
    async with executor(archive=tmp_path, reporter=rep, max_runs=1) as ex:
        with pytest.raises(RunRefused, match="runtime 'cobol' is not available"):
            await ex.start(
                offer({"modules": [{"id": "a", "runtime": "cobol", "code": "x"}], "wires": []}, [1])
            )
        busy = offer(SLOW, [30])
        await ex.start(busy)
        with pytest.raises(RunRefused, match="max runs reached"):
            await ex.start(offer(CHAIN, [1]))
        assert ex.free() == 0
        await ex.cancel(busy.runId, 1, "enough")
        ex.reachable = False
        with pytest.raises(RunRefused, match="cannot report"):
            await ex.start(offer(CHAIN, [1]))
        ex.reachable = True
        assert ex.accepting
        left = await ex.drain(0)
        assert left == []
        assert not ex.accepting
        with pytest.raises(RunRefused, match="draining"):
            await ex.start(offer(CHAIN, [1]))
