"""Runner.watch_flow: every message on a wire of a watched flow is a ``wire`` event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fifoflow.runner import RunnerError, open_runner
from fifoflow.runner.link import DispatcherLink

from .helpers import start

if TYPE_CHECKING:
    from pathlib import Path

ECHO = "def handle(msg, ctx):\n    return msg\n"
DOC = {
    "id": "w",
    "modules": [
        {"id": "a", "runtime": "python", "code": ECHO},
        {"id": "b", "runtime": "python", "code": ECHO},
    ],
    "wires": ["a.out -> b.in"],
}


async def test_a_watched_flow_publishes_its_wires_messages_and_unwatched_stops() -> None:
    async with open_runner() as runner:
        sink = await start(runner, DOC)
        sub = runner.subscribe(flows=["w"], kinds=["wire"])
        try:
            await runner.inject("w", "a", "in", [1])  # same-runtime wire: stays in the host
            await sink.wait_for(1)
            await runner.watch_flow("w", True)
            assert runner.flow("w").external_routing
            await runner.inject("w", "a", "in", [2, 3])
            await sink.wait_for(3)
            event = sub.receive_nowait()
            assert (event["module"], event["port"], event["dst"], event["dstPort"]) == (
                "a",
                "out",
                "b",
                "in",
            )
            seen = list(event["msgs"])
            while len(seen) < 2:
                seen += sub.receive_nowait()["msgs"]
            assert seen == [2, 3]
            await runner.watch_flow("w", False)
            assert not runner.flow("w").external_routing
            await runner.inject("w", "a", "in", [4])
            await sink.wait_for(4)
            assert not sub._buffer  # nothing published once unwatched
            assert sink.msgs("b.out") == [1, 2, 3, 4]
        finally:
            sub.close()


async def test_the_dispatcher_link_watch_call(tmp_path: Path) -> None:
    """``watch`` from the dispatcher (the FBP protocol over a dispatcher): the runner
    watches the part and keeps it among those whose events it forwards; a bad param or
    an unknown flow is refused; a removed part is forgotten."""
    async with open_runner() as runner:
        await start(runner, DOC)
        link = DispatcherLink("http://127.0.0.1:9", runner, tmp_path)
        assert await link._handle("watch", {"flowId": "w", "watched": True}) is True
        assert runner.flow("w").external_routing
        assert link.watched == {"w"}
        with pytest.raises(TypeError, match="watched must be true or false"):
            await link._handle("watch", {"flowId": "w", "watched": "yes"})
        with pytest.raises(RunnerError):
            await link._handle("watch", {"flowId": "nope", "watched": True})
        assert link.watched == {"w"}
        assert await link._handle("watch", {"flowId": "w", "watched": False}) is False
        assert link.watched == set()
        await link._handle("watch", {"flowId": "w"})
        assert await link._handle("remove", {"flowId": "w"}) is True
        assert link.watched == set()
