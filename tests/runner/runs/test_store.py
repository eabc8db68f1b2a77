"""The runs' SQLite store: round trips, queries, a file reopened, its schema version."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from fifoflow.runner.runs import machine as m
from fifoflow.runner.runs.model import RunProgress, RunResult, RunState, RunSubmission, Target
from fifoflow.runner.runs.store import RUNS_MIGRATIONS, RUNS_SCHEMA, RunStore, RunStoreVersionError

if TYPE_CHECKING:
    from pathlib import Path


def submit(store: RunStore, run_id: str, now: float, **options: object) -> m.RunRecord:
    sub = RunSubmission(flow=options.pop("flow", "f"), **options)  # type: ignore[arg-type]
    rec, rows = m.submitted(
        run_id,
        sub,
        sub.flow or "f",
        1,
        {"id": "f", "modules": {}},
        [Target("a", "in", {"n": 1})],
        now,
    )
    store.insert(rec, rows)
    return rec


def test_round_trip_with_events_and_result(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "runs.sqlite")
    rec = submit(store, "r1", 1.0, key="k1", labels={"zone": "a"})
    assert store.get("r1") == rec
    assert store.by_key("k1") == rec
    assert store.by_key("k2") is None
    assert store.get("nope") is None
    rec, rows = m.offered(rec, "w1", 2.0)
    store.update(rec, rows)
    rec, rows = m.progress(rec, "w1", RunProgress("r1", 1, handled={"a": 1}), 3.0)
    store.update(rec, rows)
    result = RunResult(
        "r1",
        1,
        RunState.SUCCEEDED,
        outputs=[{"from": "a.out", "msg": {"n": 2}}],
        outputsTotal=1,
        logs=[{"text": "hi"}],
        errors=[],
        startedAt=2.0,
        finishedAt=4.0,
    )
    rec, rows = m.finished(rec, "w1", result, 4.0)
    store.update(rec, rows, result)
    store.close()

    again = RunStore.open(tmp_path / "runs.sqlite")
    try:
        assert again.get("r1") == rec
        assert again.result("r1") == result
        assert [
            (e["seq"], e["state"], e["attempt"], e["worker"], e["reason"])
            for e in again.events("r1")
        ] == [
            (1, "queued", 0, None, "submitted"),
            (2, "running", 1, "w1", "offered to w1"),
            (3, "succeeded", 1, "w1", None),
        ]
        assert again.count() == 1
        assert again.count(RunState.SUCCEEDED) == 1
    finally:
        again.close()


def test_a_result_is_written_once() -> None:
    store = RunStore.open(":memory:")
    rec = submit(store, "r1", 1.0)
    rec, rows = m.offered(rec, "w1", 2.0)
    store.update(rec, rows)
    result = RunResult("r1", 1, RunState.FAILED, "boom")
    store.update(rec, [], result)
    with pytest.raises(sqlite3.IntegrityError):
        store.update(rec, [], result)
    # the failed transaction left nothing half written
    assert store.result("r1") == result
    assert len(store.events("r1")) == 2
    store.close()


def test_queries_in_their_order() -> None:
    store = RunStore.open(":memory:")
    submit(store, "old", 1.0)
    submit(store, "urgent", 2.0, priority=5)
    submit(store, "new", 3.0, flow="g")
    late = submit(store, "low", 4.0, priority=-1)
    assert [r.id for r in store.queued()] == ["urgent", "old", "new", "low"]
    rec, rows = m.offered(late, "w1", 5.0)
    store.update(rec, rows)
    assert [r.id for r in store.running()] == ["low"]
    assert [r.id for r in store.list()] == ["low", "new", "urgent", "old"]
    assert [r.id for r in store.list(limit=2)] == ["low", "new"]
    assert [r.id for r in store.list(state=RunState.QUEUED, limit=10)] == ["new", "urgent", "old"]
    assert [r.id for r in store.list(flow="g")] == ["new"]
    assert store.list(state=RunState.CANCELED) == []
    submit(store, "keyed", 6.0, key="k")
    with pytest.raises(sqlite3.IntegrityError):  # keys are unique
        submit(store, "again", 7.0, key="k")
    store.close()


def test_schema_is_shared_and_versioned(tmp_path: Path) -> None:
    # the dispatcher's way: the statements run inside its own migrations, on its connection
    db = sqlite3.connect(tmp_path / "other.sqlite3")
    for statement in RUNS_SCHEMA:
        db.execute(statement)
    db.row_factory = sqlite3.Row
    shared = RunStore(db)
    submit(shared, "r1", 1.0)
    assert shared.get("r1") is not None
    shared.close()  # not ours: left open
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    db.close()

    path = tmp_path / "runs.sqlite"
    RunStore.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(RUNS_MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {len(RUNS_MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(RunStoreVersionError, match="newer"):
        RunStore.open(path)
