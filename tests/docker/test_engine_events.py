"""dispatcher/engine_events.py against a real engine: an event arrives as it happens,
and cancelling the follower closes the stream and ends its thread."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import trio

from fifoflow.dispatcher.engine_events import follow_events

pytestmark = pytest.mark.slow


async def test_a_die_event_arrives_and_cancel_ends_the_reader(docker_client: Any) -> None:
    label = f"io.fifoflow.test={uuid.uuid4().hex[:8]}"
    seen: list[dict[str, Any]] = []
    arrived = trio.Event()

    def handle(event: dict[str, Any]) -> None:
        seen.append(event)
        arrived.set()

    filters = {"type": ["container"], "label": [label], "event": ["die"]}
    container = None
    async with trio.open_nursery() as nursery:
        await nursery.start(follow_events, docker_client, filters, handle)
        try:
            # (started before the container: the event is not missed even if the
            # stream opens after it, `since` replays it)
            container = await trio.to_thread.run_sync(
                lambda: docker_client.containers.run(
                    "fifoflow-base:bookworm",
                    ["sh", "-c", "exit 3"],
                    detach=True,
                    labels=dict([label.split("=")]),
                )
            )
            with trio.fail_after(30):
                await arrived.wait()
            [event] = seen
            assert event["Action"] == "die"
            assert event["Actor"]["Attributes"]["exitCode"] == "3"
            assert event["id"] == container.id
        finally:
            if container is not None:
                container.remove(force=True)
            cancelled = time.monotonic()
            nursery.cancel_scope.cancel()
    # The nursery waited for the reader thread (it is not abandoned): it ended because
    # the stream was closed, not because an event or the engine happened to end it.
    assert time.monotonic() - cancelled < 5
