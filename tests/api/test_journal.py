"""Journaled flows through a real ``fifoflow runner serve``: ``kill -9`` of the runner
while messages are injected loses no accepted message; a full disk refuses injects
with 507 and the flow goes on when space returns (runner/JOURNAL.md)."""

from __future__ import annotations

import os
import random
import signal
from typing import TYPE_CHECKING, Any

import pytest
import trio

from fifoflow.api.client import RunnerClient
from fifoflow.api.client.errors import ApiError, ConnectError

from ..runner.test_journal import COUNTER, mount_tmpfs, unmount
from .helpers import ServerProcess, wait_event

if TYPE_CHECKING:
    from pathlib import Path

#: the counter, its node module slowed down (~0.2 ms a message) so that work piles up in
#: the flow's queues and a kill finds messages accepted and not handled
SLOW_COUNTER: dict[str, Any] = {
    "fifoflow": 1,
    **COUNTER,
    "modules": [
        *COUNTER["modules"][:1],
        {
            "id": "double",
            "runtime": "node",
            "code": (
                "exports.handle = (msg, ctx) => {\n"
                "  const until = process.hrtime.bigint() + 200000n;\n"
                "  while (process.hrtime.bigint() < until) {}\n"
                "  ctx.state.seen = (ctx.state.seen || 0) + 1;\n"
                "  return msg;\n"
                "};\n"
            ),
        },
        *COUNTER["modules"][2:],
    ],
}
TOTAL = 20_000
BATCH = 100


async def _wait_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def _state(client: RunnerClient, module: str) -> dict[str, Any]:
    return await client.module_state("counter", module) or {}


async def _host_pids(client: RunnerClient) -> list[int]:
    flow = await client.get_flow("counter")
    return [r["pid"] for r in flow["runtimes"].values() if r["pid"]]


class _Progress:
    def __init__(self, observed: list[int]) -> None:
        self.sent = 0  # batches answered
        self.observed = observed


async def _inject(
    client: RunnerClient, progress: _Progress, kill_at: int | None, answered: trio.Event
) -> None:
    """Inject the batches in order until all are answered or the runner is gone (a
    batch without an answer goes again to the next runner); read the counter now and
    then: it never goes backwards."""
    observed = progress.observed
    try:
        while progress.sent < TOTAL // BATCH:
            batch = [{"id": progress.sent * BATCH + i} for i in range(BATCH)]
            await client.inject("counter", "add", "in", batch)
            progress.sent += 1
            if progress.sent == kill_at:
                answered.set()
            if progress.sent % 20 == 0:
                now = (await _state(client, "count")).get("count", 0)
                assert now >= observed[-1], "the counter went backwards"
                observed.append(now)
    except ConnectError:
        return


# httpx leaves the body stream of a request cut by the kill to the garbage collector:
# the test client's, not the server's (which is another process)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream"
    ":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.slow
async def test_kill_9_of_the_runner_loses_no_accepted_message(tmp_path: Path) -> None:
    """20,000 messages injected (batches of 100) into a journaled python -> node ->
    python counter; the runner is SIGKILLed at three random moments while injects are
    on the way. Every answered inject is handled; the one that got no answer is sent
    again (the client's at-least-once). The counter never goes backwards, ends at
    20,000 with no gap, and what was handled twice is counted and bounded."""
    rng = random.Random(os.environ.get("FIFOFLOW_TEST_SEED") or None)
    state_dir = tmp_path / "state"
    server = ServerProcess(state_dir)
    kills = sorted(rng.sample(range(10, TOTAL // BATCH - 10), 3))
    observed: list[int] = []  # the counter's count, as read between batches
    resent = 0
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        async with RunnerClient(url, token) as client:
            await client.add_or_update_flow(SLOW_COUNTER)
            await client.start_flow("counter")
        progress = _Progress(observed)
        while progress.sent < TOTAL // BATCH:
            kill_at = kills.pop(0) if kills else None
            async with RunnerClient(server.url, token) as client:
                hosts = await _host_pids(client)
                count = (await _state(client, "count")).get("count", 0)
                assert not observed or count >= observed[-1], "the counter went backwards"
                observed.append(count)
                async with trio.open_nursery() as nursery:
                    answered = trio.Event()
                    nursery.start_soon(_inject, client, progress, kill_at, answered)
                    if kill_at is None:
                        continue
                    await answered.wait()
                    assert server.proc is not None
                    # the next inject is on its way (or being answered) right now
                    os.kill(server.proc.pid, signal.SIGKILL)
                    server.proc.wait()
            resent += 1
            with trio.fail_after(20):
                for pid in hosts:
                    await _wait_exit(pid)
            server.start()
        async with RunnerClient(server.url, token) as client, client.rpc() as rpc:
            await rpc.subscribe(flows=["counter"], kinds=["checkpoint"])
            with trio.fail_after(60):
                while (state := await _state(client, "count")).get("count", 0) < TOTAL:
                    assert state.get("count", 0) >= observed[-1], "the counter went backwards"
                    await wait_event(rpc, "checkpoint")
            assert state["count"] == TOTAL
            assert state["last"] == TOTAL - 1
            assert state.get("gaps", 0) == 0
            dups = state.get("dups", 0)
            # a batch without an answer may have been journaled and is sent again
            assert dups <= resent * BATCH, state
            health = await client.health()
            # what the runner found in the journal, unhandled, at each restart
            backlog = [
                int(line.split(": ")[1].split()[0])
                for line in server.lines
                if "from its journal handled again" in line
            ]
            print(
                f"kills: 3, resent batches: {resent}, duplicates at the counter: {dups}, "
                f"messages recovered unhandled at restarts: {backlog}"
            )
            assert sum(backlog) > 0, "no kill found work in flight: the test tested nothing"
            assert health["journaled"] == 0
            # the middle module's state counts what it handled, with the same bound: a
            # message handled before a kill and not journaled is not in its state either
            seen = (await _state(client, "double"))["seen"]
            assert TOTAL <= seen <= TOTAL + resent * BATCH
    finally:
        server.stop()


async def test_a_full_disk_refuses_injects_with_507_and_the_flow_goes_on(tmp_path: Path) -> None:
    """The state dir on a 48 MiB tmpfs, filled up but for less than the journal's
    reserve: an inject is refused with 507 (journal_full, no space left) and nothing of
    it is queued; once space returns the flow takes messages again."""
    mount = tmp_path / "small"
    if not mount_tmpfs(mount, "48m"):
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs (the test runs as root on the test machines)")
        pytest.skip("cannot mount a tmpfs here (not root)")
    state_dir = mount / "state"
    server = ServerProcess(state_dir, "--durability", "journal", "--journal-reserve", "2MiB")
    doc = {"fifoflow": 1, **COUNTER}
    doc.pop("durability")  # journaled by the runner's default
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        async with RunnerClient(url, token) as client:
            await client.add_or_update_flow(doc)
            await client.start_flow("counter")
            await client.inject("counter", "add", "in", [{"id": i} for i in range(100)])
            st = os.statvfs(mount)
            filler = mount / "filler"
            free = st.f_bavail * st.f_frsize
            with filler.open("wb") as f:
                f.truncate(0)
                f.write(b"\0" * (free - (1 << 20)))  # leave 1 MiB: under the reserve
            with pytest.raises(ApiError) as refused:
                await client.inject("counter", "add", "in", [{"id": i} for i in range(100, 200)])
            assert refused.value.status == 507
            assert refused.value.code == "journal_full"
            assert "no space left on the device" in str(refused.value)
            assert "not accepted" in str(refused.value)
            flow = await client.get_flow("counter")
            assert flow["status"] == "running"
            filler.unlink()
            await client.inject("counter", "add", "in", [{"id": i} for i in range(100, 200)])
            async with client.rpc() as rpc:
                await rpc.subscribe(flows=["counter"], kinds=["checkpoint"])
                with trio.fail_after(20):
                    while (await _state(client, "count")).get("count", 0) < 200:
                        await wait_event(rpc, "checkpoint")
            assert await _state(client, "count") == {"last": 199, "count": 200}
    finally:
        server.stop()
        unmount(mount)
