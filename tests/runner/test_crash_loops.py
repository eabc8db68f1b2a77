"""Crash loops cost little and end: an exec module's child that exits at once, and a
runtime host that dies at start, are restarted with a backoff, their restarts counted
where the flow's statistics show them, and the flow fails with the reason at the limit."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import psutil
import trio

from fifoflow.flows import parse_flow
from fifoflow.runner import FlowStatus, RunnerConfig, open_runner
from fifoflow.runtimes.registry import discover

from .helpers import RUNTIMES, next_event, start

PY_ID = "def handle(msg, ctx):\n    return msg\n"


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


async def test_an_exec_child_that_exits_at_once_backs_off_is_counted_and_fails_the_flow() -> None:
    # Backoff 0, 0.1, 0.2, 0.4, then 0.5 s: the 8th exit comes ~2.5 s after the first.
    config = RunnerConfig(crash_limit=8, crash_period=30, restart_backoff_max=0.5)
    async with open_runner(config) as runner:
        sub = runner.subscribe(flows=["dies"], kinds=["runtime", "flow"])
        await start(
            runner,
            {
                "id": "dies",
                "modules": [{"id": "x", "runtime": "exec", "command": ["false"]}],
                "wires": [],
            },
        )
        run = runner.flow("dies")
        host = psutil.Process(run.instances[next(iter(run.instances))].process.pid)
        await next_event(sub, "runtime", event="child-restart", restarts=1)
        cpu0, t0 = _cpu(host), trio.current_time()
        await next_event(sub, "runtime", event="child-restart", restarts=6)
        cpu1, t1 = _cpu(host), trio.current_time()
        wall = t1 - t0
        assert wall > 1.0, "restarts 2 to 6 are backed off (0.1 + 0.2 + 0.4 + 0.5 + 0.5 s)"
        assert cpu1 - cpu0 < 0.25 * wall, (
            f"the host burnt {cpu1 - cpu0:.2f} s of CPU in {wall:.2f} s"
        )
        summary = runner.describe_flow("dies")
        assert summary["status"] == FlowStatus.RUNNING
        assert summary["restarts"] >= 6, "child restarts show in the flow's statistics"
        assert next(iter(summary["runtimes"].values()))["child_restarts"]["x"] >= 6
        event = await next_event(sub, "flow", status="failed")
        assert "module x of flow dies failed" in event["error"]
        assert "exited 8 times within 30 s" in event["error"]
        assert "exited with status 1" in event["error"]
        summary = runner.describe_flow("dies")
        assert summary["status"] == FlowStatus.FAILED
        assert summary["error"] == event["error"]
        assert summary["restarts"] == 7
        assert [e["error"]["type"] for e in run.errors["x"]] == ["CrashLoop"]


async def test_inputs_wait_for_the_backed_off_child_and_are_answered(tmp_path: Path) -> None:
    # A child that dies on each of its first two inputs, then answers: the inputs it died
    # on are errors, the next one waits out the backoff and is answered by a new child.
    script = (
        'read -r line; echo "$line" >> "$0"; [ "$(wc -l < "$0")" -le 2 ] && exit 1; '
        'echo "$line"; while read -r l; do echo "$l"; done'
    )
    count = tmp_path / "count"
    doc = {
        "id": "flaky",
        "modules": [{"id": "x", "runtime": "exec", "command": ["sh", "-c", script, str(count)]}],
        "wires": [],
    }
    async with open_runner(RunnerConfig(restart_backoff_max=0.3)) as runner:
        sink = await start(runner, doc)
        await runner.inject("flaky", "x", "in", [1, 2, 3])
        await sink.wait_for(1)
        await runner.wait_idle("flaky")
        assert sink.msgs() == [3]
        assert [e["error"]["type"] for e in runner.flow("flaky").errors["x"]] == ["ChildExited"] * 2
        summary = runner.describe_flow("flaky")
        assert (summary["restarts"], summary["status"]) == (2, FlowStatus.RUNNING)


async def test_a_runtime_host_that_dies_at_start_backs_off_is_counted_and_fails_the_flow(
    tmp_path: Path,
) -> None:
    # The python host, but one that exits at once whenever the marker file exists.
    marker = tmp_path / "die"
    runtime_dir = tmp_path / "python-dies"
    runtime_dir.mkdir()
    host = Path(RUNTIMES["python"].directory) / "host.py"
    script = f'test -e "{marker}" && exit 7; exec "{sys.executable}" -u "{host}" "$@"'
    (runtime_dir / "manifest.json").write_bytes(orjson.dumps({
        "id": "python-dies", "name": "python that dies at start", "version": "0", "protocol": 1,
        "command": ["sh", "-c", script, "sh"],
    }))  # fmt: skip
    runtimes = discover(tmp_path)
    config = RunnerConfig(crash_limit=6, crash_period=30, restart_backoff_max=0.5)
    async with open_runner(config, runtimes=runtimes) as runner:
        sub = runner.subscribe(flows=["dies"], kinds=["runtime", "flow"])
        doc = {
            "fifoflow": 1,
            "id": "dies",
            "modules": [{"id": "m", "runtime": "python-dies", "code": PY_ID}],
            "wires": [],
        }
        await runner.add_or_update_flow(parse_flow(doc, base_dir=None, runtimes=runtimes.keys()))
        await runner.start_flow("dies")
        marker.touch()
        run = runner.flow("dies")
        instance = next(iter(run.instances.values()))
        me = psutil.Process()
        cpu0, t0 = _cpu(me), trio.current_time()
        psutil.Process(instance.process.pid).kill()
        event = await next_event(sub, "flow", status="failed")
        cpu1, t1 = _cpu(me), trio.current_time()
        assert t1 - t0 > 1.0, "restarts are backed off (0, 0.1, 0.2, 0.4, 0.5 s)"
        assert cpu1 - cpu0 < 0.5 * (t1 - t0), "restarting costs little"
        assert "crashed 6 times" in event["error"]
        assert "status 7" in event["error"]
        summary = runner.describe_flow("dies")
        assert summary["status"] == FlowStatus.FAILED
        assert summary["restarts"] == 5
        assert next(iter(summary["runtimes"].values()))["restarts"] == 5
