"""Events of a runner: outputs, errors, logs, state changes; fanned out to subscribers.

A subscriber never slows a flow: each has a bounded buffer; when it is full, events are
dropped *for that subscriber only* and counted, and the next event it receives is
preceded by a ``missed`` event saying how many it lost.

Event kinds (:class:`EventKind`; an event's ``kind`` is a member, which is its string):
``output`` (flow, module, port, msgs), ``error`` (flow, module, port, runtime, msg,
error), ``log`` (flow, runtime, module, level, stream, text), ``flow`` (flow, status,
error), ``checkpoint`` (flow, modules: whose state was just written to the state dir; or
``error``: code and message of a write that failed, once until it changes),
``missed`` (count), and those of the debugger, hot swap, runtimes and environments (see
:class:`EventKind`).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Event", "EventHub", "EventKind", "Subscription"]

Event = dict[str, Any]


class EventKind(enum.StrEnum):
    """What an event is about (its ``kind``). A ``StrEnum``: subscribers may compare and
    filter with the plain strings, and JSON carries them unchanged."""

    OUTPUT = "output"
    ERROR = "error"
    LOG = "log"
    #: a flow's status changed (``status``, ``error``)
    FLOW = "flow"
    CHECKPOINT = "checkpoint"
    #: a hot swap happened (its report)
    SWAP = "swap"
    #: the debugger paused a flow (``reason``: a :class:`~.debugger.PauseReason`)
    PAUSED = "paused"
    CONTINUED = "continued"
    STEP = "step"
    #: a waiting message was edited or dropped
    QUEUE = "queue"
    #: a runtime host restarts or is ready again
    RUNTIME = "runtime"
    #: progress of an environment build
    ENVIRONMENT = "environment"
    #: a compiled runtime's host binary (go): ``event`` started, finished (``seconds``),
    #: cached (no build) or failed (``error``, ``file``, ``line``); ``runtime``, ``modules``
    BUILD = "build"
    #: a run changed state (``run``, ``state``, ``attempt``, ``worker``, ``reason``; runner/runs)
    RUN = "run"
    #: a run's lease was renewed with its progress (``run``, ``attempt``, ``handled``, ...)
    RUN_PROGRESS = "run-progress"
    #: a message crossed a wire of a watched flow (``module``, ``port``, ``dst``,
    #: ``dstPort``, ``msgs``; ``Runner.watch_flow``)
    WIRE = "wire"
    #: to one subscriber only, which lost ``count`` events; not subscribed to
    MISSED = "missed"


class Subscription:
    """Receive events with ``async for``, or :meth:`receive`. Close with :meth:`close`."""

    def __init__(
        self,
        hub: EventHub,
        flows: frozenset[str] | None,
        kinds: frozenset[str] | None,
        capacity: int,
        outputs: frozenset[str] | None = None,
    ) -> None:
        self._hub = hub
        self.flows = flows
        self.kinds = kinds
        self.outputs = outputs
        self._buffer: deque[Event] = deque()
        self._capacity = capacity
        self._missed = 0
        self._wakeup = trio.Event()
        self.closed = False

    def wants(self, event: Event) -> bool:
        if self.flows is not None and event.get("flow") not in self.flows:
            return False
        if self.kinds is not None and event["kind"] not in self.kinds:
            return False
        if self.outputs is not None and event["kind"] == EventKind.OUTPUT:
            return f"{event['module']}.{event['port']}" in self.outputs
        return True

    def _push(self, event: Event) -> None:
        if len(self._buffer) >= self._capacity:
            self._missed += 1
        else:
            self._buffer.append(event)
        self._wakeup.set()

    def receive_nowait(self) -> Event:
        if self._missed:
            missed, self._missed = self._missed, 0
            return {"kind": EventKind.MISSED, "count": missed}
        if self._buffer:
            return self._buffer.popleft()
        raise trio.WouldBlock

    async def receive(self) -> Event:
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                if self.closed:
                    raise trio.EndOfChannel from None
                self._wakeup = trio.Event()
                await self._wakeup.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()
        self._hub._subscribers.discard(self)


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(
        self,
        *,
        flows: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
        capacity: int = 1000,
    ) -> Subscription:
        """Events of ``flows`` (all if None) of the given ``kinds`` (all if None); output
        events only from the ``outputs`` ports, written ``"module.port"`` (all if None)."""
        sub = Subscription(
            self,
            frozenset(flows) if flows is not None else None,
            frozenset(kinds) if kinds is not None else None,
            capacity,
            frozenset(outputs) if outputs is not None else None,
        )
        self._subscribers.add(sub)
        return sub

    def publish(self, event: Event) -> None:
        for sub in self._subscribers:
            if sub.wants(event):
                sub._push(event)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)
