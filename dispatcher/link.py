"""One runner's control link, the dispatcher's side: JSON-RPC both ways (``runner/rpc.py``).

The HTTP layer accepts the WebSocket (``GET /link``) and hands :meth:`RunnerLink.serve`
the socket's ``receive`` and ``send``; everything a runner may say is handled here,
against the :class:`~fifoflow.dispatcher.service.Dispatcher`: :data:`CALLS` lists each
call with its params model, structured by the one converter (a bad param is a JSON-RPC
-32602 naming its path; the runner's id is the link's own, never a param). A runner authenticates
inside the link (``hello`` with its id and secret, after a one-time ``register``), never
with the operator token.

Every call a runner makes about a flow concerns a part placed on it (relay: the emitting
module; paused: the flow, and the module it names; snapshot: the flow, and each module
whose state it carries; flowEvent: the flow, and the module the event names): the rest
is refused as :class:`~.errors.NotYourPart` and recorded as a ``refused-call`` event
(``Dispatcher.check_part``). A runner's secret reaches its own parts, never another
runner's flow.

Runs (``dispatcher/runs.py``, ``runner/runs/RUNS.md``): ``runProgress``, ``runResult``,
``runsHeld`` (after ``ready``) and ``runGiveBack`` go to the dispatcher's run book (the
sides of a run with browser modules report to ``Dispatcher.run_sides`` instead, which
also takes their ``runRelay``: ``dispatcher/sides.py``); a
runner speaks only for the attempts given to it (``Dispatcher.check_attempt``): another
runner's attempt, or a run it never held, is refused as :class:`~.errors.NotYourPart`
(``field`` ``runId`` or ``attempt``) and recorded as a ``refused-call`` event. An attempt
that was its own but no longer counts is answered ``lease_lost`` by the book.

Resource handling: the peer and the tasks it starts live in :meth:`serve`'s nursery;
when the socket closes the runner is detached from the dispatcher and they end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import cattrs
import trio

from fifoflow.flows.converter import Limit, make_converter, problems
from fifoflow.flows.limits import MAX_NAME
from fifoflow.runner.rpc import RpcPeer
from fifoflow.runner.runs.errors import LeaseLost
from fifoflow.runner.runs.model import RunId, RunProgress, RunResult

from .errors import DispatcherError

if TYPE_CHECKING:
    from .service import Dispatcher

__all__ = ["CALLS", "HELLO_SECONDS", "RunnerLink"]

#: how long a new link may go without a successful hello before it is closed
HELLO_SECONDS = 5.0


class RunnerLink:
    """The calls a runner makes: register, hello, hardware, ready, heartbeat, signoff,
    relay (messages for another runner's part), paused, snapshot, flowEvent (a watched
    flow's events); and for runs runProgress, runResult, runsHeld, runGiveBack."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.runner_id: str | None = None
        self.peer: RpcPeer | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(
        self,
        receive: Callable[[], Awaitable[str | bytes]],
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            peer = self.peer = RpcPeer(send, self.handle, nursery)
            try:
                # Before hello: one call at a time, answered before the next frame is
                # read, and hello within HELLO_SECONDS, or the link is closed: a peer
                # with no credentials costs a socket for a few seconds, nothing more.
                with trio.move_on_after(HELLO_SECONDS):
                    while self.runner_id is None:
                        await peer.feed(await receive(), inline=True)
                if self.runner_id is None:
                    return
                while True:
                    await peer.feed(await receive())
            finally:
                peer.close()
                if self.runner_id is not None:
                    self.dispatcher.detach(self.runner_id, peer)
                    if self.runner_id not in self.dispatcher.links:
                        self.dispatcher.peers.endpoints.pop(self.runner_id, None)
                nursery.cancel_scope.cancel()

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        found = CALLS.get(method)
        if found is None:
            raise DispatcherError(f"unknown method {method!r} (methods: {', '.join(CALLS)})")
        model, call = found
        try:
            args = _CONVERTER.structure(params, model)
        except cattrs.BaseValidationError as exc:
            raise ValueError(
                "; ".join(f"{p.path or 'params'}: {p.message}" for p in problems(exc))
            ) from None
        if self.runner_id is None and model not in (Register, Hello):
            raise DispatcherError("say hello first (runnerId and secret)")
        return await call(self, args)

    # Each call, with its params structured (the runner's id is the link's, from hello).

    async def _register(self, p: Register) -> Any:
        return self.dispatcher.register(p.token, p.name or "runner")

    async def _hello(self, p: Hello) -> Any:
        answer = self.dispatcher.hello(p.runnerId, p.secret, p.version)
        self.runner_id = p.runnerId
        assert self.peer is not None
        self.dispatcher.attach(p.runnerId, self.peer)
        # runner-to-runner relay (dispatcher/peers.py): where others reach it, its key
        peers = self.dispatcher.peers
        if p.peer is not None:
            peers.endpoints[p.runnerId] = p.peer
            answer = {**answer, "peerKey": peers.key_for(p.runnerId).hex()}
        else:
            peers.endpoints.pop(p.runnerId, None)
        return answer

    async def _hardware(self, p: Hardware) -> bool:
        self.dispatcher.report_hardware(self._id, p.full, p.changes)
        return True

    async def _ready(self, p: Ready) -> bool:
        self.dispatcher.ready(self._id)
        assert self.nursery is not None
        self.nursery.start_soon(self.dispatcher.runner_ready, self._id, p.flows)
        return True

    async def _heartbeat(self, p: Heartbeat) -> bool:
        self.dispatcher.heartbeat(self._id, journaled=p.journaled)
        return True

    async def _signoff(self, p: NoParams) -> bool:
        self.dispatcher.sign_off(self._id)
        return True

    async def _relay(self, p: Relay) -> bool:
        await self.dispatcher.relay(
            self._id, p.flowId, p.moduleId, p.port, p.msgs, to=tuple(p.to) if p.to else None
        )
        return True

    async def _paused(self, p: Paused) -> None:
        # Checked here, not in the task: a refusal is this call's answer.
        modules = () if p.module is None else (p.module,)
        self.dispatcher.check_part(self._id, "paused", p.flowId, modules=modules, field="module")
        info = {"reason": p.reason, "module": p.module, "port": p.port, "msg": p.msg}
        assert self.nursery is not None
        self.nursery.start_soon(self.dispatcher.paused, self._id, p.flowId, info)

    async def _snapshot(self, p: Snapshot) -> None:
        self.dispatcher.snapshot(self._id, p.flowId, p.states)

    async def _flow_event(self, p: FlowEvent) -> None:
        # a watched flow's wire, log, error or status event (the FBP protocol's data)
        self.dispatcher.flow_event(self._id, p.flowId, p.event)

    # Runs: the book decides; the dispatcher checks first that the attempt is this
    # runner's (a refusal is this call's answer).

    async def _run_progress(self, p: RunProgress) -> bool:
        sides = self.dispatcher.run_sides
        if sides.side(self._id, p.runId, p.attempt) is not None:
            sides.progress(self._id, p)
            return True
        self.dispatcher.check_attempt(self._id, "runProgress", p.runId, p.attempt)
        self.dispatcher.run_book.progress(self._id, p)
        return True

    async def _run_result(self, p: RunResult) -> dict[str, bool]:
        sides = self.dispatcher.run_sides
        if sides.side(self._id, p.runId, p.attempt) is not None:
            return {"recorded": sides.result(self._id, p)}
        if any(isinstance(s, dict) and s.get("partial") for s in p.sides.values()):
            # a side's result whose coordination is gone (a dispatcher restart): it
            # does not count; the run's lease runs out and it is retried
            raise LeaseLost(
                f"attempt {p.attempt} of run {p.runId}: its sides are not coordinated here"
            )
        self.dispatcher.check_attempt(self._id, "runResult", p.runId, p.attempt)
        return {"recorded": bool(self.dispatcher.run_book.finish(self._id, p))}

    async def _runs_held(self, p: RunsHeld) -> dict[str, list[list[Any]]]:
        return {"stop": self.dispatcher.runs_held(self._id, [attrs.asdict(h) for h in p.runs])}

    async def _run_relay(self, p: RunRelay) -> bool:
        await self.dispatcher.run_sides.relay(
            self._id, p.runId, p.attempt, p.module, p.port, p.msgs
        )
        return True

    async def _run_give_back(self, p: RunGiveBack) -> bool:
        self.dispatcher.check_attempt(self._id, "runGiveBack", p.runId, p.attempt)
        self.dispatcher.run_book.give_back(self._id, p.runId, p.attempt, p.reason)
        return True

    @property
    def _id(self) -> str:
        assert self.runner_id is not None
        return self.runner_id


# ---------------------------------------------------------------------- what a runner sends

#: names, tokens and versions a runner says about itself
Bounded = Annotated[str, Limit(max_length=MAX_NAME)]


@attrs.frozen
class Register:
    """A one-time registration token for an id and a secret."""

    token: Bounded
    name: Bounded | None = None


@attrs.frozen
class Hello:
    runnerId: Bounded
    secret: Bounded
    version: Bounded | None = None
    #: the runner's peer endpoint (``ws://host:port/peer``) for the runner-to-runner relay
    peer: Annotated[str, Limit(max_length=2048)] | None = None


@attrs.frozen
class Hardware:
    """The full report (first time after hello), or what changed since."""

    full: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None


@attrs.frozen
class Ready:
    """Ready for flows; ``flows``: summaries of the flows it holds already."""

    flows: list[dict[str, Any]] = attrs.field(factory=list)


@attrs.frozen
class NoParams:
    pass


@attrs.frozen
class Heartbeat:
    """``journaled``: messages in the runner's journaled flows not handled yet (what is
    lost with its state dir if it never comes back; runner/JOURNAL.md)."""

    journaled: Annotated[int, Limit(ge=0)] = 0


@attrs.frozen
class Relay:
    """Messages a part emitted on a wire to a module on another runner."""

    flowId: str
    moduleId: str
    port: str
    msgs: list[Any]
    #: only to this target (module, port) of the wire (a batch the runner could not send
    #: directly, ``runner/peers.py``); None: to every target of the port
    to: Annotated[list[Bounded], Limit(min_length=2, max_length=2)] | None = None


@attrs.frozen
class Paused:
    """A part paused (a breakpoint hit, or a pause): the other parts pause too."""

    flowId: str
    reason: str | None = None
    module: str | None = None
    port: str | None = None
    msg: Any = None


@attrs.frozen
class Snapshot:
    flowId: str
    states: dict[str, Any]


@attrs.frozen
class FlowEvent:
    """An event of a watched flow's part (``Dispatcher.watch_flow``): ``wire``, ``log``,
    ``error`` or ``flow``, as the runner published it."""

    flowId: str
    event: dict[str, Any]


@attrs.frozen
class HeldRun:
    """An attempt a runner holds: running, or ``finished`` (its result is re-sent)."""

    runId: RunId
    attempt: Annotated[int, Limit(ge=1)]
    finished: bool = False


@attrs.frozen
class RunsHeld:
    """What a runner holds, said after every ``ready``."""

    runs: Annotated[list[HeldRun], Limit(max_length=100_000)] = attrs.field(factory=list)


@attrs.frozen
class RunGiveBack:
    """An attempt the runner will not finish (SIGTERM grace over): queued again."""

    runId: RunId
    attempt: Annotated[int, Limit(ge=1)]
    reason: Annotated[str, Limit(max_length=4096)] = "given back by the runner"


@attrs.frozen
class RunRelay:
    """Messages a side of a run with browser modules emitted on a wire to its other
    side (``dispatcher/sides.py``)."""

    runId: RunId
    attempt: Annotated[int, Limit(ge=1)]
    side: Bounded
    module: Bounded
    port: Bounded
    msgs: list[Any]


_CONVERTER = make_converter()

Call = Callable[[RunnerLink, Any], Awaitable[Any]]
#: every call a runner may make: its params model and its handler
CALLS: dict[str, tuple[type, Call]] = {
    "register": (Register, RunnerLink._register),
    "hello": (Hello, RunnerLink._hello),
    "hardware": (Hardware, RunnerLink._hardware),
    "ready": (Ready, RunnerLink._ready),
    "heartbeat": (Heartbeat, RunnerLink._heartbeat),
    "signoff": (NoParams, RunnerLink._signoff),
    "relay": (Relay, RunnerLink._relay),
    "paused": (Paused, RunnerLink._paused),
    "snapshot": (Snapshot, RunnerLink._snapshot),
    "flowEvent": (FlowEvent, RunnerLink._flow_event),
    "runProgress": (RunProgress, RunnerLink._run_progress),
    "runResult": (RunResult, RunnerLink._run_result),
    "runsHeld": (RunsHeld, RunnerLink._runs_held),
    "runGiveBack": (RunGiveBack, RunnerLink._run_give_back),
    "runRelay": (RunRelay, RunnerLink._run_relay),
}
