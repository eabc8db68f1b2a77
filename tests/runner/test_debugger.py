"""The debugger: breakpoints, steps, pause, queue edits; the same across runtimes."""

from __future__ import annotations

import copy
import os
import signal
from typing import Any

import pytest

from fifoflow.runner import FlowStateError, open_runner
from fifoflow.runner.conditions import Condition, ConditionError

from .helpers import Collector, make_flow, next_event

A = "def handle(msg, ctx):\n    return {'n': msg['n'] + 1}\n"
B = {
    "node": "exports.handle = (msg) => ({ n: msg.n * 2 });\n",
    "python": "def handle(msg, ctx):\n    return {'n': msg['n'] * 2}\n",
}
C = (
    "def handle(msg, ctx):\n"
    "    if msg['n'] == 8:\n"
    "        raise ValueError('eight is too many')\n"
    "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
    "    return {'n': msg['n'], 'seen': ctx.state['seen']}\n"
)


def chain(b_runtime: str) -> dict[str, Any]:
    return {
        "id": "dbg",
        "modules": [
            {"id": "a", "runtime": "python", "code": A},
            {"id": "b", "runtime": b_runtime, "code": B[b_runtime]},
            {"id": "c", "runtime": "python", "code": C},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }


def idle(module: str, queued: list[Any]) -> dict[str, Any]:
    return {
        "inputStates": {"consumed": None, "queued": {"in": queued}},
        "outputStates": {},
        "errors": [],
        "edits": [],
    }


def handled(msg: Any, queued: list[Any], out: list[Any]) -> dict[str, Any]:
    return {
        "inputStates": {"consumed": {"port": "in", "msg": msg}, "queued": {"in": queued}},
        "outputStates": {"out": out},
        "errors": [],
        "edits": [],
    }


async def _start(runner: Any, doc: dict[str, Any]) -> Collector:
    await runner.add_or_update_flow(make_flow(doc))
    sink = Collector()
    runner.set_output_sink(doc["id"], sink)
    await runner.start_flow(doc["id"])
    return sink


@pytest.mark.parametrize("b_runtime", ["node", "python"])
async def test_breakpoint_then_steps_then_continue(b_runtime: str) -> None:
    """The same answers whether b is in another runtime (node) or in a's and c's (python)."""
    async with open_runner() as runner:
        sink = await _start(runner, chain(b_runtime))
        sub = runner.subscribe(flows=["dbg"], kinds=["paused"])
        bp = await runner.set_breakpoint_at_module("dbg/b")
        assert bp == {"module": "b", "condition": None, "hits": 0}
        await runner.inject("dbg", "a", "in", [{"n": 1}, {"n": 2}, {"n": 3}])
        event = await next_event(sub, "paused")
        assert (event["module"], event["port"], event["msg"]) == ("b", "in", {"n": 2})
        assert runner.queues("dbg") == {
            "a": [],
            "b": [{"index": i, "port": "in", "msg": {"n": n}} for i, n in enumerate((2, 3, 4))],
            "c": [],
        }
        assert sink.items == []

        step = await runner.single_step_flow("dbg")
        assert step == {
            "dbg/a": idle("a", []),
            "dbg/b": handled({"n": 2}, [{"n": 3}, {"n": 4}], [{"n": 4}]),
            "dbg/c": idle("c", [{"n": 4}]),
        }
        step = await runner.single_step_flow()  # the seed's form: the one paused flow
        assert step == {
            "dbg/a": idle("a", []),
            "dbg/b": handled({"n": 3}, [{"n": 4}], [{"n": 6}]),
            "dbg/c": handled({"n": 4}, [{"n": 6}], [{"n": 4, "seen": 1}]),
        }
        step = await runner.single_step_flow("dbg")
        assert step["dbg/b"] == handled({"n": 4}, [], [{"n": 8}])
        assert step["dbg/c"] == handled({"n": 6}, [{"n": 8}], [{"n": 6, "seen": 2}])
        step = await runner.single_step_flow("dbg")  # c raises on 8
        assert step["dbg/b"] == idle("b", [])
        [error] = step["dbg/c"]["errors"]
        assert error["msg"] == {"n": 8}
        assert error["error"]["type"] == "ValueError"
        assert step["dbg/c"]["inputStates"]["consumed"] == {"port": "in", "msg": {"n": 8}}
        assert step["dbg/c"]["outputStates"] == {}
        assert runner.module_state("dbg", "c") == {"seen": 2}

        assert await runner.remove_breakpoint_at_module("dbg/b") is True
        await runner.continue_flow("dbg")
        await runner.inject("dbg", "a", "in", [{"n": 10}])
        await sink.wait_for(3)
        await runner.wait_idle("dbg")
        assert sink.msgs() == [{"n": 4, "seen": 1}, {"n": 6, "seen": 2}, {"n": 22, "seen": 3}]
        assert runner.flow("dbg").external_routing is False  # the fast wiring is back


async def test_conditional_breakpoint_skips_what_does_not_match() -> None:
    async with open_runner() as runner:
        sink = await _start(runner, chain("node"))
        sub = runner.subscribe(flows=["dbg"], kinds=["paused"])
        await runner.set_breakpoint_at_module("dbg/b", "msg.n == 3")
        await runner.inject("dbg", "a", "in", [{"n": 1}, {"n": 2}, {"n": 3}])
        event = await next_event(sub, "paused")
        assert event["msg"] == {"n": 3}
        await runner.pause_flow("dbg")  # already paused: returns once nothing is in flight
        # {n: 2} passed the breakpoint; its result waits for c, as the whole flow is paused
        assert [q["msg"] for q in runner.queues("dbg")["b"]] == [{"n": 3}, {"n": 4}]
        assert [q["msg"] for q in runner.queues("dbg")["c"]] == [{"n": 4}]
        assert sink.items == []
        await runner.continue_flow("dbg")
        await sink.wait_for(2)
        await runner.wait_idle("dbg")
        # {n: 4} does not match: no second pause; 8 raised in c as designed.
        assert sink.msgs() == [{"n": 4, "seen": 1}, {"n": 6, "seen": 2}]
        assert runner.debug_state("dbg")["paused"] is False
        assert runner.debug_state("dbg")["breakpoints"] == [
            {"module": "b", "condition": "msg.n == 3", "hits": 1}
        ]


async def test_pause_edit_drop_then_step_reports_the_edits() -> None:
    async with open_runner() as runner:
        sink = await _start(runner, chain("python"))
        await runner.pause_flow("dbg")
        await runner.inject("dbg", "a", "in", [{"n": 1}, {"n": 2}, {"n": 3}])
        assert [q["msg"] for q in runner.queues("dbg")["a"]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert await runner.edit_queued_message("dbg", "a", 1, {"n": 20}) == {"n": 2}
        assert await runner.edit_queued_message("dbg", "a", 2, None) == {"n": 3}
        step = await runner.single_step_flow("dbg")
        assert step["dbg/a"]["inputStates"] == {
            "consumed": {"port": "in", "msg": {"n": 1}},
            "queued": {"in": [{"n": 20}]},
        }
        assert step["dbg/a"]["edits"] == [
            {"action": "edit", "index": 1, "old": {"n": 2}, "new": {"n": 20}},
            {"action": "drop", "index": 2, "old": {"n": 3}},
        ]
        with pytest.raises(Exception, match="no waiting message #5"):
            await runner.edit_queued_message("dbg", "a", 5, None)
        await runner.continue_flow("dbg")
        await sink.wait_for(2)
        await runner.wait_idle("dbg")
        assert sink.msgs() == [{"n": 4, "seen": 1}, {"n": 42, "seen": 2}]
        with pytest.raises(FlowStateError, match="pause it before editing"):
            await runner.edit_queued_message("dbg", "a", 0, None)


async def test_hot_swap_of_a_paused_flow_then_step() -> None:
    async with open_runner() as runner:
        await _start(runner, chain("node"))
        await runner.pause_flow("dbg")
        await runner.inject("dbg", "a", "in", [{"n": 1}])
        new = copy.deepcopy(chain("node"))
        new["modules"][0]["code"] = "def handle(msg, ctx):\n    return {'n': msg['n'] + 100}\n"
        await runner.apply_flow(make_flow(new))
        assert runner.debug_state("dbg")["paused"] is True
        step = await runner.single_step_flow("dbg")
        assert step["dbg/a"]["outputStates"] == {"out": [{"n": 101}]}
        assert step["dbg/b"]["inputStates"]["queued"] == {"in": [{"n": 101}]}


async def test_a_runtime_restart_while_paused_keeps_the_pause() -> None:
    async with open_runner() as runner:
        sink = await _start(runner, chain("node"))
        sub = runner.subscribe(flows=["dbg"], kinds=["paused", "runtime"])
        await runner.set_breakpoint_at_module("dbg/c")
        await runner.inject("dbg", "a", "in", [{"n": 1}, {"n": 2}])
        await next_event(sub, "paused")
        node = runner.flow("dbg").instances["node"]
        os.kill(node.process.pid, signal.SIGKILL)
        await next_event(sub, "runtime", event="restart")
        await next_event(sub, "runtime", event="ready")
        assert runner.debug_state("dbg")["paused"] is True
        assert [q["msg"] for q in runner.queues("dbg")["c"]] == [{"n": 4}, {"n": 6}]
        assert sink.items == []
        step = await runner.single_step_flow("dbg")
        assert step["dbg/c"]["outputStates"] == {"out": [{"n": 4, "seen": 1}]}
        await runner.remove_breakpoint_at_module("dbg/c")
        await runner.continue_flow("dbg")
        await sink.wait_for(2)
        assert sink.msgs() == [{"n": 4, "seen": 1}, {"n": 6, "seen": 2}]


async def test_debugger_refuses_what_does_not_fit() -> None:
    async with open_runner() as runner:
        await _start(runner, chain("node"))
        with pytest.raises(FlowStateError, match="not paused"):
            await runner.single_step_flow("dbg")
        with pytest.raises(FlowStateError, match="exactly one paused flow; paused: none"):
            await runner.single_step_flow()
        with pytest.raises(FlowStateError, match="not paused"):
            await runner.continue_flow("dbg")
        with pytest.raises(ConditionError, match="expected one of"):
            await runner.set_breakpoint_at_module("dbg/b", "msg.n = 3")
        assert await runner.remove_breakpoint_at_module("dbg/b") is False


@pytest.mark.parametrize(
    ("text", "msg", "port", "expected"),
    [
        ("msg.n == 3", {"n": 3}, "in", True),
        ("msg.n == 3", {"n": 4}, "in", False),
        ("msg.n >= 3", {"n": 4}, "in", True),
        ("msg.n < 3", {"n": "x"}, "in", False),
        ('msg.user["first name"] != "Ada"', {"user": {"first name": "Bob"}}, "in", True),
        ("msg.items[1].price > 9.5", {"items": [{}, {"price": 10}]}, "in", True),
        ("msg.missing.deep == null", {"n": 1}, "in", False),
        ('port == "left"', 1, "left", True),
        ("msg == [1, 2]", [1, 2], "in", True),
    ],
)
def test_conditions(text: str, msg: Any, port: str, expected: bool) -> None:
    assert Condition.parse(text).matches(msg, port) is expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("n == 3", "expected 'msg' or 'port'"),
        ("msg.n 3", "expected one of"),
        ("msg.n ==", "expected a JSON value"),
        ("msg.n == three", "not JSON"),
        ("msg[abc] == 1", "integer or a quoted string"),
        ("__import__('os') == 1", "expected 'msg' or 'port'"),
    ],
)
def test_bad_conditions_say_why(text: str, why: str) -> None:
    with pytest.raises(ConditionError, match=why):
        Condition.parse(text)
