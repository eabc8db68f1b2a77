"""The runs' state machine (``RUNS.md``): pure functions from (record, event, now) to
(new record, event rows). No I/O, no trio; the book stores what they return and the
tests drive them with tables and a fake clock.

A :class:`RunRecord` is everything the book knows of one run. ``attempt`` counts the
attempts started (0 while none was); the next offer is ``attempt + 1``. A run is
``running`` from the moment it is offered (the book writes that before it asks the
worker, so an early progress or a book restart during the offer finds the attempt): a
refusal takes it back to ``queued`` and the attempt does not count.

Every transition returns the rows to append to the run's events (:class:`EventRow`);
progress renewals return none (they are not transitions). A call that does not fit raises:

- :class:`~.errors.LeaseLost`: the sender's attempt no longer holds the run (progress,
  result, give-back or refusal of a stale attempt; never recorded);
- :class:`~.errors.RunStateError`: the run's state does not allow it (cancel of an ended
  run, offer of a running one, a non-terminal result, a lease that has not expired).
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import LeaseLost, RunStateError
from .model import TERMINAL, FailOn, RunProgress, RunResult, RunState, RunSubmission, Target

__all__ = [
    "AttemptRecord",
    "EventRow",
    "RunRecord",
    "cancel",
    "deadline",
    "finished",
    "given_back",
    "holds",
    "is_left_out",
    "lease_expired",
    "offered",
    "progress",
    "refused",
    "renewed",
    "submitted",
    "tick",
    "timed_out",
]

#: how long a worker that refused a run is left out of that run's offers (seconds)
REFUSAL_HOLD = 30.0


@attrs.frozen
class AttemptRecord:
    """One attempt: who ran it, when, and why it ended (None while it runs, and for the
    attempt whose result was recorded when that result gave none)."""

    attempt: int
    worker: str
    startedAt: float
    endedAt: float | None = None
    reason: str | None = None


@attrs.frozen
class EventRow:
    """One transition, as stored in ``run_events`` (the store numbers them: ``seq``)."""

    run: str
    time: float
    state: RunState
    attempt: int
    worker: str | None
    reason: str | None


def _empty_progress() -> dict[str, Any]:
    return {"handled": {}, "errors": 0, "outputs": 0, "sides": {}}


@attrs.frozen
class RunRecord:
    """A run as the book keeps it: what to run (resolved), its options (those of the
    :class:`~.model.RunSubmission`), where it stands."""

    id: str
    flow: str
    revision: int | None
    document: dict[str, Any]
    targets: list[Target]
    createdAt: float
    timeout: float | None = None
    maxAttempts: int = 3
    lease: float = 30.0
    labels: dict[str, str] = attrs.field(factory=dict)
    priority: int = 0
    failOn: FailOn = FailOn.ERROR
    key: str | None = None
    state: RunState = RunState.QUEUED
    attempt: int = 0
    worker: str | None = None
    leaseExpires: float | None = None
    #: when the first attempt started
    startedAt: float | None = None
    endedAt: float | None = None
    reason: str | None = None
    attempts: list[AttemptRecord] = attrs.field(factory=list)
    #: the last renewal's progress (of the current or last attempt)
    progress: dict[str, Any] = attrs.field(factory=_empty_progress)
    #: worker id -> until when it is left out of this run's offers (it refused)
    leftOut: dict[str, float] = attrs.field(factory=dict)
    #: the attempt whose result was recorded (None: none was; the run ended otherwise)
    resultAttempt: int | None = None


def _row(rec: RunRecord, now: float, reason: str | None) -> EventRow:
    return EventRow(rec.id, now, rec.state, rec.attempt, rec.worker, reason)


def holds(rec: RunRecord, worker: str, attempt: int) -> bool:
    """Does ``worker``'s ``attempt`` hold the run (the only one whose reports count)?"""
    return rec.state is RunState.RUNNING and rec.attempt == attempt and rec.worker == worker


def _check_holds(rec: RunRecord, worker: str, attempt: int) -> None:
    if not holds(rec, worker, attempt):
        if rec.state is RunState.RUNNING:
            now_held = f"attempt {rec.attempt} on {rec.worker} holds it"
        else:
            now_held = f"it is {rec.state}"
        raise LeaseLost(
            f"run {rec.id}: attempt {attempt} on {worker} no longer counts ({now_held})"
        )


def _end_attempt(rec: RunRecord, now: float, reason: str | None) -> list[AttemptRecord]:
    last = attrs.evolve(rec.attempts[-1], endedAt=now, reason=reason)
    return [*rec.attempts[:-1], last]


# ---------------------------------------------------------------------- transitions


def submitted(
    run_id: str,
    sub: RunSubmission,
    flow: str,
    revision: int | None,
    document: dict[str, Any],
    targets: list[Target],
    now: float,
) -> tuple[RunRecord, list[EventRow]]:
    """A new run, queued."""
    rec = RunRecord(
        id=run_id,
        flow=flow,
        revision=revision,
        document=document,
        targets=list(targets),
        createdAt=now,
        timeout=sub.timeout,
        maxAttempts=sub.maxAttempts,
        lease=sub.lease,
        labels=dict(sub.labels),
        priority=sub.priority,
        failOn=sub.failOn,
        key=sub.key,
    )
    return rec, [_row(rec, now, "submitted")]


def is_left_out(rec: RunRecord, worker: str, now: float) -> bool:
    """Did ``worker`` refuse this run recently (it is not offered it again yet)?"""
    until = rec.leftOut.get(worker)
    return until is not None and now < until


def offered(rec: RunRecord, worker: str, now: float) -> tuple[RunRecord, list[EventRow]]:
    """The run is offered to ``worker`` as attempt ``rec.attempt + 1``: it runs from now,
    holding a lease until ``now + lease``. Only a queued run is offered."""
    if rec.state is not RunState.QUEUED:
        raise RunStateError(f"run {rec.id} is {rec.state}: only a queued run is offered")
    attempt = rec.attempt + 1
    new = attrs.evolve(
        rec,
        state=RunState.RUNNING,
        attempt=attempt,
        worker=worker,
        leaseExpires=now + rec.lease,
        startedAt=rec.startedAt if rec.startedAt is not None else now,
        reason=None,
        attempts=[*rec.attempts, AttemptRecord(attempt, worker, now)],
        progress=_empty_progress(),
        leftOut={w: t for w, t in rec.leftOut.items() if t > now},
    )
    return new, [_row(new, now, f"offered to {worker}")]


def refused(
    rec: RunRecord, worker: str, attempt: int, reason: str, now: float, hold: float = REFUSAL_HOLD
) -> tuple[RunRecord, list[EventRow]]:
    """``worker`` refused the offer of ``attempt``: the run is queued again, the attempt
    does not count, and ``worker`` is left out of this run's offers for ``hold`` seconds."""
    _check_holds(rec, worker, attempt)
    new = attrs.evolve(
        rec,
        state=RunState.QUEUED,
        attempt=attempt - 1,
        worker=None,
        leaseExpires=None,
        startedAt=rec.startedAt if len(rec.attempts) > 1 else None,
        attempts=rec.attempts[:-1],
        leftOut={**rec.leftOut, worker: now + hold},
    )
    return new, [EventRow(rec.id, now, RunState.QUEUED, attempt, worker, f"refused: {reason}")]


def progress(
    rec: RunRecord, worker: str, p: RunProgress, now: float
) -> tuple[RunRecord, list[EventRow]]:
    """A renewal from the attempt that holds the run: its lease runs until ``now + lease``
    and its progress is kept. No event row."""
    _check_holds(rec, worker, p.attempt)
    new = attrs.evolve(
        rec,
        leaseExpires=now + rec.lease,
        progress={
            "handled": dict(p.handled),
            "errors": p.errors,
            "outputs": p.outputs,
            "sides": dict(p.sides),
        },
    )
    return new, []


def renewed(
    rec: RunRecord, worker: str, attempt: int, now: float
) -> tuple[RunRecord, list[EventRow]]:
    """A renewal without progress (a worker that reconnects and still runs the attempt)."""
    _check_holds(rec, worker, attempt)
    return attrs.evolve(rec, leaseExpires=now + rec.lease), []


def finished(
    rec: RunRecord, worker: str, result: RunResult, now: float
) -> tuple[RunRecord, list[EventRow]]:
    """The attempt's result. Recorded only from the attempt that holds the run; the run
    takes the result's (terminal) state. The same attempt's result sent again answers
    no rows (already recorded); any other attempt's raises :class:`LeaseLost`."""
    if result.state not in TERMINAL:
        raise RunStateError(f"run {rec.id}: a result's state must be terminal, not {result.state}")
    if (
        rec.state in TERMINAL
        and rec.resultAttempt == result.attempt
        and rec.attempt == result.attempt
        and rec.worker == worker
    ):
        return rec, []
    _check_holds(rec, worker, result.attempt)
    progress = {
        "handled": dict(result.handled),
        "errors": result.errorsTotal,
        "outputs": result.outputsTotal,
        "sides": dict(result.sides),
    }
    new = attrs.evolve(
        rec,
        state=result.state,
        leaseExpires=None,
        endedAt=now,
        reason=result.reason,
        attempts=_end_attempt(rec, now, result.reason),
        progress=progress,
        resultAttempt=result.attempt,
    )
    return new, [_row(new, now, result.reason)]


def _attempt_over(rec: RunRecord, reason: str, now: float) -> tuple[RunRecord, list[EventRow]]:
    """The holding attempt ended without a result: queued for the next attempt, or failed
    when it was the last one (the reason lists every attempt's)."""
    attempts = _end_attempt(rec, now, reason)
    if rec.attempt < rec.maxAttempts:
        new = attrs.evolve(
            rec,
            state=RunState.QUEUED,
            worker=None,
            leaseExpires=None,
            attempts=attempts,
            reason=reason,
        )
        return new, [EventRow(rec.id, now, RunState.QUEUED, rec.attempt, rec.worker, reason)]
    every = "; ".join(f"attempt {a.attempt} on {a.worker}: {a.reason}" for a in attempts)
    why = f"failed after {len(attempts)} attempts ({every})"
    new = attrs.evolve(
        rec, state=RunState.FAILED, leaseExpires=None, endedAt=now, attempts=attempts, reason=why
    )
    return new, [_row(new, now, why)]


def lease_expired(rec: RunRecord, now: float) -> tuple[RunRecord, list[EventRow]]:
    """The holding attempt's lease ran out (its worker went silent)."""
    if rec.state is not RunState.RUNNING or rec.leaseExpires is None or now < rec.leaseExpires:
        raise RunStateError(f"run {rec.id}: no expired lease")
    return _attempt_over(rec, f"lease expired ({rec.worker} silent for {rec.lease:g} s)", now)


def given_back(
    rec: RunRecord, worker: str, attempt: int, reason: str, now: float
) -> tuple[RunRecord, list[EventRow]]:
    """The worker gives the attempt back (refused after accepting, shutting down, a host
    crash, not held after a reconnect). It counts as an attempt."""
    _check_holds(rec, worker, attempt)
    return _attempt_over(rec, f"given back by {worker}: {reason}", now)


def cancel(rec: RunRecord, reason: str, now: float) -> tuple[RunRecord, list[EventRow]]:
    """Canceled, at once, queued or running (the book then tells the worker of a running
    one to stop; its result will not count)."""
    if rec.state in TERMINAL:
        raise RunStateError(f"run {rec.id} already ended ({rec.state})")
    attempts = _end_attempt(rec, now, reason) if rec.state is RunState.RUNNING else rec.attempts
    new = attrs.evolve(
        rec,
        state=RunState.CANCELED,
        leaseExpires=None,
        endedAt=now,
        attempts=attempts,
        reason=reason,
    )
    return new, [_row(new, now, reason)]


def _timeout_at(rec: RunRecord) -> float | None:
    if rec.state is not RunState.RUNNING or rec.timeout is None or not rec.attempts:
        return None
    return rec.attempts[-1].startedAt + rec.timeout + rec.lease


def timed_out(rec: RunRecord, now: float) -> tuple[RunRecord, list[EventRow]]:
    """No result ``timeout + lease`` after the attempt started: the book ends the run
    ``timed_out`` (terminal; too slow is not retried)."""
    at = _timeout_at(rec)
    if at is None or now < at:
        raise RunStateError(f"run {rec.id}: not past its timeout")
    reason = "no result from the worker"
    new = attrs.evolve(
        rec,
        state=RunState.TIMED_OUT,
        leaseExpires=None,
        endedAt=now,
        attempts=_end_attempt(rec, now, reason),
        reason=reason,
    )
    return new, [_row(new, now, reason)]


def deadline(rec: RunRecord) -> float | None:
    """When :func:`tick` next has something to do for this run (None: nothing; a queued
    run whose workers are left out: when the first of them is back)."""
    if rec.state is RunState.QUEUED:
        return min(rec.leftOut.values(), default=None)
    if rec.state is not RunState.RUNNING:
        return None
    times = [t for t in (rec.leaseExpires, _timeout_at(rec)) if t is not None]
    return min(times, default=None)


def tick(rec: RunRecord, now: float) -> tuple[RunRecord, list[EventRow]] | None:
    """The timer's transition for a running run at ``now``: timed out first (terminal),
    else lease expired; None when neither is due."""
    at = _timeout_at(rec)
    if at is not None and now >= at:
        return timed_out(rec, now)
    if rec.state is RunState.RUNNING and rec.leaseExpires is not None and now >= rec.leaseExpires:
        return lease_expired(rec, now)
    return None
