"""Runner.watch_flow: every message on a wire of a watched flow is a ``wire`` event."""

from __future__ import annotations

from fifoflow.runner import open_runner

from .helpers import start

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
