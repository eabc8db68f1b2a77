"""The run book: the queue of runs and their lifecycle (``RUNS.md``), for the dispatcher
(its workers are the linked runners) and for a runner served alone (its one worker is
its own executor).

The book decides with the pure :mod:`.machine` and writes every transition to its
:class:`~.store.RunStore` (one transaction each) before anyone hears of it. Active runs
(queued, running) are also kept in memory; ended ones are read from the store.

Scheduling (:meth:`RunBook.run`): queued runs are offered by priority (higher first)
then age, each to a worker that has room (:meth:`Worker.free`, when it has one, minus
the offers it has not answered yet), whose :meth:`Worker.fits` is None and that has not
refused that run lately; among those, the one with the most room. A run is ``running``
from the offer on (written first: a progress that overtakes the offer's answer counts,
and a book that restarts mid-offer finds the attempt). An offer not answered in
``offer_deadline`` seconds counts as a refusal (and the worker is told to drop the
attempt, in case it took it late). Lease expiry and the book's own timeout are checked
when the nearest deadline comes, at least every :data:`TICK` seconds, and at every
:meth:`RunBook.kick`.

Worker -> book calls (:meth:`~RunBook.progress`, :meth:`~RunBook.finish`,
:meth:`~RunBook.reconcile`, :meth:`~RunBook.give_back`) are plain calls: they never
block. A report from an attempt that no longer holds its run raises
:class:`~.errors.LeaseLost` (the worker stops that attempt and drops it).

Events: every transition is published on the :class:`~..events.EventHub` (kind ``run``),
every renewal too (kind ``run-progress``).

Resource handling: the book owns no connection (the store is the caller's); its tasks
(offers awaiting an answer, cancels told to workers) live in :meth:`run`'s nursery and
end with it.

Error handling: a worker whose ``offer`` fails with anything else than ``RunRefused``
(a broken link, ...) is taken as refusing, with that error as the reason; a worker whose
``cancel`` fails is logged (its attempt no longer counts either way).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import attrs
import trio

from ...flows.converter import make_converter
from ..events import EventKind
from . import machine
from .errors import LeaseLost, RunNotFound, RunRefused, RunStateError
from .machine import REFUSAL_HOLD, EventRow, RunRecord
from .model import (
    ACTIVE,
    TERMINAL,
    RunOffer,
    RunProgress,
    RunResult,
    RunState,
    RunSubmission,
    Target,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from ..events import EventHub
    from .store import RunStore

__all__ = ["OFFER_DEADLINE", "TICK", "HeldRun", "Resolved", "Resolver", "RunBook", "Worker"]

log = logging.getLogger("fifoflow.runs")

#: a worker that does not answer an offer within this many seconds refuses it
OFFER_DEADLINE = 10.0
#: the timer checks leases and timeouts at least this often (seconds)
TICK = 0.5

_CONVERTER = make_converter()

#: (flow id, revision, the flow document, the resolved inputs)
Resolved = tuple[str, int | None, dict[str, Any], list[Target]]
#: the glue's: a submission -> what to run; raises FlowError / FlowNotFound / RevisionConflict
Resolver = Callable[[RunSubmission], Resolved]


class Worker(Protocol):
    """What the book offers runs to (a linked runner, a runner's own executor, a page).

    ``free() -> int`` is optional: runs it can still take. With it, the book offers only
    while ``free()`` minus the offers not answered yet is above 0; without it, the book
    has one offer at a time in flight to that worker, which refuses when it is full."""

    id: str

    def fits(self, run: dict[str, Any]) -> str | None:
        """None: it can take ``run`` (the run's view without events, plus ``document``:
        the flow, for placement); else why not."""
        ...

    async def offer(self, offer: RunOffer) -> None:
        """Take the attempt (returns: accepted) or raise :class:`RunRefused`."""
        ...

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        """Stop that attempt (it no longer counts)."""
        ...


class HeldRun(TypedDict):
    """What a worker says it holds when it (re)connects."""

    runId: str
    attempt: int
    finished: bool


class RunBook:
    """The queue of runs: submit, offer, leases, retries, timeouts, cancel, results.

    ``clock`` gives the times written in records and events, and the deadlines
    (``time.time`` by default; tests pass ``trio.current_time`` with a mock clock).
    ``spill(run_id, attempt)`` finds the file a worker spilled a run's outputs to (the
    local glue knows its executor's; None: no file is reachable from here)."""

    def __init__(
        self,
        store: RunStore,
        resolve: Resolver,
        *,
        hub: EventHub | None = None,
        clock: Callable[[], float] = time.time,
        spill: Callable[[str, int], Path | None] | None = None,
        offer_deadline: float = OFFER_DEADLINE,
        refusal_hold: float = REFUSAL_HOLD,
    ) -> None:
        self._store = store
        self._resolve = resolve
        self._hub = hub
        self._clock = clock
        self._spill = spill
        self._offer_deadline = offer_deadline
        self._refusal_hold = refusal_hold
        self._workers: dict[str, Worker] = {}
        #: worker id -> offers sent and not answered yet: (run id, attempt)
        self._pending: dict[str, set[tuple[str, int]]] = {}
        self._waiters: dict[str, trio.Event] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: cancels to tell workers once run() has a nursery
        self._later: list[tuple[str, str, int, str]] = []
        self._active: dict[str, RunRecord] = {}
        # A book opened on an existing store resumes: queued runs are offered again,
        # running ones keep their attempt and get a full lease from now, so that their
        # worker has time to reconnect and renew (else the lease expires as usual).
        now = clock()
        for rec in store.queued():
            self._active[rec.id] = rec
        for rec in store.running():
            if rec.worker is not None and (rec.leaseExpires or 0.0) < now + rec.lease:
                rec, _ = machine.renewed(rec, rec.worker, rec.attempt, now)
                store.update(rec)
            self._active[rec.id] = rec

    # ------------------------------------------------------------------ workers

    def add_worker(self, worker: Worker) -> None:
        """A worker joins (a runner linked); it is offered runs from now on."""
        self._workers[worker.id] = worker
        self._pending.setdefault(worker.id, set())
        self.kick()

    def remove_worker(self, worker_id: str) -> None:
        """A worker leaves (unlinked). Its attempts keep their leases: they expire unless
        it comes back and renews them."""
        self._workers.pop(worker_id, None)

    def reconsider(self, which: Callable[[dict[str, Any]], bool]) -> None:
        """Something a refusal depended on changed (a page connected): the queued runs
        ``which`` selects (given the run's document) forget the workers that refused
        them lately, and are offered again now."""
        for rec in list(self._active.values()):
            if rec.state is RunState.QUEUED and rec.leftOut and which(rec.document):
                new = attrs.evolve(rec, leftOut={})
                self._store.update(new)
                self._active[rec.id] = new
        self.kick()

    def kick(self) -> None:
        """Something changed (a worker, its room, a run): offer and check again now."""
        self._wake.set()

    # ------------------------------------------------------------------ the user's calls

    def submit(self, sub: RunSubmission) -> dict[str, Any]:
        """Queue a run; its view. With a ``key`` already used, the view of that run (the
        submission is not resolved again). Raises what the resolver raises."""
        if sub.key is not None:
            existing = self._store.by_key(sub.key)
            if existing is not None:
                return self._view(existing)
        flow, revision, document, targets = self._resolve(sub)
        run_id = "r" + secrets.token_hex(8)
        rec, rows = machine.submitted(run_id, sub, flow, revision, document, targets, self._clock())
        self._store.insert(rec, rows)
        self._active[rec.id] = rec
        self._publish(rec, rows)
        self.kick()
        return self._view(rec, events=rows)

    def get(self, run_id: str) -> dict[str, Any]:
        """The run's view, events included; :class:`RunNotFound`."""
        return self._view(self._record(run_id))

    def list(
        self, *, state: RunState | None = None, flow: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Views (without ``events``), newest first."""
        return [
            self._view(rec, events=False)
            for rec in self._store.list(state=state, flow=flow, limit=limit)
        ]

    def cancel(self, run_id: str, reason: str = "canceled by the user") -> dict[str, Any]:
        """Cancel a queued or running run at once (a running one's worker is told to stop
        its attempt, in the background); :class:`RunStateError` if it already ended."""
        rec = self._record(run_id)
        new, rows = machine.cancel(rec, reason, self._clock())
        self._apply(new, rows)
        if rec.state is RunState.RUNNING and rec.worker is not None:
            self._tell_cancel(rec.worker, rec.id, rec.attempt, reason)
            self.kick()
        return self._view(new)

    def result(self, run_id: str) -> dict[str, Any]:
        """The run's :class:`RunResult` as a dict; :class:`RunStateError` until it ended.
        A run that ended without a worker's result (canceled, timed out by the book,
        failed at its last lease) has one made of its state and reason."""
        return _CONVERTER.unstructure(self._result(self._ended(run_id)))

    def outputs_path(self, run_id: str) -> Path | None:
        """The file with every output of the run as JSON lines, when the worker spilled
        them and the file is reachable from here; else None."""
        rec = self._ended(run_id)
        result = self._store.result(rec.id)
        if result is None or not result.outputsSpilled or self._spill is None:
            return None
        path = self._spill(rec.id, result.attempt)
        return path if path is not None and path.exists() else None

    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The result's log lines (the last ``limit``); [] while the run has no result."""
        rec = self._record(run_id)
        if rec.state not in TERMINAL:
            return []
        result = self._store.result(rec.id)
        lines = list(result.logs) if result is not None else []
        if limit is None:
            return lines
        return lines[-limit:] if limit > 0 else []

    # the timeout is the API's (a bounded long poll), not a cancel scope of the caller
    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """The run's view once it ended, or after ``timeout`` seconds (then its state is
        still active: the caller looks)."""
        rec = self._record(run_id)
        if rec.state not in TERMINAL:
            ended = self._waiters.setdefault(run_id, trio.Event())
            with trio.move_on_after(math.inf if timeout is None else timeout):
                await ended.wait()
        return self.get(run_id)

    # ------------------------------------------------------------------ worker -> book

    def progress(self, worker_id: str, p: RunProgress) -> None:
        """A renewal with progress; :class:`LeaseLost` when that attempt does not hold
        its run."""
        rec = self._reported(p.runId, worker_id, p.attempt)
        new, _ = machine.progress(rec, worker_id, p, self._clock())
        self._apply(new, [])
        if self._hub is not None:
            self._hub.publish(
                {
                    "kind": EventKind.RUN_PROGRESS,
                    "run": rec.id,
                    "flow": rec.flow,
                    "attempt": p.attempt,
                    "worker": worker_id,
                    "handled": dict(p.handled),
                    "errors": p.errors,
                    "outputs": p.outputs,
                    "sides": dict(p.sides),
                }
            )

    def finish(self, worker_id: str, r: RunResult) -> bool:
        """An attempt's result. True: recorded now (the run ended); False: it already
        was (a re-send). :class:`LeaseLost`: the attempt does not count (drop it)."""
        rec = self._reported(r.runId, worker_id, r.attempt)
        new, rows = machine.finished(rec, worker_id, r, self._clock())
        if not rows:
            return False
        self._apply(new, rows, result=r)
        self.kick()
        return True

    def give_back(self, worker_id: str, run_id: str, attempt: int, reason: str) -> None:
        """The worker gives its attempt back (draining, refused after accepting, a host
        crash): queued again with the next attempt, or failed at the last one."""
        rec = self._reported(run_id, worker_id, attempt)
        new, rows = machine.given_back(rec, worker_id, attempt, reason, self._clock())
        self._apply(new, rows)
        self.kick()

    def reconcile(self, worker_id: str, held: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
        """A worker (re)connects with what it holds (:class:`HeldRun`). Unfinished
        attempts that still hold their run are renewed; those that do not are answered
        (the worker stops them). Finished ones are left to the worker, which re-sends
        their results with :meth:`finish`. Attempts the book thinks the worker runs and
        that it does not hold are given back (the next attempt is queued)."""
        now = self._clock()
        stop: list[tuple[str, int]] = []
        kept: set[tuple[str, int]] = set()
        for h in held:
            run_id, attempt = str(h["runId"]), int(h["attempt"])
            kept.add((run_id, attempt))
            if h.get("finished"):
                continue
            rec = self._active.get(run_id)
            if rec is not None and machine.holds(rec, worker_id, attempt):
                new, _ = machine.renewed(rec, worker_id, attempt, now)
                self._apply(new, [])
            else:
                stop.append((run_id, attempt))
        for rec in list(self._active.values()):
            if (
                rec.state is RunState.RUNNING
                and rec.worker == worker_id
                and (rec.id, rec.attempt) not in kept
                and (rec.id, rec.attempt) not in self._pending.get(worker_id, ())
            ):
                new, rows = machine.given_back(
                    rec, worker_id, rec.attempt, "not held by the worker when it reconnected", now
                )
                self._apply(new, rows)
        self.kick()
        return stop

    # ------------------------------------------------------------------ the scheduler

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Offer queued runs, expire leases, end runs past their timeout; until
        cancelled. Owns the tasks that await offers and tell cancels."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for note in self._later:
                    nursery.start_soon(self._cancel_task, *note)
                self._later.clear()
                task_status.started()
                while True:
                    self._wake = trio.Event()
                    now = self._clock()
                    self._sweep(now)
                    self._offer_queued(now, nursery)
                    with trio.move_on_after(self._next_wait(now)):
                        await self._wake.wait()
            finally:
                self._nursery = None

    def _sweep(self, now: float) -> None:
        for rec in list(self._active.values()):
            if rec.state is not RunState.RUNNING:
                continue
            out = machine.tick(rec, now)
            if out is None:
                continue
            new, rows = out
            self._apply(new, rows)
            if rec.worker is not None:
                self._tell_cancel(
                    rec.worker, rec.id, rec.attempt, rows[-1].reason or str(new.state)
                )

    def _next_wait(self, now: float) -> float:
        nearest = now + TICK
        for rec in self._active.values():
            at = machine.deadline(rec)
            if at is not None and at < nearest:
                nearest = at
        return max(0.0, nearest - now)

    def _room(self, worker: Worker) -> int:
        pending = len(self._pending.get(worker.id, ()))
        free = getattr(worker, "free", None)
        if free is None:
            return 1 - pending
        return int(free()) - pending

    def _offer_queued(self, now: float, nursery: trio.Nursery) -> None:
        room = {wid: self._room(w) for wid, w in self._workers.items()}
        if not any(n > 0 for n in room.values()):
            return
        queued = sorted(
            (rec for rec in self._active.values() if rec.state is RunState.QUEUED),
            key=lambda rec: (-rec.priority, rec.createdAt),
        )
        for rec in queued:
            best: str | None = None
            placement: dict[str, Any] | None = None
            for wid, n in room.items():
                if n <= 0 or machine.is_left_out(rec, wid, now):
                    continue
                if best is not None and n <= room[best]:
                    continue
                if placement is None:
                    placement = {**self._view(rec, events=False), "document": rec.document}
                if self._workers[wid].fits(placement) is None:
                    best = wid
            if best is None:
                continue
            new, rows = machine.offered(rec, best, now)
            self._apply(new, rows)
            room[best] -= 1
            self._pending.setdefault(best, set()).add((new.id, new.attempt))
            nursery.start_soon(self._offer_task, self._workers[best], new)
            if not any(n > 0 for n in room.values()):
                return

    async def _offer_task(self, worker: Worker, rec: RunRecord) -> None:
        offer = RunOffer(
            runId=rec.id,
            attempt=rec.attempt,
            flow=rec.document,
            inputs=list(rec.targets),
            timeout=rec.timeout,
            lease=rec.lease,
            failOn=rec.failOn,
        )
        reason: str | None = None
        silent = False
        try:
            with trio.move_on_after(self._offer_deadline) as scope:
                await worker.offer(offer)
            if scope.cancelled_caught:
                reason = f"no answer to the offer in {self._offer_deadline:g} s"
                silent = True
        except RunRefused as exc:
            reason = str(exc) or "refused"
        except Exception as exc:  # a worker that cannot be asked refuses (task boundary)
            log.warning(
                "offer of run %s attempt %d to %s failed: %r", rec.id, rec.attempt, worker.id, exc
            )
            reason = f"the offer failed: {exc}"
        finally:
            self._pending.get(worker.id, set()).discard((rec.id, rec.attempt))
            self.kick()
        if reason is None:
            log.debug("run %s attempt %d accepted by %s", rec.id, rec.attempt, worker.id)
            return
        cur = self._active.get(rec.id)
        if cur is None or not machine.holds(cur, worker.id, rec.attempt):
            return  # canceled, given back or ended meanwhile: nothing to undo
        new, rows = machine.refused(
            cur, worker.id, rec.attempt, reason, self._clock(), self._refusal_hold
        )
        self._apply(new, rows)
        if silent:
            self._tell_cancel(worker.id, rec.id, rec.attempt, reason)

    def _tell_cancel(self, worker_id: str, run_id: str, attempt: int, reason: str) -> None:
        if self._nursery is None:
            self._later.append((worker_id, run_id, attempt, reason))
        else:
            self._nursery.start_soon(self._cancel_task, worker_id, run_id, attempt, reason)

    async def _cancel_task(self, worker_id: str, run_id: str, attempt: int, reason: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return  # gone: its attempt's lease is over for it anyway
        try:
            with trio.move_on_after(self._offer_deadline):
                await worker.cancel(run_id, attempt, reason)
        except Exception as exc:  # task boundary: the attempt no longer counts either way
            log.warning(
                "telling %s to stop run %s attempt %d failed: %r", worker_id, run_id, attempt, exc
            )

    # ------------------------------------------------------------------ helpers

    def offering(self, worker_id: str) -> int:
        """Offers made to the worker and not answered yet (they are ``running`` in the
        store already, see ``machine.offered``)."""
        return len(self._pending.get(worker_id, ()))

    def statistics(self) -> dict[str, int]:
        queued = sum(1 for r in self._active.values() if r.state is RunState.QUEUED)
        return {
            "queued": queued,
            "running": len(self._active) - queued,
            "workers": len(self._workers),
            "offering": sum(len(p) for p in self._pending.values()),
        }

    def _record(self, run_id: str) -> RunRecord:
        rec = self._active.get(run_id)
        if rec is None:
            rec = self._store.get(run_id)
        if rec is None:
            raise RunNotFound(f"no run {run_id!r}")
        return rec

    def _ended(self, run_id: str) -> RunRecord:
        rec = self._record(run_id)
        if rec.state not in TERMINAL:
            raise RunStateError(f"run {run_id} is {rec.state}: it has no result until it ended")
        return rec

    def _reported(self, run_id: str, worker_id: str, attempt: int) -> RunRecord:
        rec = self._active.get(run_id) or self._store.get(run_id)
        if rec is None:
            raise LeaseLost(f"no run {run_id!r}: attempt {attempt} on {worker_id} does not count")
        return rec

    def _result(self, rec: RunRecord) -> RunResult:
        result = self._store.result(rec.id)
        if result is not None:
            return result
        started = rec.attempts[-1].startedAt if rec.attempts else 0.0
        return RunResult(
            runId=rec.id,
            attempt=rec.attempt,
            state=rec.state,
            reason=rec.reason,
            handled=dict(rec.progress.get("handled", {})),
            startedAt=started,
            finishedAt=rec.endedAt or 0.0,
        )

    def _apply(self, rec: RunRecord, rows: list[EventRow], result: RunResult | None = None) -> None:
        self._store.update(rec, rows, result)
        if rec.state in ACTIVE:
            self._active[rec.id] = rec
        else:
            self._active.pop(rec.id, None)
            ended = self._waiters.pop(rec.id, None)
            if ended is not None:
                ended.set()
        self._publish(rec, rows)

    def _publish(self, rec: RunRecord, rows: list[EventRow]) -> None:
        for row in rows:
            log.info(
                "run %s: %s (attempt %d%s)",
                row.run,
                row.state,
                row.attempt,
                f", {row.reason}" if row.reason else "",
                extra={
                    "event": str(row.state),
                    "run": row.run,
                    "flow": rec.flow,
                    "attempt": row.attempt,
                    "worker": row.worker,
                    "reason": row.reason,
                },
            )
        if self._hub is None:
            return
        for row in rows:
            self._hub.publish(
                {
                    "kind": EventKind.RUN,
                    "run": row.run,
                    "flow": rec.flow,
                    "state": str(row.state),
                    "attempt": row.attempt,
                    "worker": row.worker,
                    "reason": row.reason,
                    "time": row.time,
                }
            )

    def _view(self, rec: RunRecord, events: bool | list[EventRow] = True) -> dict[str, Any]:
        """The run's view (``RUNS.md``); ``events``: read them from the store (True),
        these rows (a new run's), or none (False: no ``events`` key)."""
        view: dict[str, Any] = {
            "id": rec.id,
            "flow": rec.flow,
            "revision": rec.revision,
            "state": str(rec.state),
            "attempt": rec.attempt,
            "maxAttempts": rec.maxAttempts,
            "worker": rec.worker,
            "priority": rec.priority,
            "labels": dict(rec.labels),
            "failOn": str(rec.failOn),
            "timeout": rec.timeout,
            "lease": rec.lease,
            "key": rec.key,
            "createdAt": rec.createdAt,
            "startedAt": rec.startedAt,
            "endedAt": rec.endedAt,
            "leaseExpires": rec.leaseExpires,
            "reason": rec.reason,
            "progress": dict(rec.progress),
            "attempts": [attrs.asdict(a) for a in rec.attempts],
        }
        if events is True:
            view["events"] = self._store.events(rec.id)
        elif isinstance(events, list):
            view["events"] = [
                {
                    "seq": i + 1,
                    "time": row.time,
                    "state": str(row.state),
                    "attempt": row.attempt,
                    "worker": row.worker,
                    "reason": row.reason,
                }
                for i, row in enumerate(events)
            ]
        return view
