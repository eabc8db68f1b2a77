"""The debugger of a flow: breakpoints, pause, continue, single steps, queue edits.

Where the gate is. While a flow is debugged (it has a breakpoint, or is paused) the
runner installs a wiring in which *every* wire goes through the runner, same-runtime
wires included (``FlowRun.plan``: no ``local`` routes in the hosts' tables). A host then
only ever handles what the runner sent it, so one gate in the runner — the per-module
queues of each ``RuntimeInstance``, ``queues.py`` — stops python, node and exec modules alike, and a
breakpoint on a same-runtime wire behaves exactly as one on a cross-runtime wire.
Switching the wiring happens at a quiet point (pause, drain, install, resume: the hot
swap's barrier), so no message is lost or reordered by it. When the flow is no longer
debugged, the fast wiring (same-runtime wires inside the hosts) comes back.

Breakpoints. Before a message for module M leaves M's queue, ``allowance`` checks it
against M's breakpoint (and its condition, see ``conditions.py``). On a match the whole
flow pauses: no instance sends anything new; what was already sent finishes; a
``paused`` event names the module, port and message. The message stays first in M's
queue. ``continue`` lets it pass once and runs until the next match.

Single step (the flow must be paused). One tick: after what was in flight has finished,
every module of the flow with a waiting message (document order) gets exactly its
first waiting message, all in one go; the tick ends when every host acknowledged them.
Messages they emit are queued for the next tick (exits excepted: they leave the flow).
The answer, per ``"<flow>/<module>"``: ``inputStates`` (``consumed``: port and message
handled this tick, or null; ``queued``: per input port, what still waits),
``outputStates`` (per output port, what the module emitted this tick), ``errors`` (what
it raised this tick) and ``edits`` (queue edits made since the previous step).
"""

from __future__ import annotations

import enum
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .conditions import Condition
from .errors import FlowStateError, NotFound
from .events import EventKind
from .status import FlowStatus

if TYPE_CHECKING:
    from collections import deque

    from .flowrun import FlowRun
    from .instance import RuntimeInstance
    from .queues import Delivery

__all__ = ["Breakpoint", "Debugger", "PauseReason", "Tick"]


class PauseReason(enum.StrEnum):
    """Why a flow is paused (``reason`` of the ``paused`` event and of ``pause_info``)."""

    #: a message reached a module with a breakpoint (and matched its condition)
    BREAKPOINT = "breakpoint"
    #: someone asked (pause_flow)
    PAUSE = "pause"


@attrs.define
class Breakpoint:
    module: str
    condition: Condition | None = None
    hits: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "condition": self.condition.text if self.condition else None,
            "hits": self.hits,
        }


@attrs.define
class Tick:
    """What one step produced, filled in by ``FlowRun.route`` and ``record_error``."""

    outputs: defaultdict[str, defaultdict[str, list[Any]]] = attrs.field(
        factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    errors: defaultdict[str, list[dict[str, Any]]] = attrs.field(factory=lambda: defaultdict(list))


class Debugger:
    def __init__(self, run: FlowRun) -> None:
        self.run = run
        self.breakpoints: dict[str, Breakpoint] = {}
        self.paused = False
        #: why the flow is paused: {"reason": PauseReason, module, port, msg}
        self.pause_info: dict[str, Any] | None = None
        self.tick: Tick | None = None
        # qualified module id -> messages at the head of its queue that pass the
        # breakpoint once (the one that hit it, after continue)
        self._release: dict[str, int] = {}
        self._edits: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = trio.Lock()

    @property
    def active(self) -> bool:
        return self.paused or bool(self.breakpoints)

    # ------------------------------------------------------------------ the gate

    def allowance(self, qid: str, queue: deque[Delivery]) -> int | None:
        """How many of ``qid``'s waiting messages may be sent now (None: all of them).
        Pauses the flow when a message that hits a breakpoint reaches the head."""
        if self.paused:
            return 0
        bp = self.breakpoints.get(self.run.short(qid))
        if bp is None:
            return None
        skip = self._release.get(qid, 0)
        index = 0
        for d in queue:
            for msg in d.msgs:
                if index >= skip and (bp.condition is None or bp.condition.matches(msg, d.port)):
                    bp.hits += 1
                    self._release[qid] = index + 1
                    self._pause(
                        {
                            "reason": PauseReason.BREAKPOINT,
                            "module": bp.module,
                            "port": d.port,
                            "msg": msg,
                        }
                    )
                    return index
                index += 1
        return None

    def taken(self, qid: str, n: int) -> None:
        left = self._release.get(qid, 0) - n
        if left > 0:
            self._release[qid] = left
        else:
            self._release.pop(qid, None)

    def _pause(self, info: dict[str, Any]) -> None:
        self.paused = True
        self.pause_info = {**info, "time": time.time()}
        self.run.publish({"kind": EventKind.PAUSED, **info})

    # ------------------------------------------------------------------ commands

    async def set_breakpoint(self, module: str, condition: str | None = None) -> Breakpoint:
        self.run._module(module)
        parsed = Condition.parse(condition) if condition is not None else None
        async with self._lock:
            bp = self.breakpoints[module] = Breakpoint(module, parsed)
            await self.ensure_wiring()
        return bp

    async def remove_breakpoint(self, module: str) -> bool:
        self.run._module(module)
        async with self._lock:
            removed = self.breakpoints.pop(module, None) is not None
            self._release.pop(self.run.qualified(module), None)
            await self.ensure_wiring()
        return removed

    async def watch(self, watched: bool) -> None:
        """Wire events on or off (``FlowRun.watched``): they need the same wiring."""
        async with self._lock:
            self.run.watched = watched
            await self.ensure_wiring()

    async def pause(self) -> None:
        async with self._lock:
            if not self.paused:
                self._pause({"reason": PauseReason.PAUSE})
            await self.ensure_wiring()
            await self._quiet()

    async def resume(self) -> None:
        async with self._lock:
            if not self.paused:
                raise FlowStateError(f"flow {self.run.flow_id!r} is not paused")
            self.paused = False
            self.pause_info = None
            self.run.publish({"kind": EventKind.CONTINUED})
            for instance in list(self.run.instances.values()):
                instance.kick()
            self.run.notify()
            await self.ensure_wiring()

    async def step(self) -> dict[str, Any]:
        run = self.run
        async with self._lock:
            if not self.paused:
                raise FlowStateError(
                    f"flow {run.flow_id!r} is not paused: pause it or let it hit a breakpoint first"
                )
            self._require_running()
            await self._quiet()
            consumed: dict[str, dict[str, Any]] = {}
            batches: dict[RuntimeInstance, list[Delivery]] = defaultdict(list)
            for module in run.flow.modules:
                qid = run.qualified(module.id)
                instance = run.instances[module.host]
                one = instance.queues.pop_one(qid)
                if one is not None:
                    self.taken(qid, 1)
                    consumed[module.id] = {"port": one.port, "msg": one.msgs[0]}
                    batches[instance].append(one)
            tick = self.tick = Tick()
            try:
                for instance, deliveries in batches.items():
                    await instance.deliver_now(deliveries)
                await self._quiet()
            finally:
                self.tick = None
            result: dict[str, Any] = {}
            for module in run.flow.modules:
                qid = run.qualified(module.id)
                queued = run.instances[module.host].queues.queued(qid)
                result[qid] = {
                    "inputStates": {
                        "consumed": consumed.get(module.id),
                        "queued": {
                            port: [m for d in queued if d.port == port for m in d.msgs]
                            for port in module.inputs
                        },
                    },
                    "outputStates": {
                        port: list(msgs) for port, msgs in tick.outputs.get(module.id, {}).items()
                    },
                    "errors": list(tick.errors.get(module.id, ())),
                    "edits": self._edits.pop(module.id, []),
                }
            run.publish({"kind": EventKind.STEP, "modules": result})
            return result

    def queues(self) -> dict[str, list[dict[str, Any]]]:
        """Every module's waiting messages, in order, with their index."""
        run = self.run
        out: dict[str, list[dict[str, Any]]] = {}
        for module in run.flow.modules:
            entries = []
            for d in run.instances[module.host].queues.queued(run.qualified(module.id)):
                for msg in d.msgs:
                    entries.append({"index": len(entries), "port": d.port, "msg": msg})
            out[module.id] = entries
        return out

    async def edit_queued(self, module: str, index: int, msg: Any | None) -> Any:
        """Replace (``msg``) or drop (``None``) a waiting message; only while paused."""
        run = self.run
        mod = run._module(module)
        async with self._lock:
            if not self.paused:
                raise FlowStateError(
                    f"flow {run.flow_id!r} is running: pause it before editing its queues"
                )
            qid = run.qualified(module)
            try:
                old = run.instances[mod.host].queues.replace(qid, index, msg)
            except IndexError:
                waiting = len(self.queues()[module])
                raise NotFound(
                    f"module {module!r} has no waiting message #{index} ({waiting} waiting)"
                ) from None
            if msg is None:
                run.settle(1)
                if index < self._release.get(qid, 0):
                    self.taken(qid, 1)
            edit = {"action": "drop" if msg is None else "edit", "index": index, "old": old}
            if msg is not None:
                edit["new"] = msg
            self._edits[module].append(edit)
            run.publish({"kind": EventKind.QUEUE, "module": module, **edit})
            return old

    def describe(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "pause": self.pause_info,
            "breakpoints": [bp.describe() for bp in self.breakpoints.values()],
        }

    # ------------------------------------------------------------------ wiring

    def forget(self, modules: set[str]) -> None:
        """Drop breakpoints of modules a hot swap removed."""
        for module in set(self.breakpoints) - modules:
            del self.breakpoints[module]

    async def ensure_wiring(self) -> None:
        """Install the wiring the debugger needs (every wire through the runner while
        debugged, the fast one otherwise), at a quiet point of the running flow."""
        run = self.run
        want = self.active or run.watched
        if run.external_routing == want:
            return
        if run.status is not FlowStatus.RUNNING:
            run._install(run.plan(run.flow))  # used when the flow starts
            return
        instances = list(run.instances.values())
        for instance in instances:
            instance.pause()
        try:
            with trio.fail_after(run.config.swap_timeout):
                for instance in instances:
                    await instance.drain()
            run._install(run.plan(run.flow))
            for instance in instances:
                try:
                    await instance.control([{"op": "route", "routes": instance.routes}])
                except FlowStateError:
                    pass  # a restarted host gets the installed table at boot
        except trio.TooSlowError:
            raise FlowStateError(
                f"flow {run.flow_id!r} did not reach a quiet point within "
                f"{run.config.swap_timeout:g} s (a handler is busy); try again"
            ) from None
        finally:
            for instance in instances:
                instance.resume()

    async def _quiet(self) -> None:
        """Wait until no message of the flow is inside a host."""
        run = self.run
        if run.status is not FlowStatus.RUNNING:
            return
        try:
            with trio.fail_after(run.config.swap_timeout):
                for instance in list(run.instances.values()):
                    await instance.drain()
        except trio.TooSlowError:
            raise FlowStateError(
                f"flow {run.flow_id!r}: a handler is still busy after "
                f"{run.config.swap_timeout:g} s; try again"
            ) from None

    def _require_running(self) -> None:
        if self.run.status is not FlowStatus.RUNNING:
            raise FlowStateError(
                f"flow {self.run.flow_id!r} is {self.run.status}: start it to step it"
            )
