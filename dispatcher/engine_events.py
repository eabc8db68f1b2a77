"""The Docker engine's event stream, followed from trio: :func:`follow_events`.

The container backends (``docker_backend.py``, ``swarm_backend.py``) learn from it, the
moment it happens, that one of their containers died (``die``: also when the engine
restarts it in place by its restart policy) or was removed (``destroy``), instead of
finding out at their next poll.

Resource handling: the stream is an HTTP response the engine keeps open; it is read in
a worker thread (``trio.to_thread.run_sync``), which hands each event to the trio
thread (``trio.from_thread.run_sync``). Cancelling :func:`follow_events` closes the
response (the docker SDK's ``CancellableStream.close``: the socket is shut down, so
the thread's blocking read ends) and returns once the thread has ended: no thread is
left behind.

Error handling: a stream that ends (the engine restarted) or cannot be opened (the
engine is down) is opened again after a backoff (0.1 s, doubling up to 5 s) with
``since`` = the last event's time, so the events in between are still delivered;
events already delivered are skipped (by ``timeNano``): each is delivered once. Each
such problem is told to ``problem`` (a line for the operator); it never ends the
follower. An exception raised by ``handle`` is a bug and propagates.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["follow_events"]

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


async def follow_events(
    client: Any,
    filters: dict[str, list[str]],
    handle: Callable[[dict[str, Any]], None],
    *,
    problem: Callable[[str], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``handle(event)`` (in the trio thread) for each engine event that matches
    ``filters`` (the engine's: ``type``, ``label``, ``event``, ...), from the moment
    this is started, until cancelled."""
    import docker.errors
    import requests.exceptions

    last = time.time_ns()  # events from now on; a reconnect asks for those since then
    delay = BACKOFF_FIRST
    task_status.started()

    def deliver(event: dict[str, Any]) -> None:
        nonlocal last
        stamp = int(event.get("timeNano") or 0)
        if stamp and stamp <= last:
            return  # replayed after a reconnect: already delivered
        last = max(last, stamp)
        handle(event)

    while True:
        since = f"{last // 10**9}.{last % 10**9:09d}"
        try:
            stream = await trio.to_thread.run_sync(
                functools.partial(client.events, decode=True, since=since, filters=filters)
            )
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            if problem is not None:
                problem(f"cannot follow the engine's events: {exc}; trying again in {delay:g} s")
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        opened = trio.current_time()
        await _pump(stream, deliver)
        if trio.current_time() - opened > BACKOFF_MAX:
            delay = BACKOFF_FIRST  # it was up for a while: a new hiccup starts over
        if problem is not None:
            problem(f"the engine's event stream ended; opening it again in {delay:g} s")
        await trio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


async def _pump(stream: Any, deliver: Callable[[dict[str, Any]], None]) -> None:
    """Read ``stream`` to its end in a worker thread; cancelled: close it, then wait
    for the thread."""

    import docker.errors
    import requests.exceptions

    def read() -> None:
        while True:
            try:
                event = next(stream)  # ends when the engine closes it or we do
            except StopIteration:
                return
            except (
                docker.errors.DockerException,
                requests.exceptions.RequestException,
                OSError,
                ValueError,  # a line cut short by the close
            ):
                return  # the stream ended: the caller opens it again, or was cancelled
            trio.from_thread.run_sync(deliver, event)

    async def close_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stream.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_when_cancelled)
        try:
            # Not abandoned on cancel: the closer above ends the read, and the thread
            # is waited for.
            await trio.to_thread.run_sync(read)
        finally:
            nursery.cancel_scope.cancel()
