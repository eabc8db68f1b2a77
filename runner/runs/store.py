"""The runs' durable state in SQLite: ``runs`` (one row per run: the columns queries
need, and the whole :class:`~.machine.RunRecord` as JSON, attempts included),
``run_events`` (every transition, numbered per run) and ``run_results`` (the
:class:`~.model.RunResult` of the attempt that ended the run, as JSON; its outputs are
capped by the worker, which spills the rest to its own file).

:data:`RUNS_SCHEMA` holds the CREATE statements: the dispatcher appends them to its own
migrations (its file, its ``user_version``); a runner served alone opens its own file
with :meth:`RunStore.open` (``<state_dir>/runs.sqlite``, or ``":memory:"``), versioned by
:data:`RUNS_MIGRATIONS`.

Every change is one transaction (``with self.db:``): the record, its event rows and its
result are written together or not at all.

Resource handling: one connection; :meth:`RunStore.open` opens it and :meth:`close`
closes it; a store built on someone else's connection (the dispatcher's) leaves it open.
Calls are short and local, made from the trio thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ...flows.converter import make_converter
from .machine import EventRow, RunRecord
from .model import RunResult, RunState

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["RUNS_MIGRATIONS", "RUNS_SCHEMA", "RunStore", "RunStoreVersionError"]

RUNS_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, key TEXT UNIQUE, flow TEXT NOT NULL, state TEXT NOT NULL,
        priority INTEGER NOT NULL, created REAL NOT NULL, record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_offer ON runs (state, priority, created)",
    "CREATE INDEX IF NOT EXISTS runs_flow ON runs (flow, created)",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created)",
    """CREATE TABLE IF NOT EXISTS run_events (
        run TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, state TEXT NOT NULL,
        attempt INTEGER NOT NULL, worker TEXT, reason TEXT, PRIMARY KEY (run, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS run_results (
        run TEXT PRIMARY KEY, attempt INTEGER NOT NULL, result TEXT NOT NULL
    )""",
)

#: the versions of a runner's own ``runs.sqlite`` (``PRAGMA user_version``), as the
#: dispatcher's MIGRATIONS: append, never edit
RUNS_MIGRATIONS: tuple[tuple[str, ...], ...] = (RUNS_SCHEMA,)

_CONVERTER = make_converter()


class RunStoreVersionError(Exception):
    """The file was written by a newer fifoflow (its schema version is unknown here)."""

    def __init__(self, path: str, version: int, known: int) -> None:
        super().__init__(
            f"{path}: runs schema version {version} is newer than this fifoflow's ({known})"
        )
        self.path = path
        self.version = version


def _migrate(db: sqlite3.Connection, path: str) -> None:
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(RUNS_MIGRATIONS):
                raise RunStoreVersionError(path, version, len(RUNS_MIGRATIONS))
            if version == len(RUNS_MIGRATIONS):
                db.execute("COMMIT")
                return
            for statement in RUNS_MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")  # our number, not input
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _record(text: str | bytes) -> RunRecord:
    return _CONVERTER.structure(orjson.loads(text), RunRecord)


def _record_json(rec: RunRecord) -> str:
    return orjson.dumps(_CONVERTER.unstructure(rec)).decode()


class RunStore:
    """Runs, their events and results, over one ``sqlite3.Connection`` whose tables are
    :data:`RUNS_SCHEMA` (the caller made them: :meth:`open` does)."""

    def __init__(self, db: sqlite3.Connection, *, owned: bool = False) -> None:
        self.db = db
        self._owned = owned

    @classmethod
    def open(cls, path: Path | str) -> RunStore:
        """Open (or create) a runner's own runs file at the latest schema version, WAL
        mode; ``":memory:"`` for a store that lasts as long as the process."""
        name = str(path)
        if name != ":memory:":
            Path(name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = sqlite3.connect(name, isolation_level=None)
        try:
            _migrate(db, name)
            if name != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        db.isolation_level = "DEFERRED"  # `with db:` is one transaction from here on
        return cls(db, owned=True)

    def close(self) -> None:
        if self._owned:
            self.db.close()

    # ------------------------------------------------------------------ writes

    def _add_events(self, rows: Iterable[EventRow]) -> None:
        for row in rows:
            self.db.execute(
                "INSERT INTO run_events (run, seq, time, state, attempt, worker, reason) "
                "VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM run_events WHERE run = ?), "
                "?, ?, ?, ?, ?)",
                (row.run, row.run, row.time, str(row.state), row.attempt, row.worker, row.reason),
            )

    def insert(self, rec: RunRecord, rows: Iterable[EventRow]) -> None:
        """A new run and its first events (one transaction)."""
        with self.db:
            self.db.execute(
                "INSERT INTO runs (id, key, flow, state, priority, created, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    rec.key,
                    rec.flow,
                    str(rec.state),
                    rec.priority,
                    rec.createdAt,
                    _record_json(rec),
                ),
            )
            self._add_events(rows)

    def update(
        self, rec: RunRecord, rows: Iterable[EventRow] = (), result: RunResult | None = None
    ) -> None:
        """A run's new record, with the events of its transition and (when it ended with
        one) its result, in one transaction."""
        with self.db:
            self.db.execute(
                "UPDATE runs SET state = ?, record = ? WHERE id = ?",
                (str(rec.state), _record_json(rec), rec.id),
            )
            self._add_events(rows)
            if result is not None:
                self.db.execute(
                    "INSERT INTO run_results (run, attempt, result) VALUES (?, ?, ?)",
                    (rec.id, result.attempt, orjson.dumps(_CONVERTER.unstructure(result)).decode()),
                )

    # ------------------------------------------------------------------ reads

    def get(self, run_id: str) -> RunRecord | None:
        row = self.db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row[0]) if row is not None else None

    def by_key(self, key: str) -> RunRecord | None:
        row = self.db.execute("SELECT record FROM runs WHERE key = ?", (key,)).fetchone()
        return _record(row[0]) if row is not None else None

    def list(
        self, *, state: RunState | None = None, flow: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, newest first, of one state and/or one flow (all when None)."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(str(state))
        if flow is not None:
            where.append("flow = ?")
            args.append(flow)
        sql = "SELECT record FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        rows = self.db.execute(sql, (*args, limit)).fetchall()
        return [_record(row[0]) for row in rows]

    def queued(self) -> list[RunRecord]:
        """Queued runs in offer order: priority (higher first), then age."""
        rows = self.db.execute(
            "SELECT record FROM runs WHERE state = ? ORDER BY priority DESC, created ASC, rowid ASC",
            (str(RunState.QUEUED),),
        ).fetchall()
        return [_record(row[0]) for row in rows]

    def running(self) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT record FROM runs WHERE state = ? ORDER BY created ASC", (str(RunState.RUNNING),)
        ).fetchall()
        return [_record(row[0]) for row in rows]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events, in order: ``{seq, time, state, attempt, worker, reason}``."""
        rows = self.db.execute(
            "SELECT seq, time, state, attempt, worker, reason FROM run_events WHERE run = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
        return [
            {
                "seq": r[0],
                "time": r[1],
                "state": r[2],
                "attempt": r[3],
                "worker": r[4],
                "reason": r[5],
            }
            for r in rows
        ]

    def result(self, run_id: str) -> RunResult | None:
        """The recorded result of a run (None: the run has none: not ended, or ended
        without one: canceled, timed out by the book, failed at its last lease)."""
        row = self.db.execute("SELECT result FROM run_results WHERE run = ?", (run_id,)).fetchone()
        return _CONVERTER.structure(orjson.loads(row[0]), RunResult) if row is not None else None

    def count(self, state: RunState | None = None) -> int:
        if state is None:
            return self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self.db.execute(
            "SELECT COUNT(*) FROM runs WHERE state = ?", (str(state),)
        ).fetchone()[0]
