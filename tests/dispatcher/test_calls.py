"""A call to a runner has a deadline: two real RPC peers joined by memory channels, one
answering late; the clock is trio's autojump clock (no real waiting)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fifoflow.dispatcher.calls import call_runner
from fifoflow.dispatcher.errors import RunnerTimeout
from fifoflow.runner.rpc import RpcPeer


async def _pump(receive: trio.MemoryReceiveChannel[str], peer: RpcPeer) -> None:
    async for message in receive:
        await peer.feed(message)


async def test_an_unanswered_call_gives_up_at_its_deadline_and_a_late_answer_is_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    release = trio.Event()
    answered: list[str] = []

    async def runner_side(method: str, params: dict[str, Any]) -> Any:
        if method == "deploy":
            await release.wait()
        answered.append(method)
        return {"method": method, **params}

    async def dispatcher_side(method: str, params: dict[str, Any]) -> Any:
        raise AssertionError("the runner calls nothing here")

    to_runner_send, to_runner = trio.open_memory_channel[str](10)
    to_dispatcher_send, to_dispatcher = trio.open_memory_channel[str](10)
    async with trio.open_nursery() as nursery:
        dispatcher = RpcPeer(to_runner_send.send, dispatcher_side, nursery)
        runner = RpcPeer(to_dispatcher_send.send, runner_side, nursery)
        nursery.start_soon(_pump, to_runner, runner)
        nursery.start_soon(_pump, to_dispatcher, dispatcher)

        start = trio.current_time()
        with pytest.raises(RunnerTimeout) as timed_out:
            await call_runner(dispatcher, "r-1", 2.0, "deploy", flowId="f")
        assert trio.current_time() - start == pytest.approx(2.0)
        assert str(timed_out.value) == "runner r-1 did not answer deploy within 2 s"

        # The runner answers after all: dropped, and the next call gets its own answer.
        release.set()
        answer = await call_runner(dispatcher, "r-1", 2.0, "state", flowId="f", timeout=7)
        assert answer == {"method": "state", "flowId": "f", "timeout": 7}
        assert sorted(answered) == ["deploy", "state"]
        # None: no deadline
        assert (await call_runner(dispatcher, "r-1", None, "inject"))["method"] == "inject"
        nursery.cancel_scope.cancel()
