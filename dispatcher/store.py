"""The dispatcher's state in SQLite (WAL): registration tokens, runners, flows, the
containers of its backend, events.

The schema is versioned (``PRAGMA user_version``) and built by an ordered list of
migrations (:data:`MIGRATIONS`): opening a file brings it to the latest version, and a
file from a newer fifoflow is refused rather than misread.

Every change is one transaction (``with self.db:``), so a dispatcher that stops at any
point comes back with what was committed. Secrets and tokens are stored as SHA-256
digests, never in clear.

Resource handling: one connection, opened by :meth:`DispatcherStore.open` and closed by
:meth:`close`; calls are short and local, made from the trio thread.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..runner.runs.store import RUNS_SCHEMA
from .errors import StoreVersionError
from .status import WATCHED, FlowStatus, RunnerStatus

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "DispatcherStore", "digest", "migrate"]

#: The schema, one migration per version: ``MIGRATIONS[n - 1]`` takes a database from
#: version n - 1 to n, and ``PRAGMA user_version`` says which version a file is at. Each
#: migration runs in one transaction; append new ones, never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: tokens, runners, flows, meta, containers, events. Databases written before
    # versions were kept are at version 0 with these very tables: IF NOT EXISTS lets
    # them through unchanged.
    (
        """CREATE TABLE IF NOT EXISTS tokens (
            digest TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL, used_by TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS runners (
            id TEXT PRIMARY KEY, secret_digest TEXT NOT NULL, name TEXT NOT NULL,
            registered REAL NOT NULL, status TEXT NOT NULL, last_seen REAL,
            hardware TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE IF NOT EXISTS flows (
            id TEXT PRIMARY KEY, document TEXT NOT NULL, runner TEXT, status TEXT NOT NULL,
            reason TEXT, states TEXT NOT NULL DEFAULT '{}', queued TEXT NOT NULL DEFAULT '{}',
            placement TEXT NOT NULL DEFAULT '{}',
            updated REAL NOT NULL
        )""",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS containers (
            name TEXT PRIMARY KEY, backend TEXT NOT NULL, container_id TEXT, image TEXT NOT NULL,
            cpus REAL NOT NULL, memory INTEGER NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
            flow TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, runner TEXT,
            kind TEXT NOT NULL, detail TEXT NOT NULL
        )""",
    ),
    # 2: runs (the run book's tables, ``runner/runs/store.py``), and a revision per
    # stored flow (a run may name the revision it wants)
    (
        *RUNS_SCHEMA,
        "ALTER TABLE flows ADD COLUMN revision INTEGER NOT NULL DEFAULT 1",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database (a connection in autocommit mode) to :data:`SCHEMA_VERSION`,
    one migration per transaction. A database of a newer version is refused, untouched
    (:class:`StoreVersionError`). Each step reads the version inside its write
    transaction, so two processes opening one new file do not both migrate it."""
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreVersionError(path, version, SCHEMA_VERSION)
            if version == SCHEMA_VERSION:
                db.execute("COMMIT")
                return
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            # PRAGMA takes no parameters; the number is ours
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class DispatcherStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        #: flow id -> a number that changes with every write of that flow (the
        #: dispatcher's caches of derived data, like relay routes, check it)
        self.flow_generation: dict[str, int] = {}

    def _touch(self, flow_id: str) -> None:
        self.flow_generation[flow_id] = self.flow_generation.get(flow_id, 0) + 1

    @classmethod
    def open(cls, state_dir: Path) -> DispatcherStore:
        """Open (or create) ``dispatcher.sqlite3`` in ``state_dir`` at the latest schema
        version; raises :class:`StoreVersionError` for a file from a newer fifoflow."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / "dispatcher.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            migrate(db, path)  # first: a file from a newer fifoflow is left as it was
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        db.isolation_level = "DEFERRED"  # `with db:` is one transaction from here on
        return cls(db)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ tokens

    def add_token(self, token: str, ttl: float) -> float:
        now = time.time()
        with self.db:
            self.db.execute(
                "INSERT INTO tokens (digest, created, expires) VALUES (?, ?, ?)",
                (digest(token), now, now + ttl),
            )
        return now + ttl

    def use_token(self, token: str, runner_id: str) -> str | None:
        """Mark the token used by ``runner_id``; None if that worked, else why not."""
        with self.db:
            row = self.db.execute(
                "SELECT expires, used_by FROM tokens WHERE digest = ?", (digest(token),)
            ).fetchone()
            if row is None:
                return "unknown registration token"
            if row["used_by"] is not None:
                return "this registration token was already used (a token works once)"
            if row["expires"] < time.time():
                return "this registration token has expired"
            self.db.execute(
                "UPDATE tokens SET used_by = ? WHERE digest = ?", (runner_id, digest(token))
            )
        return None

    # ------------------------------------------------------------------ runners

    def add_runner(self, runner_id: str, secret: str, name: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO runners (id, secret_digest, name, registered, status) VALUES (?, ?, ?, ?, ?)",
                (runner_id, digest(secret), name, time.time(), RunnerStatus.REGISTERED),
            )

    def runner(self, runner_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runners WHERE id = ?", (runner_id,)).fetchone()
        return _runner(row) if row is not None else None

    def check_secret(self, runner_id: str, secret: str) -> bool:
        row = self.db.execute(
            "SELECT secret_digest FROM runners WHERE id = ?", (runner_id,)
        ).fetchone()
        return row is not None and row["secret_digest"] == digest(secret)

    def runners(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM runners ORDER BY registered").fetchall()
        return [_runner(row) for row in rows]

    def stale_runners(self, seen_before: float) -> list[dict[str, Any]]:
        """Ready or starting runners not heard from since ``seen_before`` (one narrow
        query: the liveness check runs twice per heartbeat interval)."""
        rows = self.db.execute(
            "SELECT id, last_seen FROM runners WHERE status IN (?, ?) "
            "AND (last_seen IS NULL OR last_seen < ?)",
            (*WATCHED, seen_before),
        ).fetchall()
        return [{"id": r["id"], "lastSeen": r["last_seen"]} for r in rows]

    def refresh_live_runners(self, now: float) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runners SET last_seen = ? WHERE status IN (?, ?)", (now, *WATCHED)
            )

    def touch_runner(self, runner_id: str, now: float) -> bool:
        """A heartbeat: last seen now, unless the runner is lost or unknown (False)."""
        with self.db:
            cur = self.db.execute(
                "UPDATE runners SET last_seen = ? WHERE id = ? AND status != ?",
                (now, runner_id, RunnerStatus.LOST),
            )
        return cur.rowcount == 1

    def remove_runner(self, runner_id: str) -> None:
        """Forget a runner that is gone for good (a web page's runner, pruned); its
        events stay."""
        with self.db:
            self.db.execute("DELETE FROM runners WHERE id = ?", (runner_id,))

    def update_runner(self, runner_id: str, **fields: Any) -> None:
        if "hardware" in fields:
            fields["hardware"] = orjson.dumps(fields["hardware"]).decode()
        assigns = ", ".join(f"{name} = ?" for name in fields)
        with self.db:
            self.db.execute(
                f"UPDATE runners SET {assigns} WHERE id = ?",
                (*fields.values(), runner_id),
            )

    # ------------------------------------------------------------------ flows

    def put_flow(self, flow_id: str, document: dict[str, Any]) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO flows (id, document, status, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET document = excluded.document,"
                " updated = excluded.updated,"
                " revision = flows.revision + (flows.document != excluded.document)",
                (flow_id, orjson.dumps(document).decode(), FlowStatus.PENDING, time.time()),
            )
        self._touch(flow_id)

    def flow(self, flow_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM flows WHERE id = ?", (flow_id,)).fetchone()
        return _flow(row) if row is not None else None

    def flows(self) -> list[dict[str, Any]]:
        return [_flow(r) for r in self.db.execute("SELECT * FROM flows ORDER BY id").fetchall()]

    def update_flow(self, flow_id: str, **fields: Any) -> None:
        for key in ("states", "queued", "placement"):
            if key in fields:
                fields[key] = orjson.dumps(fields[key]).decode()
        fields["updated"] = time.time()
        assigns = ", ".join(f"{name} = ?" for name in fields)  # column names are ours
        with self.db:
            self.db.execute(f"UPDATE flows SET {assigns} WHERE id = ?", (*fields.values(), flow_id))
        self._touch(flow_id)

    def remove_flow(self, flow_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM flows WHERE id = ?", (flow_id,))
        self._touch(flow_id)

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row is not None else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ------------------------------------------------------------------ containers

    def containers(self, backend: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM containers WHERE backend = ? ORDER BY created", (backend,)
        ).fetchall()
        return [dict(r) for r in rows]

    def put_container(self, name: str, backend: str, **fields: Any) -> None:
        with self.db:
            exists = self.db.execute("SELECT 1 FROM containers WHERE name = ?", (name,)).fetchone()
            if exists is None:
                self.db.execute(
                    "INSERT INTO containers (name, backend, container_id, image, cpus, memory,"
                    " status, created, flow) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        backend,
                        fields.get("container_id"),
                        fields["image"],
                        fields["cpus"],
                        fields["memory"],
                        fields.get("status", "starting"),
                        time.time(),
                        fields.get("flow"),
                    ),
                )
            else:
                assigns = ", ".join(f"{k} = ?" for k in fields)  # column names are ours
                self.db.execute(
                    f"UPDATE containers SET {assigns} WHERE name = ?", (*fields.values(), name)
                )

    def remove_container(self, name: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM containers WHERE name = ?", (name,))

    # ------------------------------------------------------------------ events

    def add_event(self, runner_id: str | None, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO events (time, runner, kind, detail) VALUES (?, ?, ?, ?)",
                (now, runner_id, kind, orjson.dumps(detail).decode()),
            )
        return {"id": cur.lastrowid, "time": now, "runner": runner_id, "kind": kind, **detail}

    def events(self, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
        ).fetchall()
        return [
            {
                "id": r["id"],
                "time": r["time"],
                "runner": r["runner"],
                "kind": r["kind"],
                **orjson.loads(r["detail"]),
            }
            for r in rows
        ]


def _runner(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "registered": row["registered"],
        "status": row["status"],
        "lastSeen": row["last_seen"],
        "hardware": orjson.loads(row["hardware"]),
    }


def _flow(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "document": orjson.loads(row["document"]),
        "runner": row["runner"],
        "status": row["status"],
        "reason": row["reason"],
        "states": orjson.loads(row["states"]),
        "queued": orjson.loads(row["queued"]),
        "placement": orjson.loads(row["placement"]),
        "updated": row["updated"],
        "revision": row["revision"],
    }
