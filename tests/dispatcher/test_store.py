"""The dispatcher's SQLite schema versions: old files open with their rows, new files
start at the latest version, files from a newer fifoflow are refused untouched, and a
migration that fails leaves nothing half done."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from fifoflow.dispatcher import store as store_module
from fifoflow.dispatcher.errors import StoreVersionError
from fifoflow.dispatcher.store import SCHEMA_VERSION, DispatcherStore, digest

#: The layout the dispatcher wrote before its schema had a version (user_version 0),
#: as that code created it.
UNVERSIONED = """
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL, used_by TEXT
);
CREATE TABLE IF NOT EXISTS runners (
    id TEXT PRIMARY KEY, secret_digest TEXT NOT NULL, name TEXT NOT NULL,
    registered REAL NOT NULL, status TEXT NOT NULL, last_seen REAL,
    hardware TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS flows (
    id TEXT PRIMARY KEY, document TEXT NOT NULL, runner TEXT, status TEXT NOT NULL,
    reason TEXT, states TEXT NOT NULL DEFAULT '{}', queued TEXT NOT NULL DEFAULT '{}',
    placement TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS containers (
    name TEXT PRIMARY KEY, backend TEXT NOT NULL, container_id TEXT, image TEXT NOT NULL,
    cpus REAL NOT NULL, memory INTEGER NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    flow TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, runner TEXT,
    kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""

DOCUMENT = {"fifoflow": 1, "id": "f1", "modules": [{"id": "m", "runtime": "python"}]}


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows} - {"sqlite_sequence"}
    finally:
        db.close()


def write_unversioned(path: Path) -> None:
    """A state file as the dispatcher wrote it before versions: one of everything."""
    db = sqlite3.connect(path)
    try:
        db.executescript(UNVERSIONED)
        with db:
            db.execute("INSERT INTO tokens VALUES (?, 1.0, 2.0, 'r-1')", (digest("tok"),))
            db.execute(
                "INSERT INTO runners VALUES ('r-1', ?, 'one', 10.0, 'ready', 11.0, ?)",
                (digest("secret"), '{"runtimes": ["python"]}'),
            )
            db.execute(
                "INSERT INTO flows VALUES ('f1', ?, 'r-1', 'placed', NULL, ?, '{}', ?, 12.0)",
                (orjson.dumps(DOCUMENT).decode(), '{"m": {"n": 3}}', '{"m": "r-1"}'),
            )
            db.execute("INSERT INTO meta VALUES ('dispatcher_id', 'abc')")
            db.execute(
                "INSERT INTO containers VALUES ('ff-abc-1', 'docker', 'c1', 'img', 1.0, 1024,"
                " 'running', 13.0, NULL)"
            )
            db.execute("INSERT INTO events (time, runner, kind, detail) VALUES (14.0, 'r-1', 'ready', '{}')")  # fmt: skip
    finally:
        db.close()


def test_a_new_file_starts_at_the_latest_version(tmp_path: Path) -> None:
    store = DispatcherStore.open(tmp_path)
    store.close()
    path = tmp_path / "dispatcher.sqlite3"
    assert user_version(path) == SCHEMA_VERSION
    assert tables(path) == {
        *("tokens", "runners", "flows", "meta", "containers", "events"),
        *("runs", "run_events", "run_results"),
    }


def test_a_file_from_before_versions_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.sqlite3"
    write_unversioned(path)
    assert user_version(path) == 0
    store = DispatcherStore.open(tmp_path)
    try:
        [runner] = store.runners()
        assert (runner["id"], runner["status"], runner["hardware"]) == (
            "r-1", "ready", {"runtimes": ["python"]},
        )  # fmt: skip
        assert store.check_secret("r-1", "secret")
        [flow] = store.flows()
        assert (flow["document"], flow["placement"], flow["states"]) == (
            DOCUMENT, {"m": "r-1"}, {"m": {"n": 3}},
        )  # fmt: skip
        assert [(e["id"], e["kind"]) for e in store.events()] == [(1, "ready")]
        assert store.meta("dispatcher_id") == "abc"
        assert [c["name"] for c in store.containers("docker")] == ["ff-abc-1"]
        assert store.use_token("tok", "r-2") == "this registration token was already used (a token works once)"  # fmt: skip
        # and it goes on working: new rows after the old ones
        assert store.add_event(None, "next", {})["id"] == 2
    finally:
        store.close()
    assert user_version(path) == SCHEMA_VERSION


def test_a_file_from_a_newer_fifoflow_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "dispatcher.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreVersionError) as caught:
        DispatcherStore.open(tmp_path)
    assert (caught.value.found, caught.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"versions up to {SCHEMA_VERSION}" in message
    assert user_version(path) == SCHEMA_VERSION + 1
    assert tables(path) == set()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    db.close()


def test_each_migration_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    DispatcherStore.open(tmp_path).close()
    path = tmp_path / "dispatcher.sqlite3"
    broken = ("CREATE TABLE half (x INTEGER)", "INSERT INTO nowhere VALUES (1)")
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        DispatcherStore.open(tmp_path)
    assert user_version(path) == SCHEMA_VERSION
    assert "half" not in tables(path)
    # a later migration that works takes the file from where it was
    fixed = ("CREATE TABLE half (x INTEGER)",)
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS[:-1], fixed))
    DispatcherStore.open(tmp_path).close()
    assert user_version(path) == SCHEMA_VERSION + 1
    assert "half" in tables(path)
