"""A runner's state dir: flows, whether they run, and module state survive restarts."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import orjson
import pytest
import trio

from fifoflow.api.client import RunnerClient
from fifoflow.runner import FlowStore, RunnerConfig, StateDirInUse, open_runner
from fifoflow.runner.store import atomic_write

from ..runner.helpers import make_flow
from .helpers import CHAIN, ServerProcess, wait_event

if TYPE_CHECKING:
    from pathlib import Path


def test_store_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    store = FlowStore.open(tmp_path / "state")
    store.save_flow("a", {"fifoflow": 1, "id": "a", "modules": []}, revision=3, running=True)
    store.save_states("a", {"m": {"count": 7}})
    [stored], problems = store.load()
    assert problems == []
    assert (stored.flow_id, stored.revision, stored.running, stored.states) == (
        "a",
        3,
        True,
        {"m": {"count": 7}},
    )
    assert sorted(p.name for p in (tmp_path / "state" / "flows").iterdir()) == ["a.json"]
    assert oct((tmp_path / "state" / "flows" / "a.json").stat().st_mode & 0o777) == "0o600"
    atomic_write(tmp_path / "x", b"one")
    atomic_write(tmp_path / "x", b"two")
    assert (tmp_path / "x").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    store.remove("a")
    assert store.load() == ([], [])


def test_unreadable_files_are_set_aside_and_the_rest_loads(tmp_path: Path) -> None:
    store = FlowStore.open(tmp_path)
    store.save_flow("good", {"id": "good"}, revision=1, running=False)
    store.save_flow("other", {"id": "other"}, revision=1, running=False)
    (tmp_path / "flows" / "bad.json").write_bytes(b'{"revision": 1, "runn')
    (tmp_path / "states" / "other.json").write_bytes(b"[]")
    flows, problems = store.load()
    assert [f.flow_id for f in flows] == ["good", "other"]
    assert flows[1].states == {}
    assert len(problems) == 2
    assert "bad.json: unreadable" in problems[0]
    assert "bad.json.corrupt" in problems[0]
    assert "other" in problems[1]
    assert "starts without its module state" in problems[1]
    assert (tmp_path / "flows" / "bad.json.corrupt").exists()


async def _inject_and_wait(client: RunnerClient, n: int) -> None:
    """Inject n messages into the chain and wait until n outputs came out."""
    async with client.rpc() as rpc:
        await rpc.subscribe(flows=["chain"], kinds=["output"])
        await client.inject("chain", "add", "in", [{"n": i} for i in range(n)])
        seen = 0
        while seen < n:
            seen += len((await wait_event(rpc, "output"))["msgs"])


async def _wait_exit(pid: int) -> None:
    """Wait for a process that is not our child to end (a pidfd turns readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def test_a_runner_comes_back_with_its_flows_and_their_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    idle = make_flow({**CHAIN, "id": "idle"})
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        await runner.add_or_update_flow(make_flow(CHAIN))
        await runner.add_or_update_flow(idle)
        await runner.start_flow("chain")
        await runner.inject("chain", "add", "in", [{"n": i} for i in range(30)])
        await runner.wait_idle("chain")
    # Leaving the runner stopped the flow gracefully: it stays marked running.
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        assert runner.restore_problems == []
        assert {f["id"]: f["status"] for f in runner.flows()} == {
            "chain": "running",
            "idle": "stopped",
        }
        assert runner.module_state("chain", "double") == {"seen": 30}
        sub = runner.subscribe(flows=["chain"], kinds=["output"])
        await runner.inject("chain", "add", "in", [{"n": 0}])
        with trio.fail_after(20):
            event = await sub.receive()
        assert event["msgs"] == [{"n": 2, "seen": 31}]
        await runner.remove_flow("idle")
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        assert [f["id"] for f in runner.flows()] == ["chain"]


async def test_restart_of_the_runner_process_keeps_flows_and_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    server = ServerProcess(state_dir)
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        assert oct((state_dir / "token").stat().st_mode & 0o777) == "0o600"
        assert any("token:" in line and "(created)" in line for line in server.lines)
        async with RunnerClient(url, token) as client:
            await client.add_or_update_flow(CHAIN)
            await client.add_or_update_flow({**CHAIN, "id": "parked"})
            await client.start_flow("chain")
            await _inject_and_wait(client, 25)
        assert server.stop() == 0
        assert any("stopping flows" in line for line in server.lines)

        url = server.start()
        assert not any("(created)" in line for line in server.lines[-4:])
        async with RunnerClient(url, token) as client:
            flows = {f["id"]: f for f in await client.list_flows()}
            assert flows["chain"]["status"] == "running"
            assert flows["parked"]["status"] == "stopped"
            assert await client.module_state("chain", "add") == {"seen": 25}
            async with client.rpc() as rpc:
                await rpc.subscribe(flows=["chain"], outputs=["label.out"])
                await client.inject("chain", "add", "in", [{"n": 1}])
                event = await wait_event(rpc, "output")
            assert event["msgs"] == [{"n": 4, "seen": 26}]
    finally:
        server.stop()


async def test_module_state_is_checkpointed_while_flows_run(tmp_path: Path) -> None:
    """A runner killed with SIGKILL loses at most the last checkpoint interval; its
    runtime hosts notice their runner is gone and exit."""
    state_dir = tmp_path / "state"
    server = ServerProcess(state_dir)
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        async with RunnerClient(url, token) as client, client.rpc() as rpc:
            await client.add_or_update_flow(CHAIN)
            summary = await client.start_flow("chain")
            hosts = [r["pid"] for r in summary["runtimes"].values()]
            await rpc.subscribe(flows=["chain"], kinds=["checkpoint"])
            await _inject_and_wait(client, 10)
            with trio.fail_after(10):
                while (await wait_event(rpc, "checkpoint"))["modules"] != [
                    "add",
                    "double",
                    "label",
                ]:
                    pass
                while await client.module_state("chain", "label") != {"seen": 10}:
                    await wait_event(rpc, "checkpoint")
        states = orjson.loads((state_dir / "states" / "chain.json").read_bytes())["modules"]
        assert states["label"] == {"seen": 10}
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        with trio.fail_after(10):
            for pid in hosts:
                await _wait_exit(pid)

        url = server.start()
        async with RunnerClient(url, token) as client:
            assert (await client.get_flow("chain"))["status"] == "running"
            assert await client.module_state("chain", "label") == {"seen": 10}
    finally:
        server.stop()


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_token_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    from fifoflow.api.common.auth import TokenError, load_or_create_token

    path = tmp_path / "token"
    path.write_text("secret\n")
    path.chmod(mode)
    with pytest.raises(TokenError, match="chmod 600"):
        load_or_create_token(path)


async def test_two_runners_cannot_share_a_state_dir(tmp_path: Path) -> None:
    async with open_runner(RunnerConfig(state_dir=tmp_path)):
        with pytest.raises(
            StateDirInUse, match=f"in use by another runner \\(pid {os.getpid()}\\)"
        ):
            async with open_runner(RunnerConfig(state_dir=tmp_path)):
                pass
    async with open_runner(RunnerConfig(state_dir=tmp_path)):  # released on exit
        pass
