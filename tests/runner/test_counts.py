"""Wires inside one host are counted (PROTOCOL.md section 12, ``counts``): the hosts
report in ``done`` what they delivered inside themselves; flow statistics and a run's
``handled`` include it. Real runner, real python / node / exec hosts."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

from fifoflow.runner import open_runner
from fifoflow.runner.runs.model import RunState

from .helpers import broken_runtime, start
from .runs.helpers_exec import Reporter, executor, offer

if TYPE_CHECKING:
    from pathlib import Path

RELAY = [
    sys.executable,
    "-u",
    "-c",
    "import sys\nfor line in sys.stdin:\n    print(line.strip(), flush=True)\n",
]
PY = "def handle(msg, ctx):\n    return msg\n"
NODE = "exports.handle = (msg) => msg;\n"
# two modules per host: a -> b (python), c -> d (node), e -> f (exec)
SIX = {
    "id": "six",
    "modules": [
        {"id": "a", "runtime": "python", "code": PY},
        {"id": "b", "runtime": "python", "code": PY},
        {"id": "c", "runtime": "node", "code": NODE},
        {"id": "d", "runtime": "node", "code": NODE},
        {"id": "e", "runtime": "exec", "command": RELAY},
        {"id": "f", "runtime": "exec", "command": RELAY},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in", "c.out -> d.in", "d.out -> e.in", "e.out -> f.in"],
}
IN_HOST = {"a.out->b.in", "c.out->d.in", "e.out->f.in"}


async def test_wires_inside_a_host_are_counted_in_the_flow_statistics() -> None:
    n = 300
    async with open_runner() as runner:
        sink = await start(runner, {"fifoflow": 1, **SIX})
        flow = runner.flow("six")
        for instance in flow.instances.values():
            assert "counts" in instance.process.hello["features"]
        before = {w["wire"]: w for w in flow.stats()["wires"]}
        # known before anything went: 0, not "unknown"
        assert {w: before[w]["messages"] for w in IN_HOST} == dict.fromkeys(IN_HOST, 0)
        for i in range(0, n, 50):
            await runner.inject("six", "a", "in", list(range(i, i + 50)))
        await sink.wait_for(n)
        with trio.fail_after(20):
            await runner.wait_idle("six")
        assert sink.msgs("f.out") == list(range(n))
        wires = {w["wire"]: w for w in flow.stats()["wires"]}
        for name, w in wires.items():
            assert w["messages"] == n, (name, w)
            if name in IN_HOST:
                assert (w["via"], w["host"], w["direct"], w["runner"]) == ("host", n, None, None)
            else:
                assert (w["via"], w["host"]) == ("runner", None), (name, w)


async def test_a_run_counts_what_each_module_handled_inside_its_host() -> None:
    rep = Reporter()
    async with executor(reporter=rep) as ex:
        o = offer(SIX, [1, 2, 3, 4])
        await ex.start(o)
        r = await rep.wait_result(o)
    assert r.state is RunState.SUCCEEDED, r
    assert [x["msg"] for x in r.outputs] == [1, 2, 3, 4]
    assert r.handled == dict.fromkeys("abcdef", 4)


async def test_a_done_with_bad_counts_is_reported_and_loses_nothing(tmp_path: Path) -> None:
    runtimes = broken_runtime(tmp_path, "counts-bad")
    doc = {
        "fifoflow": 1,
        "id": "badcounts",
        "modules": [
            {"id": "a", "runtime": "broken-counts-bad", "code": "echo"},
            {"id": "b", "runtime": "python", "code": PY},
        ],
        "wires": ["a.out -> b.in"],
    }
    async with open_runner(runtimes=runtimes) as runner:
        sink = await start(runner, doc, runtimes)
        await runner.inject("badcounts", "a", "in", ["x", "y"])
        await runner.inject("badcounts", "a", "in", ["z"])
        with trio.fail_after(20):
            await runner.wait_idle("badcounts")
        assert sink.msgs("b.out") == ["x", "y", "z"]
        flow = runner.flow("badcounts")
        instance = flow.instances["broken-counts-bad"]
        assert instance.restarts == 0  # a bad count costs the counts, not the host
        [*_, line] = [x for x in instance.logs if "a done's local must be" in x["text"]]
        assert "counts left out" in line["text"]
        assert line["level"] == "error"
