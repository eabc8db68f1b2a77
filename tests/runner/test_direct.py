"""Direct host-to-host channels (runner/direct.py, PROTOCOL.md section 11), end to end:
real runners, real python, node and go hosts, real FIFOs."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runtimes.gobuild import find_go

from .helpers import make_flow, next_event, start

PY_COUNT = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return msg\n"
NODE_COUNT = (
    "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return msg; };\n"
)
# ~30 us of work per message: 20,000 messages take long enough to act mid-stream
NODE_BUSY = (
    "exports.handle = (msg, ctx) => {\n"
    "  const t = process.hrtime.bigint(); while (process.hrtime.bigint() - t < 30000n) {}\n"
    "  ctx.state.n = (ctx.state.n || 0) + 1; return msg;\n"
    "};\n"
)
# a node module slow enough that its channel fills: 2 ms of busy work per message
NODE_SLOW = (
    "exports.handle = (msg, ctx) => {\n"
    "  const t = Date.now(); while (Date.now() - t < 2) {}\n"
    "  ctx.state.n = (ctx.state.n || 0) + 1; return msg;\n"
    "};\n"
)
# go modules (built into one host binary per flow: runtimes/go/README.md)
needs_go = pytest.mark.skipif(find_go() is None, reason="no Go toolchain (golang-go)")
GO_COUNT = (
    "package count\n\n"
    'import "fifoflow"\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    '\tn, _ := ctx.State["n"].(float64)\n'
    '\tctx.State["n"] = n + 1\n'
    "\treturn msg, nil\n"
    "}\n"
)
# ~30 us of work per message, as NODE_BUSY
GO_BUSY = (
    "package busy\n\n"
    'import (\n\t"time"\n\n\t"fifoflow"\n)\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    "\tt := time.Now()\n"
    "\tfor time.Since(t) < 30*time.Microsecond {\n\t}\n"
    '\tn, _ := ctx.State["n"].(float64)\n'
    '\tctx.State["n"] = n + 1\n'
    "\treturn msg, nil\n"
    "}\n"
)


def chain(
    flow_id: str = "chain", mid: str = NODE_COUNT, runtimes: tuple[str, str] = ("node", "python")
) -> dict[str, Any]:
    """python src -> mid -> dst, mid and dst in ``runtimes`` (by default node, then
    python: src and dst share one python host)."""
    codes = {"python": PY_COUNT, "node": NODE_COUNT, "go": GO_COUNT}
    return {
        "id": flow_id,
        "modules": [
            {"id": "src", "runtime": "python", "code": PY_COUNT},
            {"id": "mid", "runtime": runtimes[0], "code": mid},
            {"id": "dst", "runtime": runtimes[1], "code": codes[runtimes[1]]},
        ],
        "wires": ["src.out -> mid.in", "mid.out -> dst.in"],
    }


def go_chain(flow_id: str = "gochain", mid: str = GO_COUNT) -> dict[str, Any]:
    """python src -> go mid -> node dst: three hosts, go receiving and sending."""
    return chain(flow_id, mid, ("go", "node"))


def direct_counts(runner: Any, flow_id: str) -> dict[str, int]:
    return {w["wire"]: w["direct"] for w in runner.flow_stats(flow_id)["wires"]}


def first_deliveries(got: list[Any]) -> list[Any]:
    """The messages in the order they were first seen (duplicates after a crash left out)."""
    seen: set[Any] = set()
    first = []
    for m in got:
        if m not in seen:
            seen.add(m)
            first.append(m)
    return first


@pytest.mark.parametrize(
    "mid", ["node", pytest.param("go", marks=needs_go)], ids=["py-node-py", "py-go-node"]
)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "no-direct"])
async def test_a_chain_across_hosts_goes_direct_each_message_once_in_order(
    direct: bool, mid: str
) -> None:
    n = 20_000
    doc = go_chain("chain") if mid == "go" else chain()
    async with open_runner(RunnerConfig(direct=direct)) as runner:
        sink = await start(runner, doc)
        assert len(runner.flow("chain").instances) == (3 if mid == "go" else 2)
        await runner.inject("chain", "src", "in", list(range(n)))
        await sink.wait_for(n, 60)
        await runner.wait_idle("chain")
        assert sink.msgs() == list(range(n))
        for module in ("src", "mid", "dst"):
            assert runner.module_state("chain", module) == {"n": n}
        stats = {w["wire"]: w for w in runner.flow_stats("chain")["wires"]}
        for wire in ("src.out->mid.in", "mid.out->dst.in"):
            assert stats[wire]["messages"] == n
            # with channels every message of the wire went host to host (the runner kept
            # copies); without, every one through the runner
            assert stats[wire]["direct"] == (n if direct else 0)
            assert stats[wire]["runner"] == (0 if direct else n)
        assert runner.flow("chain").pending == 0


@pytest.mark.parametrize("victim", ["node", "python", pytest.param("go", marks=needs_go)])
async def test_sigkill_of_a_host_with_channels_loses_nothing(victim: str) -> None:
    """node is the receiver of src -> mid and the sender of mid -> dst; python the other
    way round: killing either kills a sender and a receiver mid-stream. go: the same as
    node, in python -> go -> node."""
    n = 20_000
    config = RunnerConfig(window=2000, queue_capacity=2000, frame_messages=100)
    doc = go_chain("kill", GO_BUSY) if victim == "go" else chain("kill", NODE_BUSY)
    async with open_runner(config) as runner:
        sink = await start(runner, doc)
        run = runner.flow("kill")
        # instances by host key: "python", "node", "go-<build hash>"
        [host] = [i for key, i in run.instances.items() if key.split("-")[0] == victim]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "kill", "src", "in", list(range(n)))
            await sink.wait_for(3000)
            assert all(direct_counts(runner, "kill").values()), "no traffic went direct"
            # kill while copies of channel traffic are held (not yet acknowledged)
            for seen in range(3000, n - 2000, 10):
                await sink.wait_for(seen)
                if run.direct.statistics()["held"]:
                    break
            assert run.direct.statistics()["held"] > 0, "nothing in flight on a channel"
            assert len(sink.items) < n - 1000, "not mid-stream"
            assert host.process is not None
            killed = host.process.pid
            os.kill(killed, signal.SIGKILL)
        await runner.wait_idle("kill")
        got = sink.msgs()
        assert host.restarts == 1
        assert host.process is not None
        assert host.process.pid != killed
        before = direct_counts(runner, "kill")
        # the channels open again after the restart: new traffic goes direct
        await runner.inject("kill", "src", "in", list(range(n, n + 500)))
        await sink.wait_for(len(got) + 500)
        await runner.wait_idle("kill")
        after = direct_counts(runner, "kill")
        assert all(after[w] > before[w] for w in after), (before, after)
        states = {m: runner.module_state("kill", m)["n"] for m in ("src", "mid", "dst")}
    assert set(got) == set(range(n)), "a message was lost"
    # at least once: per-wire order of first deliveries kept, duplicates within a window
    assert first_deliveries(got) == list(range(n))
    duplicates = len(got) - n
    assert 0 <= duplicates <= config.window
    # counters: every message counted, a replayed one at most once more
    for module, count in states.items():
        assert n + 500 <= count <= n + 500 + config.window, (module, count)
    print(f"SIGKILL {victim}: {duplicates} duplicates, counters {states}")


@pytest.mark.parametrize("sender", ["python", pytest.param("go", marks=needs_go)])
async def test_a_full_channel_is_cut_and_the_flow_goes_on_through_the_runner(
    sender: str,
) -> None:
    """A slow receiver: the sender's write meets a full pipe, gives the channel up; what
    it held goes through the runner (none lost, none twice, in order) and the channel
    opens again once the wire is empty."""
    n = 800
    big = "x" * 4_000  # ~4 KB a message: the 1 MiB pipe holds about 250
    flow = {
        "id": "full",
        "modules": [
            {"id": "src", "runtime": sender, "code": GO_COUNT if sender == "go" else PY_COUNT},
            {"id": "slow", "runtime": "node", "code": NODE_SLOW},
        ],
        "wires": ["src.out -> slow.in"],
    }
    config = RunnerConfig(frame_messages=8)
    async with open_runner(config) as runner:
        sink = await start(runner, flow)
        run = runner.flow("full")
        # src gets 8 messages (~32 KB) per delivery and emits them as one frame; the
        # receiver handles one per 2 ms: the pipe fills after about 30 frames
        for start_at in range(0, n, 8):
            chunk = [{"i": i, "pad": big} for i in range(start_at, start_at + 8)]
            await runner.inject("full", "src", "in", chunk)
            if start_at == 0:
                # the first ones went through the channel: the receiver reads it now
                await sink.wait_for(8)
                assert run.direct.statistics()["open"]
        await sink.wait_for(n, 60)
        await runner.wait_idle("full")
        got = [m["i"] for m in sink.msgs()]
        assert got == list(range(n)), "lost, doubled or reordered"
        assert runner.module_state("full", "slow") == {"n": n}
        stats = run.direct.statistics()
        assert stats["cut"] >= 1, stats
        # cut while the receiver was reading it (it had handled some, the rest came
        # from the runner and was not handled twice)
        assert any(not c.open and c.listening for c in run.direct.channels.values())
        [wire] = runner.flow_stats("full")["wires"]
        assert 0 < wire["direct"] < n, wire
        assert wire["runner"] > 0, wire
        # the wire is empty: the next messages open a new channel and go direct
        await runner.inject("full", "src", "in", [{"i": n + i} for i in range(20)])
        await sink.wait_for(n + 20)
        await runner.wait_idle("full")
        [again] = runner.flow_stats("full")["wires"]
        assert again["direct"] > wire["direct"], (wire, again)
        assert run.direct.statistics()["open"], "no channel open again"
        assert [m["i"] for m in sink.msgs()] == list(range(n + 20))


async def test_a_hot_swap_under_load_with_channels_open_loses_nothing() -> None:
    n = 20_000
    async with open_runner(RunnerConfig(queue_capacity=2000, window=2000)) as runner:
        sink = await start(runner, chain("swap", NODE_BUSY))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "swap", "src", "in", list(range(n)))
            await sink.wait_for(3000)
            assert all(direct_counts(runner, "swap").values())
            # new code for mid (its state kept) and a rewired flow: the pausing swap
            assert len(sink.items) < n - 5000, "not mid-stream"
            doc = chain("swap", NODE_BUSY.replace("return msg", "return msg /* v2 */"))
            doc["modules"].append({"id": "tap", "runtime": "python", "code": PY_COUNT})
            doc["wires"].append("mid.out -> tap.in")
            await runner.add_or_update_flow(make_flow(doc))
        await runner.wait_idle("swap")
        before = direct_counts(runner, "swap")["mid.out->dst.in"]
        await runner.inject("swap", "src", "in", list(range(n, n + 200)))
        await runner.wait_idle("swap")
        assert direct_counts(runner, "swap")["mid.out->dst.in"] > before, (
            "no channel after the swap"
        )
        got = sink.msgs("dst.out")
        assert got == list(range(n + 200))
        assert runner.module_state("swap", "mid") == {"n": n + 200}
        assert runner.module_state("swap", "dst") == {"n": n + 200}


async def test_a_breakpoint_set_while_traffic_goes_direct_stops_the_module() -> None:
    n = 20_000
    async with open_runner(RunnerConfig(queue_capacity=2000, window=2000)) as runner:
        sink = await start(runner, chain("dbg", NODE_BUSY))
        sub = runner.subscribe(flows=["dbg"], kinds=["paused"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "dbg", "src", "in", list(range(n)))
            await sink.wait_for(2000)
            assert all(direct_counts(runner, "dbg").values())
            assert len(sink.items) < n - 5000, "not mid-stream"
            await runner.set_breakpoint_at_module("dbg/dst")
            assert not runner.flow("dbg").direct.statistics()["open"]
            event = await next_event(sub, "paused")
            m = event["msg"]
            await runner.pause_flow("dbg")  # returns once nothing is in flight
            # dst handled exactly what came before m on its wire, and nothing past it
            assert runner.module_state("dbg", "dst") == {"n": m}
            assert sink.msgs() == list(range(m))
            assert runner.queues("dbg")["dst"][0]["msg"] == m
            step = await runner.single_step_flow("dbg")
            assert step["dbg/dst"]["inputStates"]["consumed"] == {"port": "in", "msg": m}
            assert runner.module_state("dbg", "dst") == {"n": m + 1}
            assert sink.msgs() == list(range(m + 1))
            before = direct_counts(runner, "dbg")
            await runner.remove_breakpoint_at_module("dbg/dst")
            await runner.continue_flow("dbg")
        await runner.wait_idle("dbg")
        await runner.inject("dbg", "src", "in", list(range(n, n + 200)))
        await runner.wait_idle("dbg")
        after = direct_counts(runner, "dbg")
        assert all(after[w] > before[w] for w in after), "channels did not open again"
        assert sink.msgs() == list(range(n + 200))
        for module in ("src", "mid", "dst"):
            assert runner.module_state("dbg", module) == {"n": n + 200}
