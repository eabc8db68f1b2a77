"""Runs with ``browser`` modules: one attempt, two sides (``runner/runs/RUNS.md``, "Runs
with browser modules").

The book's worker for such an attempt is the **server side** (a runner: it holds the
lease); the **page side** is a page's client runner (``clients.py``). Each side runs its
part of the flow (:func:`~.parts.flow_part`) as a coordinated attempt
(``RunOffer.part``): what reaches a port whose wire crosses to the other side comes here
(``runRelay``) and is delivered into the other side (``runDeliver``); a side never ends
itself on idle. :class:`Coordinator` keeps one :class:`Coordination` per such attempt:

- **progress**: each side reports ``runProgress`` with its own entry under ``sides``
  (``idle``, ``sent``, ``received``, handled/errors/outputs); the coordinator merges the
  sides' reports into one :class:`RunProgress` and renews the book's lease with it (as the
  server runner) — the run's view shows ``progress.sides``.
- **the end (a counted handshake)**: the attempt succeeds when every side's last report
  says ``idle`` with ``received`` equal to what the coordinator delivered into that side,
  and no relay is in flight. A relay returns only once delivered, and a side is not idle
  while one of its relays waits (the host is not acknowledged meanwhile), so a side that
  reports idle has sent everything it will; a delivery after its report makes its
  ``received`` stale until it reports idle again. Then each side is told ``runEnd``
  (state succeeded), finishes, and sends its partial result (``runResult``, its entry
  under ``sides`` marked ``partial``).
- **errors**: a side whose result is not ``succeeded`` (a module error under
  ``failOn: error``, its timeout, a host that ended) ends the attempt: the other sides are
  told ``runEnd`` (canceled, naming that side). The merged result's state is the first
  such side's, its reason prefixed with the side.
- **the merged result** (:func:`merge`): outputs, errors and log lines tagged with their
  ``side`` (``server:<runner id>``, ``page:<page id>``), handled counts and exits merged,
  and ``sides`` with each side's runner, state, reason, counts; recorded with
  ``book.finish`` as the server runner.
- **cancel / timeout** from the book reach every side (``cancelRun``); a page whose
  runner goes (its link detached) gives the attempt back (queued again, attempt + 1).

What is not kept: coordinations live in memory. A dispatcher that restarts mid-attempt
forgets them; the sides' later reports are answered ``lease_lost`` (they stop) and the
book's lease runs out: the run is retried.

Resource handling: :meth:`Coordinator.run` owns the tasks that tell sides to end or
stop; it runs in the dispatcher's nursery.

Error handling: a side that cannot be reached to end or stop is logged; a relay into a
side that is gone raises :class:`~fifoflow.runner.runs.errors.LeaseLost` to the sender
(its attempt stops; the book settles the run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..flows import Wire
from ..runner.rpc import LinkClosed, RemoteError
from ..runner.runs.errors import LeaseLost
from ..runner.runs.model import RunProgress, RunResult, RunState
from .calls import call_runner
from .errors import RunnerTimeout

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..runner.rpc import RpcPeer
    from ..runner.runs.book import RunBook

__all__ = ["Coordination", "Coordinator", "Side", "merge"]

log = logging.getLogger("fifoflow.runs.sides")

Key = tuple[str, int]


@attrs.define(eq=False)
class Side:
    #: "server:<runner id>" / "page:<page id>"
    name: str
    runner: str
    modules: frozenset[str]
    #: its last report (its entry under ``RunProgress.sides``)
    report: dict[str, Any] | None = None
    result: RunResult | None = None
    #: messages relayed out of it / delivered into it, counted here
    relayed: int = 0
    delivered: int = 0
    accepted: bool = False


@attrs.define(eq=False)
class Coordination:
    run_id: str
    attempt: int
    #: the book's worker (the server side's runner)
    server: str
    #: runner id -> side
    sides: dict[str, Side]
    #: (module, port) -> [(module, port)] of wires that cross sides
    routes: dict[tuple[str, str], list[tuple[str, str]]]
    #: every side accepted its part (relays wait for it)
    started: trio.Event = attrs.field(factory=trio.Event)
    aborted: bool = False
    inflight: int = 0
    ended: bool = False
    #: the first side that ended it otherwise than succeeded, and why
    end_state: RunState | None = None
    end_reason: str | None = None

    @property
    def key(self) -> Key:
        return (self.run_id, self.attempt)

    def side_of_module(self, module: str) -> Side | None:
        for side in self.sides.values():
            if module in side.modules:
                return side
        return None


def crossing_routes(
    document: Mapping[str, Any], where: Mapping[str, str]
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The wires whose ends are on different sides (``where``: module -> side runner)."""
    routes: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for text in document.get("wires") or ():
        w = Wire.parse(text)
        if where.get(w.src) != where.get(w.dst):
            routes.setdefault((w.src, w.src_port), []).append((w.dst, w.dst_port))
    return routes


class Coordinator:
    def __init__(
        self,
        book: RunBook,
        links: Mapping[str, RpcPeer],
        call_timeout: Callable[[], float],
    ) -> None:
        self.book = book
        self.links = links
        self.call_timeout = call_timeout
        self._active: dict[Key, Coordination] = {}
        self._nursery: trio.Nursery | None = None
        self._later: list[tuple[str, str, dict[str, Any]]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for call in self._later:
                    nursery.start_soon(self._call, *call)
                self._later.clear()
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # ------------------------------------------------------------------ the glue's calls

    def open(
        self,
        run_id: str,
        attempt: int,
        server: str,
        document: Mapping[str, Any],
        page_modules: set[str],
    ) -> Coordination:
        """A coordination for an attempt whose ``page_modules`` run in a page and the rest
        on ``server``; its sides are added as they accept (:meth:`add_side`)."""
        where = {
            m["id"]: ("page" if m["id"] in page_modules else "server")
            for m in document.get("modules") or ()
        }
        c = Coordination(run_id, attempt, server, {}, crossing_routes(document, where))
        self._active[c.key] = c
        return c

    def add_side(self, c: Coordination, side: Side) -> None:
        """A side accepted its part."""
        side.accepted = True
        c.sides[side.runner] = side

    def get(self, run_id: str, attempt: int) -> Coordination | None:
        return self._active.get((run_id, attempt))

    def side(self, runner_id: str, run_id: str, attempt: int) -> tuple[Coordination, Side] | None:
        c = self._active.get((run_id, attempt))
        if c is None:
            return None
        side = c.sides.get(runner_id)
        return None if side is None else (c, side)

    def is_side(self, runner_id: str, run_id: str, attempt: int) -> bool:
        """Whether the runner holds a side of that attempt other than the book's worker."""
        found = self.side(runner_id, run_id, attempt)
        return found is not None and found[0].server != runner_id

    def abort(self, c: Coordination) -> None:
        """The offer did not go through: forget it; relays waiting for it fail."""
        c.aborted = True
        c.started.set()
        self._active.pop(c.key, None)

    # ------------------------------------------------------------------ sides -> here

    async def relay(
        self, runner_id: str, run_id: str, attempt: int, module: str, port: str, msgs: list[Any]
    ) -> None:
        found = self.side(runner_id, run_id, attempt)
        if found is None:
            raise LeaseLost(f"attempt {attempt} of run {run_id} has no side on this runner")
        c, side = found
        if module not in side.modules:
            raise LeaseLost(f"module {module!r} is not on this side of run {run_id}")
        await c.started.wait()
        if c.aborted or c.end_state is not None:
            raise LeaseLost(f"attempt {attempt} of run {run_id} ended")
        c.inflight += 1
        try:
            for dst, dst_port in c.routes.get((module, port), ()):
                target = c.side_of_module(dst)
                peer = self.links.get(target.runner) if target is not None else None
                if target is None or peer is None:
                    raise LeaseLost(f"the side of module {dst!r} of run {run_id} is gone")
                # no deadline: the data path waits for a slow side (backpressure)
                await peer.call(
                    "runDeliver",
                    runId=run_id,
                    attempt=attempt,
                    module=dst,
                    port=dst_port,
                    msgs=msgs,
                )
                target.delivered += len(msgs)
            side.relayed += len(msgs)
        finally:
            c.inflight -= 1
        self._check(c)

    def progress(self, runner_id: str, p: RunProgress) -> None:
        """A side's report: renew the book's lease with every side's progress; end the
        attempt when the handshake says it is over. :class:`LeaseLost` when the book
        says the attempt no longer counts (every side is told to stop)."""
        found = self.side(runner_id, p.runId, p.attempt)
        if found is None:
            raise LeaseLost(f"attempt {p.attempt} of run {p.runId} has no side on this runner")
        c, side = found
        side.report = dict(p.sides.get(side.name) or {})
        try:
            self.book.progress(c.server, self._merged_progress(c))
        except LeaseLost:
            self.stop(c, "the attempt no longer counts")
            raise
        self._check(c)

    def result(self, runner_id: str, r: RunResult) -> bool:
        """A side's partial result; once every side sent one, the merged result goes to
        the book. True: kept (or recorded)."""
        found = self.side(runner_id, r.runId, r.attempt)
        if found is None:
            raise LeaseLost(f"attempt {r.attempt} of run {r.runId} has no side on this runner")
        c, side = found
        if side.result is None:
            side.result = r
        if r.state is not RunState.SUCCEEDED and c.end_state is None:
            c.end_state = r.state
            c.end_reason = f"{side.name}: {r.reason or r.state}"
            self._end(c, RunState.CANCELED, f"the {side.name} side ended: {r.reason or r.state}")
        if all(s.result is not None for s in c.sides.values()):
            self._active.pop(c.key, None)
            merged = merge(c)
            try:
                self.book.finish(c.server, merged)
            except LeaseLost:
                log.info("run %s attempt %d: merged result does not count", *c.key)
        return True

    # ------------------------------------------------------------------ the book -> sides

    def stop(self, c: Coordination, reason: str) -> None:
        """Cancel or timeout from the book: every side stops (``cancelRun``); their
        results no longer count."""
        self._active.pop(c.key, None)
        c.ended = True
        c.aborted = True
        c.started.set()
        for side in c.sides.values():
            self._spawn(
                side.runner,
                "cancelRun",
                {"runId": c.run_id, "attempt": c.attempt, "reason": reason},
            )

    def runner_gone(self, runner_id: str) -> list[Coordination]:
        """A runner's link went: the coordinations where it is a page side (not the
        book's worker), which the caller gives back."""
        gone = [c for c in self._active.values() if runner_id in c.sides and c.server != runner_id]
        for c in gone:
            self.stop(c, f"the page side ({c.sides[runner_id].name}) went away")
        return gone

    # ------------------------------------------------------------------ helpers

    def _merged_progress(self, c: Coordination) -> RunProgress:
        handled: dict[str, int] = {}
        errors = outputs = 0
        sides: dict[str, dict[str, Any]] = {}
        for side in c.sides.values():
            report = side.report or {}
            handled.update(report.get("handled") or {})
            errors += int(report.get("errors") or 0)
            outputs += int(report.get("outputs") or 0)
            sides[side.name] = {
                "runner": side.runner,
                "accepted": side.accepted,
                "idle": bool(report.get("idle")),
                "handled": dict(report.get("handled") or {}),
                "errors": int(report.get("errors") or 0),
                "outputs": int(report.get("outputs") or 0),
                "sent": side.relayed,
                "received": side.delivered,
                "state": str(report.get("state") or "starting"),
            }
        return RunProgress(
            runId=c.run_id,
            attempt=c.attempt,
            handled=handled,
            errors=errors,
            outputs=outputs,
            sides=sides,
        )

    def _check(self, c: Coordination) -> None:
        """The counted handshake (module docstring)."""
        if c.ended or not c.started.is_set() or c.aborted or c.inflight:
            return
        for side in c.sides.values():
            report = side.report
            if not side.accepted or report is None or not report.get("idle"):
                return
            if int(report.get("received") or 0) != side.delivered:
                return
        self._end(c, RunState.SUCCEEDED, None)

    def _end(self, c: Coordination, state: RunState, reason: str | None) -> None:
        if c.ended:
            return
        c.ended = True
        for side in c.sides.values():
            if side.result is None:
                self._spawn(
                    side.runner,
                    "runEnd",
                    {
                        "runId": c.run_id,
                        "attempt": c.attempt,
                        "state": str(state),
                        "reason": reason,
                    },
                )

    def _spawn(self, runner_id: str, method: str, params: dict[str, Any]) -> None:
        if self._nursery is None:
            self._later.append((runner_id, method, params))
        else:
            self._nursery.start_soon(self._call, runner_id, method, params)

    async def _call(self, runner_id: str, method: str, params: dict[str, Any]) -> None:
        peer = self.links.get(runner_id)
        if peer is None:
            return
        try:
            await call_runner(peer, runner_id, self.call_timeout(), method, **params)
        except (RemoteError, RunnerTimeout, LinkClosed) as exc:
            log.warning("%s to %s for run %s failed: %s", method, runner_id, params["runId"], exc)


def merge(c: Coordination) -> RunResult:
    """One result from the sides' results: the first side that did not succeed decides
    the state (its reason prefixed with the side); everything else is tagged with its
    side and put together."""
    results = [(side, side.result) for side in c.sides.values() if side.result is not None]
    outputs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    handled: dict[str, int] = {}
    exits: dict[str, dict[str, Any]] = {}
    sides: dict[str, dict[str, Any]] = {}
    for side, r in results:
        assert r is not None
        outputs += [{**o, "side": side.name} for o in r.outputs]
        errors += [{**e, "side": side.name} for e in r.errors]
        logs += [{**line, "side": side.name} for line in r.logs]
        handled.update(r.handled)
        exits.update(r.exits)
        sides[side.name] = {
            "runner": side.runner,
            "state": str(r.state),
            "reason": r.reason,
            "handled": dict(r.handled),
            "errors": r.errorsTotal,
            "outputs": r.outputsTotal,
            "sent": side.relayed,
            "received": side.delivered,
        }
    state = c.end_state or RunState.SUCCEEDED
    reason = c.end_reason
    errors.sort(key=lambda e: e.get("time") or 0.0)
    logs.sort(key=lambda line: line.get("time") or 0.0)
    return RunResult(
        runId=c.run_id,
        attempt=c.attempt,
        state=state,
        reason=reason,
        outputs=outputs,
        outputsTotal=sum(r.outputsTotal for _, r in results if r is not None),
        outputsSpilled=any(r.outputsSpilled for _, r in results if r is not None),
        errors=errors,
        errorsTotal=sum(r.errorsTotal for _, r in results if r is not None),
        exits=exits,
        handled=handled,
        logs=logs,
        startedAt=min((r.startedAt for _, r in results if r is not None), default=0.0),
        finishedAt=max((r.finishedAt for _, r in results if r is not None), default=0.0),
        sides=sides,
    )
