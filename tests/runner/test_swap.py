"""Hot swap under load: code, config and runtime of a running module change, and every
message still arrives exactly once, in order, with the modules' state intact."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import trio

from fifoflow.runner import RunnerConfig, SwapRejected, open_runner

from .helpers import Collector, make_flow

PY_FIRST = """\
def handle(msg, ctx):
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    return {"i": msg["i"]}
"""
PY_LAST = """\
def handle(msg, ctx):
    ctx.state["seen"] = ctx.state.get("seen", 0) + 1
    return {**msg, "seen": ctx.state["seen"]}
"""


def middle(version: int, runtime: str = "node", tag: str = "v") -> dict[str, Any]:
    """The middle module: counts in its state and tags each message with its version."""
    if runtime == "node":
        code = (
            "exports.handle = (msg, ctx) => {\n"
            "  ctx.state.n = (ctx.state.n || 0) + 1;\n"
            f"  return {{ ...msg, {tag}: {version}, mid: ctx.state.n, k: ctx.config.k }};\n"
            "};\n"
        )
    else:
        code = (
            "def handle(msg, ctx):\n"
            "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
            f"    return {{**msg, '{tag}': {version}, 'mid': ctx.state['n'], 'k': ctx.config.get('k')}}\n"
        )
    return {"id": "mid", "runtime": runtime, "code": code, "config": {"k": 0}}


def chain(mid: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "swap",
        "modules": [
            {"id": "first", "runtime": "python", "code": PY_FIRST},
            mid,
            {"id": "last", "runtime": "python", "code": PY_LAST},
        ],
        "wires": ["first.out -> mid.in", "mid.out -> last.in"],
    }


async def _produce(runner: Any, total: int, rate: float, done: trio.Event) -> None:
    """Inject ``total`` numbered messages at about ``rate`` msg/s (pacing, not syncing)."""
    batch = 50
    interval = batch / rate
    i = 0
    next_at = trio.current_time()
    while i < total:
        n = min(batch, total - i)
        await runner.inject("swap", "first", "in", [{"i": j} for j in range(i, i + n)])
        i += n
        next_at += interval
        await trio.sleep_until(next_at)
    done.set()


async def _swap_storm(
    versions: list[dict[str, Any]], total: int = 30_000
) -> tuple[list[Any], list[dict[str, Any]]]:
    reports = []
    async with open_runner() as runner:
        await runner.add_or_update_flow(make_flow(chain(versions[0])))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        produced = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, runner, total, 6000.0, produced)
            for doc in versions[1:]:
                result = await runner.apply_flow(make_flow(chain(doc)))
                assert result.report is not None
                reports.append(result.report)
            await produced.wait()
        await sink.wait_for(total, seconds=60)
        await runner.wait_idle("swap")
        state = runner.module_state("swap", "mid")
        assert state == {"n": total}, "the middle module's counter has a gap or a double"
    return sink.msgs(), reports


def _check_exactly_once_in_order(msgs: list[Any], total: int) -> None:
    assert [m["i"] for m in msgs] == list(range(total))
    assert [m["seen"] for m in msgs] == list(range(1, total + 1))
    assert [m["mid"] for m in msgs] == list(range(1, total + 1))


async def test_100_code_swaps_under_load() -> None:
    versions = [middle(v) for v in range(101)]
    msgs, reports = await _swap_storm(versions)
    _check_exactly_once_in_order(msgs, 30_000)
    seen_versions = [m["v"] for m in msgs]
    assert seen_versions == sorted(seen_versions), (
        "a message was handled by an older code after a newer one"
    )
    assert seen_versions[-1] == 100
    assert all(r["changes"]["codeChanged"] == ["mid"] for r in reports)


async def test_100_config_swaps_under_load() -> None:
    versions = []
    for k in range(101):
        doc = middle(0)
        doc["config"] = {"k": k}
        versions.append(doc)
    msgs, reports = await _swap_storm(versions)
    _check_exactly_once_in_order(msgs, 30_000)
    ks = [m["k"] for m in msgs]
    assert ks == sorted(ks)
    assert ks[-1] == 100
    assert all(r["changes"]["configChanged"] == ["mid"] for r in reports)


async def test_100_runtime_swaps_under_load_take_state_and_pending_messages_along() -> None:
    versions = [middle(v, "node" if v % 2 == 0 else "python") for v in range(101)]
    msgs, reports = await _swap_storm(versions)
    _check_exactly_once_in_order(msgs, 30_000)
    assert [r["changes"]["moved"][0]["to"] for r in reports[:2]] == ["python", "node"]
    vs = [m["v"] for m in msgs]
    assert vs == sorted(vs)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def handle(msg, ctx)\n    return 1\n", "SyntaxError"),
        ("def other(msg, ctx):\n    return 1\n", "no handle"),
        (
            "def init(ctx):\n    raise RuntimeError('init failed')\ndef handle(m, c):\n    return m\n",
            "init failed",
        ),
    ],
)
async def test_new_code_that_does_not_load_leaves_the_old_running(code: str, expected: str) -> None:
    doc = chain(middle(1, "python"))
    async with open_runner() as runner:
        await runner.add_or_update_flow(make_flow(doc))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        await runner.inject("swap", "first", "in", [{"i": 0}])
        await sink.wait_for(1)
        broken = copy.deepcopy(doc)
        broken["modules"][1]["code"] = code
        # an added module that loads fine must be undone too
        broken["modules"].append(
            {"id": "extra", "runtime": "node", "code": "exports.handle = (m) => m;\n"}
        )
        with pytest.raises(SwapRejected, match=expected) as info:
            await runner.apply_flow(make_flow(broken))
        assert info.value.module == "mid"
        assert runner.flow("swap").revision == 1
        assert [m.id for m in runner.flow("swap").flow.modules] == ["first", "mid", "last"]
        await runner.inject("swap", "first", "in", [{"i": 1}])
        await sink.wait_for(2)
        assert sink.msgs()[1] == {"i": 1, "v": 1, "mid": 2, "k": 0, "seen": 2}
        assert "node" not in runner.flow("swap").instances


async def test_migrate_runs_once_and_state_follows() -> None:
    doc = chain(middle(1, "python"))
    async with open_runner() as runner:
        await runner.add_or_update_flow(make_flow(doc))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        await runner.inject("swap", "first", "in", [{"i": 0}, {"i": 1}])
        await sink.wait_for(2)
        new = copy.deepcopy(doc)
        new["modules"][1]["code"] = (
            "def migrate(old, ctx):\n"
            "    return {'count': old['n'] * 10, 'migrations': old.get('migrations', 0) + 1}\n"
            "def handle(msg, ctx):\n"
            "    ctx.state['count'] += 1\n"
            "    return {**msg, 'count': ctx.state['count'], 'migrations': ctx.state['migrations']}\n"
        )
        await runner.apply_flow(make_flow(new))
        assert runner.module_state("swap", "mid") == {"count": 20, "migrations": 1}
        await runner.inject("swap", "first", "in", [{"i": 2}])
        await sink.wait_for(3)
        assert sink.msgs()[2] == {"i": 2, "count": 21, "migrations": 1, "seen": 3}


async def test_rewiring_adding_and_removing_modules() -> None:
    slow = "import time\ndef handle(msg, ctx):\n    time.sleep(0.002)\n    return msg\n"
    doc = {
        "id": "swap",
        "modules": [
            {"id": "first", "runtime": "python", "code": PY_FIRST},
            {"id": "slow", "runtime": "node", "code": "exports.handle = (m) => m;\n"},
        ],
        "wires": ["first.out -> slow.in"],
    }
    async with open_runner(RunnerConfig(window=10)) as runner:
        await runner.add_or_update_flow(make_flow(doc))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        # Add a module and a wire: messages now also reach "tap".
        tapped = copy.deepcopy(doc)
        tapped["modules"].append({"id": "tap", "runtime": "python", "code": slow})
        tapped["wires"].append("first.out -> tap.in")
        report = (await runner.apply_flow(make_flow(tapped))).report
        assert report is not None
        assert report["changes"]["added"] == ["tap"]
        assert report["changes"]["wiresAdded"] == ["first.out -> tap.in"]
        await runner.inject("swap", "first", "in", [{"i": i} for i in range(300)])
        # Remove the slow tap while it still has work queued: what it had not handled is
        # in the report, and what it handled reached the exit. Nothing disappears.
        report = (await runner.apply_flow(make_flow(doc))).report
        assert report is not None
        assert report["changes"]["removed"] == ["tap"]
        dropped = [m["i"] for entry in report["dropped"].get("tap", []) for m in entry["msgs"]]
        await runner.wait_idle("swap")
        from_tap = [m["i"] for m in sink.msgs("tap.out")]
        assert sorted(from_tap + dropped) == list(range(300))
        assert [m["i"] for m in sink.msgs("slow.out")] == list(range(300))
        assert "tap" not in [m.id for m in runner.flow("swap").flow.modules]


async def test_a_refused_update_undoes_what_it_had_already_loaded() -> None:
    doc = chain(middle(1, "python"))
    async with open_runner() as runner:
        await runner.add_or_update_flow(make_flow(doc))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        await runner.inject("swap", "first", "in", [{"i": 0}, {"i": 1}])
        await sink.wait_for(2)
        new = copy.deepcopy(doc)
        # mid gets new code (it loads, and its migrate changes the state) ...
        new["modules"][1]["code"] = (
            "def migrate(old, ctx):\n"
            "    return {'n': 1000}\n"
            "def handle(msg, ctx):\n"
            "    return {**msg, 'v': 2}\n"
        )
        # ... but last's new code raises in init: the whole update is refused.
        new["modules"][2]["code"] = (
            "def init(ctx):\n    raise KeyError('nope')\ndef handle(m, c):\n    return m\n"
        )
        with pytest.raises(SwapRejected, match="KeyError") as info:
            await runner.apply_flow(make_flow(new))
        assert info.value.module == "last"
        assert runner.module_state("swap", "mid") == {"n": 2}
        await runner.inject("swap", "first", "in", [{"i": 2}])
        await sink.wait_for(3)
        assert sink.msgs()[2] == {"i": 2, "v": 1, "mid": 3, "k": 0, "seen": 3}


async def test_rewiring_storm_under_load_loses_nothing() -> None:
    """50 swaps that add and remove a module and its wire (the pause-and-drain path) while
    5,000+ msg/s flow: the main path gets every message once, in order; the tap's messages
    are either handled or returned in a report."""
    base = chain(middle(0, "node"))
    tapped = copy.deepcopy(base)
    tapped["modules"].append(
        {"id": "tap", "runtime": "node", "code": "exports.handle = (m) => ({ tapped: m.i });\n"}
    )
    tapped["wires"].append("first.out -> tap.in")
    total = 20_000
    async with open_runner() as runner:
        await runner.add_or_update_flow(make_flow(base))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        produced = trio.Event()
        dropped: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, runner, total, 6000.0, produced)
            for n in range(50):
                report = (await runner.apply_flow(make_flow(tapped if n % 2 == 0 else base))).report
                assert report is not None
                dropped += [m["i"] for e in report["dropped"].get("tap", []) for m in e["msgs"]]
            await produced.wait()
        await sink.wait_for(total, seconds=60)
        await runner.wait_idle("swap")
        _check_exactly_once_in_order(sink.msgs("last.out"), total)
        tapped_ids = [m["tapped"] for m in sink.msgs("tap.out")]
        assert len(tapped_ids) == len(set(tapped_ids)), "a tapped message was handled twice"
        assert not set(tapped_ids) & set(dropped), "a message was both handled and reported dropped"


SLOW_NODE_MID = {
    "id": "mid",
    "runtime": "node",
    "code": (
        "exports.handle = (msg, ctx) => {\n"
        "  const until = Date.now() + 2;\n"
        "  while (Date.now() < until) {}\n"  # 2 ms a message: its queue in the runner grows
        "  ctx.state.n = (ctx.state.n || 0) + 1;\n"
        "  return { ...msg, v: 0, mid: ctx.state.n, k: 0 };\n"
        "};\n"
    ),
    "config": {"k": 0},
}


@pytest.mark.parametrize("direct", [False, True])
async def test_a_module_moved_into_its_sources_host_gets_its_older_messages_first(
    direct: bool,
) -> None:
    # mid (node, slow) has hundreds of messages queued in the runner when it moves into
    # the python host of first: first -> mid becomes a wire inside that host. What first
    # emits from then on must not reach mid before the older messages the runner moved
    # along (nor those put back in the queues after a host ends): per-wire order.
    # (with direct channels the slow module's host holds what it read of its channel,
    # and the runner the copies: what is moved along then depends on the timing)
    async with open_runner(RunnerConfig(window=50, direct=direct)) as runner:
        await runner.add_or_update_flow(make_flow(chain(SLOW_NODE_MID)))
        sink = Collector()
        runner.set_output_sink("swap", sink)
        await runner.start_flow("swap")
        flow = runner.flow("swap")
        for i in range(0, 1000, 10):  # small batches: frames the window of 50 can hold
            await runner.inject("swap", "first", "in", [{"i": j} for j in range(i, i + 10)])
        await sink.wait_for(20)  # by then first is far ahead of the slow mid
        if not direct:
            assert flow.instances["node"].queues.depth(flow.qualified("mid")) >= 300
        slow_python = middle(1, "python")  # slow too: what was moved along takes a while
        slow_python["code"] = "import time\n" + slow_python["code"].replace(
            "    ctx.state", "    time.sleep(0.002)\n    ctx.state", 1
        )
        result = await runner.apply_flow(make_flow(chain(slow_python)))
        if not direct:
            assert result.report["rehomed"] >= 300, result.report
        await runner.inject("swap", "first", "in", [{"i": i} for i in range(1000, 1500)])
        await sink.wait_for(1500, seconds=60)
        await runner.wait_idle("swap")
        msgs = sink.msgs()
        assert [m["i"] for m in msgs] == list(range(1500))
        assert [m["mid"] for m in msgs] == list(range(1, 1501))
        assert runner.module_state("swap", "mid") == {"n": 1500}
