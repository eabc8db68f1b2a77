"""Routing without parsing payloads (PROTOCOL.md section 10, the ``raw`` feature): the
framing of a raw emit, deliveries that carry body bytes, and real hosts moving messages
through the runner as bytes; plain protocol 1 hosts served beside them."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
import trio

from fifoflow.flows.values import shallow
from fifoflow.runner import open_runner
from fifoflow.runner.errors import ProtocolError
from fifoflow.runner.framing import parse_messages, split_emit
from fifoflow.runner.queues import Delivery, DeliveryQueues

from .helpers import broken_runtime, next_event, start

#: messages that would confuse a runner that looked for the body the wrong way
TRICKY = ['x,"msgs":[1]}', {"msgs": [{"n": 2}], "op": "emit"}, "\u2028 é \\", [], 2.5, "]]}{["]


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------------- framing


def test_split_emit_parses_the_header_only() -> None:
    body = orjson.dumps(TRICKY)
    line = b'{"op":"emit","module":"f/a","port":"out","n":6,"msgs":' + body + b"}"
    assert split_emit(line) == ("f/a", "out", 6, body)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"op":"emit","msgs":[1],"module":"f/a","port":"out","n":1}', "msgs must be the last"),
        (b'{"op":"emit","module":"f/a","port":"out","msgs":[1]}', "'n' is not a count"),
        (b'{"op":"emit","module":"f/a","port":"out","n":true,"msgs":[1]}', "'n' is not a count"),
        (b'{"op":"emit","module":"f/a","port":"out","n":1,"msgs":{"a":1}}', "not an array"),
        (b'{"op":"emit","module":"f/a","port":"out","n":0,"msgs":[1]}', "not an array of n"),
        (b'{"op":"emit","module":"f/a","port":"out","n":1}', "without a last 'msgs'"),
        (b'{"op":"emit","module":"f/a",,"port":"out","n":1,"msgs":[1]}', "header is not JSON"),
    ],
)
def test_split_emit_refuses_a_frame_that_breaks_the_raw_rules(line: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        split_emit(line)


def test_parse_messages_screens_what_no_later_stage_could_encode() -> None:
    msgs, taken = parse_messages(orjson.dumps([1, {"a": "b"}]), "out")
    assert (msgs, taken) == ([1, {"a": "b"}], [])
    msgs, taken = parse_messages(orjson.dumps([1, _nested(150), 3]), "out")
    assert msgs == [1, 3]
    assert len(taken) == 1
    assert "message 1 on port 'out' was dropped" in taken[0]
    with pytest.raises(ProtocolError, match="not JSON"):
        parse_messages(b"[1,", "out")


def test_shallow_measures_nesting_without_parsing() -> None:
    many = orjson.dumps([{"n": 1, "p": "x[[[{"}] * 1000)  # thousands of brackets, depth 2
    assert shallow(many)
    assert shallow(orjson.dumps([_nested(99)] * 300))  # 100 levels: the limit
    assert not shallow(orjson.dumps([_nested(100)] * 300))
    # brackets inside strings cannot hide nesting, escaped quotes included
    assert not shallow(b'["]]]]", ' + orjson.dumps(_nested(150))[1:])
    assert not shallow(b'["\\"]]]]", ' + orjson.dumps(_nested(150))[1:])
    assert shallow(orjson.dumps(['"[[[[\\', {"a": "}}}"}] * 300))
    assert not shallow(b"[" * 300)  # not JSON: walk it


# ---------------------------------------------------------------------- deliveries


def test_a_delivery_keeps_its_body_bytes_and_parses_only_on_demand() -> None:
    body = orjson.dumps(TRICKY)
    d = Delivery("f/b", "in", body=body, count=len(TRICKY))
    d.seq = 7
    frame = d.encode()
    assert body in frame  # the bytes the emitting host wrote, unchanged
    assert orjson.loads(frame) == {
        "op": "deliver",
        "seq": 7,
        "module": "f/b",
        "port": "in",
        "msgs": TRICKY,
    }
    assert not d.parsed
    assert d.messages() == TRICKY
    assert d.parsed
    assert d.body == body
    d.msgs = ["edited"]  # an edit makes the list the truth
    assert (d.body, d.count, orjson.loads(d.encode())["msgs"]) == (None, 1, ["edited"])


def test_queues_count_raw_bodies_without_parsing_them() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", None, body=b"[1,2,3]", count=3)
    q.enqueue("f/a", "in", [4])
    assert q.depth("f/a") == 4
    frames = q.take()
    assert [orjson.loads(f)["msgs"] for f in frames] == [[1, 2, 3], [4]]
    assert q.statistics().unacknowledged == 4
    assert q.requeue_unacked() == 2
    assert q.depth("f/a") == 4
    # a debugger step cuts the raw delivery: it is parsed then, and the count follows
    one = q.pop_one("f/a")
    assert one is not None
    assert one.msgs == [1]
    assert [d.msgs for d in q.queued("f/a")] == [[2, 3], [4]]
    assert q.depth("f/a") == 3


def test_a_broken_body_counts_right_and_says_so() -> None:
    d = Delivery("f/a", "in", body=b"[1,", count=2)
    assert len(d.messages()) == 2
    assert "unreadable" in d.messages()[0]


# ---------------------------------------------------------------------- real hosts


async def test_messages_cross_python_node_exec_as_bytes_unchanged() -> None:
    relay = [
        sys.executable,
        "-u",
        "-c",
        "import sys\nfor line in sys.stdin:\n    print(line.strip(), flush=True)\n",
    ]
    doc = {
        "id": "raw",
        "modules": [
            {
                "id": "a",
                "runtime": "python",
                "code": "def handle(msg, ctx):\n    ctx.emit('side', msg)\n    return msg\n",
                "outputs": ["out", "side"],
            },
            {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => msg;\n"},
            {"id": "c", "runtime": "exec", "command": relay},
            {"id": "d", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in", "c.out -> d.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        flow = runner.flow("raw")
        for instance in flow.instances.values():
            assert "raw" in instance.process.hello["features"]
        await runner.inject("raw", "a", "in", TRICKY * 50)
        await runner.wait_idle("raw")
        assert sink.msgs("d.out") == TRICKY * 50
        assert sink.msgs("a.side") == TRICKY * 50  # an exit: parsed there
        stats = flow.stats()
        wires = {w["wire"]: w["messages"] for w in stats["wires"]}
        assert wires["a.out->b.in"] == len(TRICKY) * 50
        assert flow.instances["node"].queues.statistics().delivered == len(TRICKY) * 50


async def test_a_too_deep_message_reaching_an_exit_is_an_error_of_its_module() -> None:
    deep = "exports.handle = (msg) => { let v = 1; for (let i = 0; i < msg; i++) v = [v]; return v; };\n"
    doc = {
        "id": "deep",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
            {"id": "b", "runtime": "node", "code": deep},
        ],
        "wires": ["a.out -> b.in"],
    }
    async with open_runner() as runner:
        sink = await start(runner, doc)
        await runner.inject("deep", "a", "in", [2, 150, 3])
        await runner.wait_idle("deep")
        assert sink.msgs("b.out") == [[[1]], [[[1]]]]
        errors = runner.module_errors("deep", "b")
        assert [e["error"]["type"] for e in errors] == ["InvalidValue"]
        assert "nested deeper" in errors[0]["error"]["message"]


async def test_a_plain_protocol_1_host_is_served_beside_raw_ones(tmp_path: Path) -> None:
    # broken_host.py with an unknown breakage is a correct plain protocol 1 echo host
    runtimes = broken_runtime(tmp_path, "none")
    doc = {
        "fifoflow": 1,
        "id": "mixed",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
            {"id": "b", "runtime": "broken-none", "code": "echo"},
            {"id": "c", "runtime": "node", "code": "exports.handle = (msg) => msg;\n"},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }
    async with open_runner(runtimes=runtimes) as runner:
        sink = await start(runner, doc, runtimes)
        assert "raw" not in runner.flow("mixed").instances["broken-none"].process.hello["features"]
        await runner.inject("mixed", "a", "in", TRICKY)
        with trio.fail_after(20):
            await runner.wait_idle("mixed")
        assert sink.msgs() == TRICKY


async def test_a_raw_host_that_breaks_the_rule_is_restarted_as_broken(tmp_path: Path) -> None:
    runtimes = broken_runtime(tmp_path, "raw-msgs-first")
    doc = {
        "fifoflow": 1,
        "id": "liar",
        "modules": [{"id": "b", "runtime": "broken-raw-msgs-first", "code": "echo"}],
        "wires": [],
    }
    async with open_runner(runtimes=runtimes) as runner:
        await start(runner, doc, runtimes)
        instance = runner.flow("liar").instances["broken-raw-msgs-first"]
        sub = runner.subscribe(flows=["liar"], kinds=["runtime"])
        await runner.inject("liar", "b", "in", [1])
        await next_event(sub, "runtime", event="restart")
        assert "msgs must be the last field" in (instance.last_error or "")
        assert any("msgs must be the last field" in e["text"] for e in instance.logs)


@pytest.mark.parametrize("receiver", ["python", "node"])
async def test_a_body_that_is_not_json_is_dropped_with_an_error_not_redelivered_forever(
    tmp_path: Path, receiver: str
) -> None:
    """A raw host that writes a body that is not JSON: the runner routes it unparsed, the
    receiving host cannot read the deliver and ends. Before it is started again, the
    runner reads the bodies it would deliver again: the broken one is dropped with an
    error of its module (no crash loop), every other message arrives."""
    runtimes = broken_runtime(tmp_path, "raw-bad-body")
    echo = (
        "def handle(msg, ctx):\n    return msg\n"
        if receiver == "python"
        else "exports.handle = (msg) => msg;\n"
    )
    doc = {
        "fifoflow": 1,
        "id": "bad",
        "modules": [
            {"id": "a", "runtime": "broken-raw-bad-body", "code": "echo"},
            {"id": "b", "runtime": receiver, "code": echo},
        ],
        "wires": ["a.out -> b.in"],
    }
    async with open_runner(runtimes=runtimes) as runner:
        sink = await start(runner, doc, runtimes)
        sub = runner.subscribe(flows=["bad"], kinds=["runtime"])
        for msg in ("x", "poison", "y"):
            await runner.inject("bad", "a", "in", [msg])
        with trio.fail_after(20):
            await runner.wait_idle("bad")
        await next_event(sub, "runtime", event="ready")
        for msg in ("z",):
            await runner.inject("bad", "a", "in", [msg])
        with trio.fail_after(20):
            await runner.wait_idle("bad")
        assert sorted(sink.msgs()) == ["x", "y", "z"]
        [error] = runner.module_errors("bad", "b")
        assert error["error"]["type"] == "InvalidMessage"
        assert "not JSON" in error["error"]["message"]
        assert runner.flow("bad").instances[receiver].restarts == 1
        assert runner.flow("bad").status.value == "running"
