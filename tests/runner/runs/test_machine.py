"""The runs' state machine, table by table: every transition and every refusal, with a
fake clock (plain numbers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from fifoflow.runner.runs import machine as m
from fifoflow.runner.runs.errors import LeaseLost, RunStateError
from fifoflow.runner.runs.model import RunProgress, RunResult, RunState, RunSubmission, Target

if TYPE_CHECKING:
    from collections.abc import Callable

Q, R = RunState.QUEUED, RunState.RUNNING
OK, FAIL, TO, CXL = RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELED


def new(**options: Any) -> m.RunRecord:
    rec, rows = m.submitted(
        "r1", RunSubmission(flow="f", **options), "f", 2, {"id": "f"}, [Target("a", "in", 1)], 100.0
    )
    assert rows == [m.EventRow("r1", 100.0, Q, 0, None, "submitted")]
    return rec


def running(worker: str = "w1", at: float = 110.0, **options: Any) -> m.RunRecord:
    rec, _ = m.offered(new(**options), worker, at)
    return rec


def result(attempt: int = 1, state: RunState = OK, reason: str | None = None) -> RunResult:
    return RunResult("r1", attempt, state, reason, handled={"a": 1}, outputsTotal=2)


def test_submitted_carries_the_options() -> None:
    rec = new(timeout=5.0, maxAttempts=2, lease=10.0, labels={"gpu": "1"}, priority=7, key="k")
    assert (rec.state, rec.attempt, rec.worker, rec.createdAt) == (Q, 0, None, 100.0)
    assert (rec.timeout, rec.maxAttempts, rec.lease, rec.labels, rec.priority, rec.key) == (
        5.0,
        2,
        10.0,
        {"gpu": "1"},
        7,
        "k",
    )
    assert (rec.flow, rec.revision, rec.targets) == ("f", 2, [Target("a", "in", 1)])


# (name, start record, transition, expected state, attempt, worker, row reason)
TRANSITIONS: list[
    tuple[
        str,
        Callable[[], m.RunRecord],
        Callable[[m.RunRecord], Any],
        RunState,
        int,
        str | None,
        str | None,
    ]
] = [
    ("offered", new, lambda r: m.offered(r, "w1", 110.0), R, 1, "w1", "offered to w1"),
    (
        "refused",
        running,
        lambda r: m.refused(r, "w1", 1, "no python", 111.0),
        Q,
        0,
        None,
        "refused: no python",
    ),
    (
        "progress",
        running,
        lambda r: m.progress(r, "w1", RunProgress("r1", 1), 115.0),
        R,
        1,
        "w1",
        None,
    ),
    ("renewed", running, lambda r: m.renewed(r, "w1", 1, 115.0), R, 1, "w1", None),
    ("succeeded", running, lambda r: m.finished(r, "w1", result(), 120.0), OK, 1, "w1", None),
    (
        "failed result",
        running,
        lambda r: m.finished(r, "w1", result(state=FAIL, reason="a: boom"), 120.0),
        FAIL,
        1,
        "w1",
        "a: boom",
    ),
    (
        "timed_out result",
        running,
        lambda r: m.finished(r, "w1", result(state=TO, reason="timeout"), 120.0),
        TO,
        1,
        "w1",
        "timeout",
    ),
    (
        "lease expired, retried",
        running,
        lambda r: m.lease_expired(r, 140.0),
        Q,
        1,
        None,
        "lease expired (w1 silent for 30 s)",
    ),
    (
        "given back",
        running,
        lambda r: m.given_back(r, "w1", 1, "draining", 120.0),
        Q,
        1,
        None,
        "given back by w1: draining",
    ),
    ("cancel queued", new, lambda r: m.cancel(r, "no longer", 105.0), CXL, 0, None, "no longer"),
    ("cancel running", running, lambda r: m.cancel(r, "stop", 115.0), CXL, 1, "w1", "stop"),
    (
        "timed out by the book",
        lambda: running(timeout=5.0),
        lambda r: m.timed_out(r, 145.0),
        TO,
        1,
        "w1",
        "no result from the worker",
    ),
]


@pytest.mark.parametrize(
    ("start", "step", "state", "attempt", "worker", "reason"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_transition(
    start: Callable[[], m.RunRecord],
    step: Callable[[m.RunRecord], Any],
    state: RunState,
    attempt: int,
    worker: str | None,
    reason: str | None,
) -> None:
    before = start()
    after, rows = step(before)
    assert (after.state, after.attempt, after.worker) == (state, attempt, worker)
    if state is before.state and state is R:
        assert rows == []  # renewals are not transitions
    else:
        assert len(rows) == 1
        assert (rows[0].run, rows[0].state, rows[0].reason) == ("r1", state, reason)


# (name, start record, call, error)
REFUSALS: list[
    tuple[str, Callable[[], m.RunRecord], Callable[[m.RunRecord], Any], type[Exception]]
] = [
    ("offer a running run", running, lambda r: m.offered(r, "w2", 111.0), RunStateError),
    (
        "refusal from another worker",
        running,
        lambda r: m.refused(r, "w2", 1, "x", 111.0),
        LeaseLost,
    ),
    ("refusal of a queued run", new, lambda r: m.refused(r, "w1", 1, "x", 111.0), LeaseLost),
    (
        "progress from another worker",
        running,
        lambda r: m.progress(r, "w2", RunProgress("r1", 1), 111.0),
        LeaseLost,
    ),
    (
        "progress of another attempt",
        running,
        lambda r: m.progress(r, "w1", RunProgress("r1", 2), 111.0),
        LeaseLost,
    ),
    (
        "progress of a queued run",
        new,
        lambda r: m.progress(r, "w1", RunProgress("r1", 1), 111.0),
        LeaseLost,
    ),
    (
        "result from another worker",
        running,
        lambda r: m.finished(r, "w2", result(), 111.0),
        LeaseLost,
    ),
    (
        "result of another attempt",
        running,
        lambda r: m.finished(r, "w1", result(attempt=2), 111.0),
        LeaseLost,
    ),
    (
        "result with a running state",
        running,
        lambda r: m.finished(r, "w1", result(state=R), 111.0),
        RunStateError,
    ),
    (
        "result after a cancel",
        lambda: m.cancel(running(), "stop", 112.0)[0],
        lambda r: m.finished(r, "w1", result(), 113.0),
        LeaseLost,
    ),
    (
        "give back by another worker",
        running,
        lambda r: m.given_back(r, "w2", 1, "x", 111.0),
        LeaseLost,
    ),
    ("lease not yet expired", running, lambda r: m.lease_expired(r, 139.9), RunStateError),
    ("lease of a queued run", new, lambda r: m.lease_expired(r, 1000.0), RunStateError),
    ("timeout without one", running, lambda r: m.timed_out(r, 1e9), RunStateError),
    (
        "timeout not yet due",
        lambda: running(timeout=5.0),
        lambda r: m.timed_out(r, 144.9),
        RunStateError,
    ),
    (
        "cancel an ended run",
        lambda: m.finished(running(), "w1", result(), 120.0)[0],
        lambda r: m.cancel(r, "x", 121.0),
        RunStateError,
    ),
    (
        "cancel a canceled run",
        lambda: m.cancel(new(), "x", 101.0)[0],
        lambda r: m.cancel(r, "x", 102.0),
        RunStateError,
    ),
]


@pytest.mark.parametrize(
    ("start", "call", "error"), [t[1:] for t in REFUSALS], ids=[t[0] for t in REFUSALS]
)
def test_refused_call(
    start: Callable[[], m.RunRecord], call: Callable[[m.RunRecord], Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="r1"):
        call(start())


def test_offer_starts_a_lease_and_an_attempt() -> None:
    rec = running(lease=10.0)
    assert (rec.leaseExpires, rec.startedAt) == (120.0, 110.0)
    assert rec.attempts == [m.AttemptRecord(1, "w1", 110.0)]
    renewed, _ = m.progress(
        rec, "w1", RunProgress("r1", 1, handled={"a": 3}, errors=1, outputs=2), 118.0
    )
    assert renewed.leaseExpires == 128.0
    assert renewed.progress == {"handled": {"a": 3}, "errors": 1, "outputs": 2, "sides": {}}


def test_refusal_leaves_the_worker_out_for_a_while() -> None:
    rec, _ = m.refused(running(), "w1", 1, "full", 111.0, hold=30.0)
    assert (rec.attempts, rec.startedAt, rec.leaseExpires) == ([], None, None)
    assert m.is_left_out(rec, "w1", 140.0)
    assert not m.is_left_out(rec, "w1", 141.0)
    assert not m.is_left_out(rec, "w2", 112.0)
    assert m.deadline(rec) == 141.0
    again, rows = m.offered(rec, "w2", 112.0)
    assert (again.attempt, rows[0].attempt) == (1, 1)  # a refusal does not use up an attempt


def test_result_is_recorded_once() -> None:
    rec, rows = m.finished(running(), "w1", result(), 120.0)
    assert (rec.resultAttempt, rec.endedAt, rec.leaseExpires) == (1, 120.0, None)
    assert rec.progress["handled"] == {"a": 1}
    assert rec.progress["outputs"] == 2
    assert rec.attempts[-1].endedAt == 120.0
    same, rows = m.finished(rec, "w1", result(), 125.0)
    assert (same, rows) == (rec, [])
    with pytest.raises(LeaseLost):
        m.finished(rec, "w2", result(), 125.0)


def test_retries_then_fails_with_every_reason() -> None:
    rec = running(maxAttempts=3, lease=10.0)
    rec, _ = m.lease_expired(rec, 120.0)
    assert (rec.state, rec.attempt, rec.reason) == (Q, 1, "lease expired (w1 silent for 10 s)")
    rec, rows = m.offered(rec, "w2", 121.0)
    assert rows[0].attempt == 2
    rec, _ = m.given_back(rec, "w2", 2, "host crashed", 125.0)
    rec, _ = m.offered(rec, "w3", 126.0)
    with pytest.raises(LeaseLost):  # the stale attempt 1
        m.finished(rec, "w1", result(attempt=1), 127.0)
    rec, rows = m.lease_expired(rec, 136.0)
    assert (rec.state, rec.attempt, rec.endedAt) == (FAIL, 3, 136.0)
    assert [a.worker for a in rec.attempts] == ["w1", "w2", "w3"]
    assert all(a.endedAt is not None for a in rec.attempts)
    assert rows[0].reason == rec.reason
    for part in (
        "attempt 1 on w1: lease expired",
        "attempt 2 on w2: given back by w2: host crashed",
        "attempt 3 on w3",
    ):
        assert part in rec.reason


def test_tick_and_deadline() -> None:
    rec = running(timeout=5.0, lease=10.0)  # lease to 120, timeout + lease at 125
    assert m.deadline(rec) == 120.0
    assert m.tick(rec, 119.0) is None
    expired = m.tick(rec, 120.0)
    assert expired is not None
    assert expired[0].state is Q
    renewed, _ = m.renewed(rec, "w1", 1, 119.0)  # lease to 129
    assert m.deadline(renewed) == 125.0
    out = m.tick(renewed, 126.0)
    assert out is not None
    assert out[0].state is TO
    assert m.deadline(out[0]) is None
    assert m.deadline(new()) is None


def test_cancel_running_ends_the_attempt() -> None:
    rec, _ = m.cancel(running(), "stop", 115.0)
    assert (rec.endedAt, rec.leaseExpires, rec.resultAttempt) == (115.0, None, None)
    assert rec.attempts[-1] == attrs.evolve(
        m.AttemptRecord(1, "w1", 110.0), endedAt=115.0, reason="stop"
    )
