"""The go runtime in the runner: built hosts in mixed flows, state across a SIGKILL and
across code swaps, compile errors, the build cache."""

from __future__ import annotations

import copy
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from fifoflow.runner import FlowLoadError, RunnerConfig, open_runner
from fifoflow.runner.swap import SwapRejected

from .helpers import make_flow, next_event, start

if shutil.which("go") is None and not os.environ.get("FIFOFLOW_GO"):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI: the go toolchain is missing (tests.setup_machine installs golang-go)"
        )
    pytest.skip("no Go toolchain (apt-get install golang-go)", allow_module_level=True)

PY_SRC = "def handle(msg, ctx):\n    return {'i': msg}\n"
NODE_DST = (
    "exports.handle = (msg, ctx) => {\n"
    "  ctx.state.seen = (ctx.state.seen || 0) + 1;\n"
    "  return { ...msg, seen: ctx.state.seen };\n"
    "};\n"
)


def go_mid(version: int) -> str:
    """A go module that counts in its state and tags each message with its version."""
    return (
        "package mid\n\n"
        'import "fifoflow"\n\n'
        "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
        '\tn, _ := ctx.State["n"].(float64)\n'
        '\tctx.State["n"] = n + 1\n'
        "\tm := msg.(map[string]any)\n"
        '\tm["mid"] = n + 1\n'
        f'\tm["v"] = {version}\n'
        "\treturn m, nil\n"
        "}\n"
    )


def chain(mid_code: str, flow_id: str = "mix") -> dict[str, Any]:
    return {
        "id": flow_id,
        "modules": [
            {"id": "src", "runtime": "python", "code": PY_SRC},
            {"id": "mid", "runtime": "go", "code": mid_code},
            {"id": "dst", "runtime": "node", "code": NODE_DST},
        ],
        "wires": ["src.out -> mid.in", "mid.out -> dst.in"],
    }


def go_instance(runner: Any, flow_id: str) -> Any:
    run = runner.flow(flow_id)
    (instance,) = [i for i in run.instances.values() if i.manifest.id == "go"]
    return instance


def check_exactly_once_in_order(msgs: list[Any], total: int) -> None:
    assert [m["i"] for m in msgs] == list(range(total)), "lost, doubled or reordered"
    assert [m["mid"] for m in msgs] == list(range(1, total + 1)), "the go counter has a gap"
    assert [m["seen"] for m in msgs] == list(range(1, total + 1))


async def test_python_go_node_chain_10000_in_order() -> None:
    total = 10_000
    async with open_runner() as runner:
        sink = await start(runner, chain(go_mid(1)))
        await runner.inject("mix", "src", "in", list(range(total)))
        await sink.wait_for(total, seconds=60)
        await runner.wait_idle("mix")
        check_exactly_once_in_order(sink.msgs(), total)
        assert runner.module_state("mix", "mid") == {"n": total}


async def test_go_to_go_wires_stay_in_the_host() -> None:
    add = 'package a\n\nimport "fifoflow"\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n\tctx.Emit("log", "saw")\n\treturn msg.(float64) + 1, nil\n}\n'
    double = 'package b\n\nimport "fifoflow"\n\nfunc Init(ctx *fifoflow.Ctx) { ctx.State["k"] = ctx.Config["k"] }\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n\treturn msg.(float64) * ctx.State["k"].(float64), nil\n}\n'
    doc = {
        "id": "gg",
        "modules": [
            {"id": "a", "runtime": "go", "code": add, "outputs": ["out", "log"]},
            {"id": "b", "runtime": "go", "code": double, "config": {"k": 3}},
        ],
        "wires": ["a.out -> b.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("gg", "a", "in", [1, 2, 3])
        await runner.wait_idle("gg")
        assert sink.msgs("b.out") == [6, 9, 12]
        assert sink.msgs("a.log") == ["saw"] * 3
        run = runner.flow("gg")
        assert len(run.instances) == 1, "two go modules of one flow share one host"
        # the a -> b wire never went through the runner
        assert not any(key[0].endswith("/a") and key[1] == "out" for key in run.wire_counts)


async def test_go_state_survives_sigkill_of_the_host() -> None:
    async with open_runner() as runner:
        sub = runner.subscribe(flows=["mix"], kinds=["runtime"])
        sink = await start(runner, chain(go_mid(1)))
        await runner.inject("mix", "src", "in", list(range(100)))
        await runner.wait_idle("mix")
        instance = go_instance(runner, "mix")
        killed = instance.process.pid
        os.kill(killed, signal.SIGKILL)
        await next_event(sub, "runtime", event="ready")
        assert instance.process.pid != killed
        assert instance.restarts == 1
        assert instance.last_build["cached"] is True, "a restart builds nothing"
        await runner.inject("mix", "src", "in", list(range(100, 200)))
        await sink.wait_for(200)
        await runner.wait_idle("mix")
        check_exactly_once_in_order(sink.msgs(), 200)
        assert runner.module_state("mix", "mid") == {"n": 200}


async def test_go_sigkill_mid_stream_loses_nothing() -> None:
    total = 10_000
    config = RunnerConfig(window=2000, queue_capacity=2000, frame_messages=100)
    async with open_runner(config) as runner:
        sink = await start(runner, chain(go_mid(1)))
        instance = go_instance(runner, "mix")
        sub = runner.subscribe(flows=["mix"], kinds=["runtime"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.inject, "mix", "src", "in", list(range(total)))
            await sink.wait_for(2000)
            os.kill(instance.process.pid, signal.SIGKILL)
        await sink.wait_for(total, seconds=60)
        await runner.wait_idle("mix")
        # the go host may have handled everything before it was killed (the messages
        # reach it over a direct channel): wait for its restart, not only for the sink
        await next_event(sub, "runtime", event="ready")
        assert instance.restarts == 1
        got = [m["i"] for m in sink.msgs()]
    assert set(got) == set(range(total)), "a message was lost"


async def _produce(runner: Any, total: int, rate: float, done: trio.Event) -> None:
    """Inject ``total`` numbered messages at about ``rate`` msg/s (pacing, not syncing)."""
    batch = 50
    i = 0
    next_at = trio.current_time()
    while i < total:
        n = min(batch, total - i)
        await runner.inject("mix", "src", "in", list(range(i, i + n)))
        i += n
        next_at += batch / rate
        await trio.sleep_until(next_at)
    done.set()


async def test_go_code_swaps_under_load_build_first_and_keep_state() -> None:
    total = 10_000
    async with open_runner() as runner:
        sub = runner.subscribe(flows=["mix"], kinds=["build", "swap"])
        sink = await start(runner, chain(go_mid(0)))
        produced = trio.Event()
        reports = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, runner, total, 2500.0, produced)
            for version in (1, 2, 3):
                result = await runner.apply_flow(make_flow(chain(go_mid(version))))
                reports.append(result.report)
            await produced.wait()
        await sink.wait_for(total, seconds=60)
        await runner.wait_idle("mix")
        msgs = sink.msgs()
        check_exactly_once_in_order(msgs, total)
        versions = [m["v"] for m in msgs]
        assert versions == sorted(versions), "an older binary handled a message after a newer one"
        assert versions[-1] == 3
        assert runner.module_state("mix", "mid") == {"n": total}
        assert all(r["changes"]["moved"][0]["module"] == "mid" for r in reports)
        assert len(runner.flow("mix").instances) == 3, "the old go hosts are stopped"
        seen = []
        with trio.move_on_after(0.5):
            async for event in sub:
                seen.append(event.get("event") or event["kind"])
        # each swap came after its binary was built (or found built): build first
        swaps = [i for i, what in enumerate(seen) if what == "swap"]
        assert len(swaps) == 3, seen
        assert all(seen[i - 1] in ("finished", "cached") for i in swaps), seen


async def test_compile_error_refuses_the_swap_with_file_and_line_and_old_code_runs() -> None:
    async with open_runner() as runner:
        sub = runner.subscribe(flows=["mix"], kinds=["build"])
        sink = await start(runner, chain(go_mid(1)))
        await runner.inject("mix", "src", "in", [0])
        await sink.wait_for(1)
        broken = chain(go_mid(2).replace("return m, nil", "return m nil"))
        with pytest.raises(SwapRejected) as info:
            await runner.apply_flow(make_flow(broken))
        assert info.value.module == "mid"
        assert info.value.error["type"] == "CompileError"
        # the line of "return m nil" in the user's code, named as the flow names it
        assert "mix/mid:11:11: syntax error" in info.value.error["message"], info.value.error
        assert "syntax error" in info.value.error["message"]
        failed = await next_event(sub, "build", event="failed")
        assert failed["line"] == 11
        assert runner.flow("mix").revision == 1
        await runner.inject("mix", "src", "in", [1])
        await sink.wait_for(2)
        assert sink.msgs()[1] == {"i": 1, "mid": 2, "v": 1, "seen": 2}


async def test_compile_error_at_start_is_a_load_failure_naming_module_file_line() -> None:
    bad = 'package mid\n\nimport "fifoflow"\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n\treturn undefinedThing, nil\n}\n'
    async with open_runner() as runner:
        with pytest.raises(FlowLoadError) as info:
            await start(runner, chain(bad, flow_id="bad"))
        assert info.value.module == "bad/mid"
        assert "bad/mid:6:9: undefined: undefinedThing" in info.value.error["message"]


async def test_a_module_without_handle_is_refused() -> None:
    code = "package mid\n\nfunc Other() {}\n"
    async with open_runner() as runner:
        with pytest.raises(FlowLoadError, match="defines no func Handle"):
            await start(runner, chain(code, flow_id="noh"))


async def _build_events(sub: Any) -> list[dict[str, Any]]:
    events = []
    with trio.fail_after(60):
        async for event in sub:
            events.append(event)
            if event["event"] in ("finished", "cached", "failed"):
                return events
    return events


async def test_second_start_reuses_the_cached_build(tmp_path: Path) -> None:
    config = RunnerConfig(env_dir=tmp_path / "envs")
    code = go_mid(7) + "\n// cache test\n"
    for attempt in range(2):
        async with open_runner(config) as runner:
            sub = runner.subscribe(flows=["mix"], kinds=["build"])
            sink = await start(runner, chain(code))
            events = await _build_events(sub)
            await runner.inject("mix", "src", "in", [0])
            await sink.wait_for(1)
            if attempt == 0:
                assert [e["event"] for e in events] == ["started", "finished"]
                assert events[-1]["seconds"] > 0
            else:
                assert [e["event"] for e in events] == ["cached"], "the second start built again"
    assert (tmp_path / "go-builds" / "bin" / events[0]["key"] / "host").exists()


async def test_a_load_of_code_not_in_the_binary_fails_clearly() -> None:
    async with open_runner() as runner:
        await start(runner, chain(go_mid(1)))
        instance = go_instance(runner, "mix")
        frame = copy.deepcopy(instance.modules["mix/mid"])
        frame["code"] = go_mid(99)
        error = await instance.load_module({**frame, "state": None})
        assert error is not None
        assert error["type"] == "NotBuilt"
        assert "not in this host's binary" in error["message"]


async def test_a_wire_inside_the_go_host_is_counted() -> None:
    # the go host lists counts (PROTOCOL.md section 12): its in-host wire has a number
    echo = 'package {}\n\nimport "fifoflow"\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) {{ return msg, nil }}\n'
    doc = {
        "id": "gcount",
        "modules": [
            {"id": "src", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
            {"id": "g1", "runtime": "go", "code": echo.format("g1")},
            {"id": "g2", "runtime": "go", "code": echo.format("g2")},
        ],
        "wires": ["src.out -> g1.in", "g1.out -> g2.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("gcount", "src", "in", list(range(40)))
        await sink.wait_for(40, 120)
        with trio.fail_after(20):
            await runner.wait_idle("gcount")
        assert sink.msgs("g2.out") == list(range(40))
        wires = {w["wire"]: w for w in runner.flow("gcount").stats()["wires"]}
        assert (wires["g1.out->g2.in"]["via"], wires["g1.out->g2.in"]["host"]) == ("host", 40)
        assert wires["g1.out->g2.in"]["messages"] == 40
        assert wires["src.out->g1.in"]["messages"] == 40
