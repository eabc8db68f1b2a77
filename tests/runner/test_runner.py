"""The runner with real hosts over real FIFOs: routing, state, faults, isolation."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import orjson
import pytest
import trio

from fifoflow.flows import parse_flow
from fifoflow.runner import FlowLoadError, FlowStatus, RunnerConfig, RunnerError, open_runner
from fifoflow.runtimes.registry import discover

from .helpers import RUNTIMES, make_flow, next_event, start

PY_ID = "def handle(msg, ctx):\n    return msg\n"
NODE_ID = "exports.handle = (msg, ctx) => msg;\n"


def module(mid: str, runtime: str, code: str | None = None, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {"id": mid, "runtime": runtime, **extra}
    if code is not None:
        doc["code"] = code
    return doc


async def test_python_node_exec_chain() -> None:
    doc = {
        "id": "chain",
        "modules": [
            module(
                "greet",
                "python",
                "def handle(msg, ctx):\n    return {'text': ctx.config['greeting'] + ', ' + msg['name']}\n",
                config={"greeting": "Hello"},
            ),
            module(
                "shout",
                "node",
                "exports.handle = (msg) => ({...msg, text: msg.text.toUpperCase()});\n",
            ),
            module(
                "wrap",
                "exec",
                command=[
                    sys.executable,
                    "-u",
                    "-c",
                    "import sys, json\nfor line in sys.stdin:\n    print(json.dumps({'shell': json.loads(line)}), flush=True)\n",
                ],
            ),
            module(
                "tail",
                "python",
                "def handle(msg, ctx):\n    ctx.emit('audit', len(msg['shell']['text']))\n    return msg['shell']['text'] + '!'\n",
                outputs=["out", "audit"],
            ),
        ],
        "wires": ["greet.out -> shout.in", "shout.out -> wrap.in", "wrap.out -> tail.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("chain", "greet", "in", [{"name": "world"}, {"name": "fifo"}])
        await runner.wait_idle("chain")
        assert sink.msgs("tail.out") == ["HELLO, WORLD!", "HELLO, FIFO!"]
        assert sink.msgs("tail.audit") == [12, 11]
        assert runner.list_flows_for_runtime("node") == ["chain"]


async def test_same_runtime_wires_keep_native_objects_and_order() -> None:
    # A tuple survives a python->python wire only if no JSON is involved.
    doc = {
        "id": "native",
        "modules": [
            module("a", "python", "def handle(msg, ctx):\n    return (msg, 'tuple')\n"),
            module(
                "b",
                "python",
                "def handle(msg, ctx):\n    return type(msg).__name__ + ':' + str(msg[0])\n",
            ),
        ],
        "wires": ["a.out -> b.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("native", "a", "in", list(range(5000)))
        await runner.wait_idle("native")
        assert sink.msgs() == [f"tuple:{i}" for i in range(5000)]


async def test_state_is_kept_across_stop_and_start() -> None:
    counter = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return ctx.state['n']\n"
    async with open_runner() as runner:
        sink = await start(
            runner, {"id": "count", "modules": [module("c", "python", counter)], "wires": []}
        )
        await runner.inject("count", "c", "in", ["x"] * 3)
        await runner.wait_idle("count")
        assert runner.module_state("count", "c") == {"n": 3}
        await runner.stop_flow("count")
        assert runner.flow("count").status is FlowStatus.STOPPED
        await runner.start_flow("count")
        await runner.inject("count", "c", "in", ["y"])
        await runner.wait_idle("count")
        assert sink.msgs() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("runtime", "code"),
    [
        (
            "python",
            "def handle(msg, ctx):\n    if msg % 3 == 0:\n        raise ValueError(f'bad {msg}')\n    return msg\n",
        ),
        (
            "node",
            "exports.handle = (msg) => { if (msg % 3 === 0) throw new Error('bad ' + msg); return msg; };\n",
        ),
    ],
)
async def test_user_errors_are_recorded_and_the_flow_goes_on(runtime: str, code: str) -> None:
    async with open_runner() as runner:
        sink = await start(
            runner, {"id": "errs", "modules": [module("m", runtime, code)], "wires": []}
        )
        await runner.inject("errs", "m", "in", list(range(1, 10)))
        await runner.wait_idle("errs")
        assert sink.msgs() == [1, 2, 4, 5, 7, 8]
        errors = runner.module_errors("errs", "m")
        assert [e["msg"] for e in errors] == [3, 6, 9]
        assert "bad 3" in errors[0]["error"]["message"]
        assert errors[0]["error"].get("traceback")


@pytest.mark.parametrize("victim", ["node", "python"])
async def test_sigkill_mid_stream_redelivers_without_gaps(victim: str) -> None:
    n = 10_000
    doc = {
        "id": "kill",
        "modules": [
            module("src", "python", PY_ID),
            module("mid", "node", NODE_ID),
            module("dst", "python", PY_ID),
        ],
        "wires": ["src.out -> mid.in", "mid.out -> dst.in"],
    }
    config = RunnerConfig(window=2000, queue_capacity=2000, frame_messages=100)
    async with open_runner(config) as runner:
        sink = await start(runner, doc)
        run = runner.flow("kill")
        mid = run.instances[victim]  # the python host holds both src and dst
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "kill", "src", "in", list(range(n)))
            await sink.wait_for(2000)
            assert mid.process is not None
            killed_pid = mid.process.pid
            in_flight = mid.statistics()["unacknowledged"]
            os.kill(killed_pid, signal.SIGKILL)
        await runner.wait_idle("kill")
        got = sink.msgs()
        assert mid.restarts == 1
        # What node had not acknowledged when it died was sent again to the new process.
        assert mid.statistics()["redelivered"] >= in_flight
        assert mid.process is not None
        assert mid.process.pid != killed_pid
    assert set(got) == set(range(n)), "a message was lost"
    duplicates = len(got) - n
    assert 0 <= duplicates <= config.window
    # Per-wire order: increasing, except one step back where the redelivery starts.
    backsteps = [i for i in range(1, len(got)) if got[i] <= got[i - 1]]
    assert len(backsteps) <= 1
    if backsteps:
        i = backsteps[0]
        assert got[i : i + duplicates] == got[i - duplicates : i], (
            "the replay is not the unacknowledged run"
        )
    print(
        f"SIGKILL: {in_flight} in flight, {mid.statistics()['redelivered']} redelivered, {duplicates} duplicates"
    )


async def test_garbage_on_a_fifo_restarts_that_runtime_only() -> None:
    counter = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return ctx.state['n']\n"
    async with open_runner() as runner:
        victim = await start(
            runner, {"id": "victim", "modules": [module("c", "python", counter)], "wires": []}
        )
        other = await start(
            runner, {"id": "other", "modules": [module("o", "python", PY_ID)], "wires": []}
        )
        await runner.inject("victim", "c", "in", ["a", "b"])
        await runner.wait_idle("victim")
        instance = runner.flow("victim").instances["python"]
        other_pid = runner.flow("other").instances["python"].process.pid
        assert instance.process is not None
        sub = runner.subscribe(flows=["victim"], kinds=["runtime"])
        # Someone writes garbage into the pipe the runner reads from.
        fd = os.open(instance.process.fifos.from_runtime, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"\x00this is not json\n")
        os.close(fd)
        await next_event(sub, "runtime", event="restart")
        assert "broken" in (instance.last_error or "")
        await runner.inject("victim", "c", "in", ["c"])
        await runner.inject("other", "o", "in", ["still here"])
        await runner.wait_idle("victim")
        await runner.wait_idle("other")
        assert victim.msgs() == [1, 2, 3], "state was not restored after the restart"
        assert other.msgs() == ["still here"]
        assert runner.flow("other").instances["python"].process.pid == other_pid
        assert any("protocol error" in entry["text"] for entry in instance.logs)


async def test_garbage_into_a_host_is_fatal_for_that_host_and_loses_nothing() -> None:
    async with open_runner() as runner:
        sink = await start(
            runner, {"id": "g", "modules": [module("m", "node", NODE_ID)], "wires": []}
        )
        instance = runner.flow("g").instances["node"]
        assert instance.process is not None
        sub = runner.subscribe(flows=["g"], kinds=["runtime"])
        fd = os.open(instance.process.fifos.to_runtime, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"{{{ garbage\n")
        os.close(fd)
        event = await next_event(sub, "runtime", event="restart")
        assert "status 3" in event["reason"]
        await runner.inject("g", "m", "in", [1, 2, 3])
        await runner.wait_idle("g")
        assert sink.msgs() == [1, 2, 3]


@pytest.mark.parametrize(
    ("runtime", "code"),
    [
        (
            "python",
            "import time\ndef handle(msg, ctx):\n    if msg == 'hang':\n        time.sleep(3600)\n    return msg\n",
        ),
        (
            "node",
            "exports.handle = (msg) => { if (msg === 'hang') { for (;;) {} } return msg; };\n",
        ),
    ],
)
async def test_hanging_handler_is_reported_and_its_runtime_restarted(
    runtime: str, code: str
) -> None:
    doc = {"id": "hang", "modules": [module("m", runtime, code, timeout=0.5)], "wires": []}
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("hang", "m", "in", ["a", "hang", "b"])
        await runner.wait_idle("hang")
        assert sink.msgs() == ["a", "b"]
        errors = runner.module_errors("hang", "m")
        assert [e["error"]["type"] for e in errors] == ["Timeout"]
        assert errors[0]["msg"] == "hang"
        assert runner.flow("hang").instances[runtime].restarts == 1


async def test_a_module_that_fails_to_load_fails_start_with_its_name() -> None:
    doc = {
        "id": "bad",
        "modules": [
            module("ok", "python", PY_ID),
            module("broken", "python", "def handle(msg, ctx)\n    return 1\n"),
        ],
        "wires": [],
    }
    async with open_runner() as runner:
        with pytest.raises(FlowLoadError) as info:
            await start(runner, doc)
        assert info.value.module == "bad/broken"
        assert "SyntaxError" in str(info.value)
        assert runner.flow("bad").status is FlowStatus.FAILED


async def test_backpressure_slows_the_producer_and_never_drops() -> None:
    slow = "import time\ndef handle(msg, ctx):\n    time.sleep(0.0005)\n    return msg\n"
    doc = {
        "id": "slow",
        "modules": [module("fast", "node", NODE_ID), module("slow", "python", slow)],
        "wires": ["fast.out -> slow.in"],
    }
    config = RunnerConfig(queue_capacity=200, window=200, frame_messages=50)
    async with open_runner(config) as runner:
        sink = await start(runner, doc)
        fast_sink = await start(
            runner, {"id": "free", "modules": [module("f", "python", PY_ID)], "wires": []}
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "slow", "fast", "in", list(range(3000)))
            await sink.wait_for(100)
            # While "slow" is saturated, an unrelated flow still answers at once.
            run = runner.flow("slow")
            assert (
                run.instances["python"].statistics()["queued"]
                <= config.queue_capacity + config.frame_messages
            )
            with trio.fail_after(5):
                await runner.inject("free", "f", "in", ["ping"])
                await fast_sink.wait_for(1)
        await runner.wait_idle("slow")
        assert sink.msgs() == list(range(3000))


async def test_inject_errors_name_what_is_wrong() -> None:
    async with open_runner() as runner:
        await start(runner, {"id": "x", "modules": [module("m", "python", PY_ID)], "wires": []})
        with pytest.raises(RunnerError, match="no module 'nope'"):
            await runner.inject("x", "nope", "in", [1])
        with pytest.raises(RunnerError, match="no input port 'inn'"):
            await runner.inject("x", "m", "inn", [1])
        with pytest.raises(RunnerError, match="no flow 'y'"):
            await runner.inject("y", "m", "in", [1])
        with pytest.raises(RunnerError, match="unknown runtime 'cobol'"):
            runner.list_flows_for_runtime("cobol")
        assert {r["id"] for r in runner.list_runtimes()} >= {"python", "node", "exec"}
        assert set(RUNTIMES) >= {"python", "node", "exec"}


@pytest.mark.parametrize(
    ("runtime", "code"),
    [
        (
            "python",
            "import asyncio\n"
            "def init(ctx):\n    ctx.state.setdefault('calls', 0)\n"
            "async def handle(msg, ctx):\n    await asyncio.sleep(0)\n    ctx.state['calls'] += 1\n"
            "    print('handled', msg)\n    return msg * 10\n",
        ),
        (
            "node",
            "exports.init = (ctx) => { ctx.state.calls = ctx.state.calls || 0; };\n"
            "exports.handle = async (msg, ctx) => { await new Promise((r) => setTimeout(r, 1)); ctx.state.calls += 1;"
            " console.log('handled', msg); return msg * 10; };\n",
        ),
    ],
)
async def test_async_handlers_init_and_captured_logs(runtime: str, code: str) -> None:
    async with open_runner() as runner:
        sink = await start(
            runner, {"id": "async", "modules": [module("m", runtime, code)], "wires": []}
        )
        await runner.inject("async", "m", "in", [1, 2, 3])
        await runner.wait_idle("async")
        assert sink.msgs() == [10, 20, 30]
        assert runner.module_state("async", "m") == {"calls": 3}
        logs = [entry["text"] for entry in runner.flow("async").instances[runtime].logs]
        assert "handled 3" in logs, "the host's stdout is captured line by line as its log"


async def test_a_crash_loop_fails_the_flow_and_says_why() -> None:
    poison = "import os\ndef handle(msg, ctx):\n    if msg == 'die':\n        os._exit(1)\n    return msg\n"
    config = RunnerConfig(crash_limit=3, crash_period=30)
    async with open_runner(config) as runner:
        await start(runner, {"id": "loop", "modules": [module("m", "python", poison)], "wires": []})
        other = await start(
            runner, {"id": "calm", "modules": [module("c", "python", PY_ID)], "wires": []}
        )
        sub = runner.subscribe(flows=["loop"], kinds=["flow"])
        await runner.inject("loop", "m", "in", ["die"])
        event = await next_event(sub, "flow", status="failed")
        assert "crashed 3 times" in event["error"]
        run = runner.flow("loop")
        assert run.status is FlowStatus.FAILED
        assert [e["error"]["type"] for e in run.errors["*"]] == ["RuntimeFailed"]
        # The other flow never noticed.
        await runner.inject("calm", "c", "in", ["ok"])
        await runner.wait_idle("calm")
        assert other.msgs() == ["ok"]


async def test_the_runner_deadline_catches_a_host_without_a_watchdog(tmp_path: Path) -> None:
    # The python host with its watchdog switched off stands for a host that has none.
    runtime_dir = tmp_path / "python-nowatch"
    runtime_dir.mkdir()
    host = Path(RUNTIMES["python"].directory) / "host.py"
    (runtime_dir / "manifest.json").write_bytes(
        orjson.dumps(
            {
                "id": "python-nowatch",
                "name": "python without watchdog",
                "version": "0",
                "protocol": 1,
                "command": ["env", "FIFOFLOW_NO_WATCHDOG=1", "{python}", "-u", str(host)],
            }
        )
    )
    runtimes = discover(tmp_path)
    hang = "import time\ndef handle(msg, ctx):\n    if msg == 'hang':\n        time.sleep(3600)\n    return msg\n"
    doc = {
        "fifoflow": 1,
        "id": "nowatch",
        "modules": [{"id": "m", "runtime": "python-nowatch", "code": hang, "timeout": 0.2}],
        "wires": [],
    }
    flow = parse_flow(doc, base_dir=None, runtimes=runtimes.keys())
    async with open_runner(runtimes=runtimes) as runner:
        await runner.add_or_update_flow(flow)
        await runner.start_flow("nowatch")
        await runner.inject("nowatch", "m", "in", ["hang"])
        with trio.fail_after(20):
            await runner.wait_idle("nowatch")
        errors = runner.module_errors("nowatch", "m")
        # Stuck twice on the same frame: its message is recorded, not delivered a third time.
        assert [e["error"]["type"] for e in errors] == ["Timeout", "Timeout"]
        assert errors[-1]["msg"] == "hang"
        assert runner.flow("nowatch").instances["python-nowatch"].restarts >= 1


async def test_a_listed_exit_leaves_the_flow_and_feeds_its_wires() -> None:
    # "a.out" feeds b in the same host and c in another one, and is listed as an exit:
    # every message goes all three ways, before and after a hot swap that lists it.
    doc = {
        "id": "tap",
        "modules": [
            module("a", "python", "def handle(msg, ctx):\n    return msg + 1\n"),
            module("b", "python", "def handle(msg, ctx):\n    return ['b', msg]\n"),
            module("c", "node", "exports.handle = (msg) => ['c', msg];\n"),
        ],
        "wires": ["a.out -> b.in", "a.out -> c.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("tap", "a", "in", [0, 1])
        await runner.wait_idle("tap")
        assert sink.msgs("a.out") == []
        await runner.add_or_update_flow(make_flow({**doc, "exits": ["a.out"]}))
        await runner.inject("tap", "a", "in", [2, 3])
        await runner.wait_idle("tap")
        assert sink.msgs("a.out") == [3, 4]
        assert sink.msgs("b.out") == [["b", m] for m in (1, 2, 3, 4)]
        assert sink.msgs("c.out") == [["c", m] for m in (1, 2, 3, 4)]
        assert runner.flow_stats("tap")["exits"]["a.out"] == 2
