"""The journal of a flow with ``"durability": "journal"``: see ``runner/JOURNAL.md``.

An append-only file per flow (``<state dir>/journal/<name>.log``) of checksummed
records, written in groups by one writer thread (owned by the task :meth:`Journal.run`)
and synced as soon as someone waits for what was written (group commit). What it
holds, at any moment, is enough to rebuild the flow where it was: the last state of
each module, and every message accepted (an inject) or emitted on a cross-runtime wire
that no host has consumed yet, in per-module order.

Positions: every message journaled for a module gets the next position of that
module's stream (``ends``); a :class:`~.queues.Delivery` carries the position just past
its last message (``end``), so a host's ``done`` says how far each module's stream is
consumed (``consumed``). Pending after a crash = stream positions past ``consumed``.

Everything here runs on the trio thread except the file writes and syncs (the writer
thread: :meth:`Journal._writer`; what the two share is under ``Journal._lock``);
:class:`_Model` is the journal's logical content, applied as records are appended,
and is what a compaction writes as a snapshot.

Error handling: :meth:`Journal.accept` raises :class:`~.errors.JournalFull` (507 in the
API) before anything is queued when the journal is at its size bound or the disk has
less than the reserve left; a write that fails (ENOSPC despite the reserve, EIO) keeps
the group in memory and is tried again, and injects waiting on it get the
:class:`~.errors.StorageError`. A file that does not start with the header, or holds a
newer version, raises :class:`~.errors.StorageError` at :meth:`Journal.open` (the flow
does not start; the file is left as it is). A torn or corrupt record ends the readable
journal: it and what follows are dropped (counted in :attr:`Journal.dropped_bytes`).
"""

from __future__ import annotations

import errno as _errno
import os
import struct
import threading
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
import trio

from .errors import JournalFull, StorageError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["FSYNC_POLICIES", "Journal"]

#: file header: magic, format version (u16), reserved (u16)
MAGIC = b"FFJL"
VERSION = 1
_HEADER = struct.Struct("<4sHH")
#: record header: marker (u16), payload length (u32), crc32 of length and payload (u32)
_MARKER = 0xF10F
_RECORD = struct.Struct("<HII")

#: ``always``: fdatasync once per group before the group's injects are answered;
#: ``never``: written to the OS before answering, synced by the OS in its own time
#: (survives ``kill -9`` of the runner, not a power cut or a kernel crash)
FSYNC_POLICIES = ("always", "never")
#: with ``always``, written records nobody waits for yet are synced at the latest this
#: long after the first of them was written, or once this many bytes of them are written
#: (an inject's group is synced as soon as it is written: the inject waits for it)
LAZY_SYNC_SECONDS = 0.005
LAZY_SYNC_BYTES = 1 << 20
#: the free space of the journal's device is asked at most this often (seconds) to
#: accept an inject; a refusal always asks again (the reserve covers what others write
#: to the device meanwhile)
FREE_SPACE_EVERY = 0.05
#: a write that failed is tried again after this long
FAILED_WRITE_PAUSE = 0.2


def _msgs(msgs: list[Any] | bytes) -> Any:
    """The one place message lists become part of a record: a list as it is, the raw
    JSON array bytes of a ``raw`` host's emit (PROTOCOL.md section 10) spliced in as
    they came (never parsed, never encoded again)."""
    return orjson.Fragment(msgs) if isinstance(msgs, bytes) else msgs


def _values(msgs: list[Any] | bytes) -> list[Any]:
    """Messages as values (a raw body parsed: at replay, or to cut an entry)."""
    if isinstance(msgs, bytes):
        value = orjson.loads(msgs)
        return value if isinstance(value, list) else []
    return msgs


def encode_record(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    length = len(body)
    crc = zlib.crc32(body, zlib.crc32(length.to_bytes(4, "little")))
    return _RECORD.pack(_MARKER, length, crc) + body


def read_records(data: bytes | memoryview) -> tuple[list[dict[str, Any]], int]:
    """The records after the header, and the offset just past the last whole, intact
    one (what follows it is a torn or corrupt tail)."""
    view = memoryview(data)
    records: list[dict[str, Any]] = []
    offset = _HEADER.size
    size = _RECORD.size
    while offset + size <= len(view):
        marker, length, crc = _RECORD.unpack_from(view, offset)
        end = offset + size + length
        if marker != _MARKER or end > len(view):
            break
        body = view[offset + size : end]
        if zlib.crc32(body, zlib.crc32(length.to_bytes(4, "little"))) != crc:
            break
        offset = end
        try:
            record = orjson.loads(body)
        except orjson.JSONDecodeError:
            # Intact (its checksum holds) but not JSON: a raw body a broken host wrote
            # (spliced in unparsed). Skipped; what follows it is still read.
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset


class _Model:
    """What the journal holds: states, streams of unconsumed messages, positions."""

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}
        #: module -> deque of [port, end, msgs, count] not wholly consumed, in order
        #: (msgs: a list, or the raw JSON array bytes of a host's emit)
        self.streams: dict[str, deque[list[Any]]] = {}
        self.ends: dict[str, int] = {}
        self.consumed: dict[str, int] = {}

    def add(
        self, qid: str, port: str, end: int, msgs: list[Any] | bytes, count: int | None = None
    ) -> None:
        stream = self.streams.get(qid)
        if stream is None:
            stream = self.streams[qid] = deque()
        stream.append([port, end, msgs, len(msgs) if count is None else count])
        if end > self.ends.get(qid, 0):
            self.ends[qid] = end

    def consume(self, qid: str, end: int) -> None:
        if end <= self.consumed.get(qid, 0):
            return
        self.consumed[qid] = end
        stream = self.streams.get(qid)
        while stream and stream[0][1] <= end:
            stream.popleft()

    def apply(self, record: dict[str, Any]) -> None:
        kind = record.get("k")
        if kind == "i":
            self.add(record["q"], record["p"], record["e"], record["m"])
        elif kind == "d":
            for qid, end in record.get("c", {}).items():
                self.consume(qid, end)
            for qid, port, end, msgs in record.get("x", ()):
                self.add(qid, port, end, msgs)
            self.states.update(record.get("s", {}))
        elif kind == "s":
            self.states = dict(record["states"])
            self.ends = dict(record["ends"])
            self.consumed = dict(record["consumed"])
            self.streams = {
                q: deque([p, e, m, len(m)] for p, e, m in entries)
                for q, entries in record["pending"].items()
            }

    def snapshot(self) -> dict[str, Any]:
        return {
            "k": "s",
            "states": self.states,
            "ends": self.ends,
            "consumed": self.consumed,
            "pending": {
                q: [[p, e, _msgs(m)] for p, e, m, _ in s] for q, s in self.streams.items() if s
            },
        }

    def pending(self) -> dict[str, list[tuple[str, int, list[Any]]]]:
        """Per module, the unconsumed messages as (port, end, msgs), in order; a
        partly consumed entry is cut to its unconsumed tail."""
        found: dict[str, list[tuple[str, int, list[Any]]]] = {}
        for qid, stream in self.streams.items():
            done = self.consumed.get(qid, 0)
            out = []
            for port, end, body, count in stream:
                msgs = _values(body)
                start = end - count
                if start < done:
                    msgs = msgs[done - start :]
                if msgs:
                    out.append((port, end, msgs))
            if out:
                found[qid] = out
        return found

    @property
    def depth(self) -> int:
        """Messages journaled and not consumed."""
        return sum(max(0, end - self.consumed.get(q, 0)) for q, end in self.ends.items())


class Journal:
    """One flow's journal; made by :meth:`open`, written by :meth:`run` (a task)."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: str = "always",
        max_bytes: int = 1 << 30,
        compact_bytes: int = 16 << 20,
        reserve_bytes: int = 4 << 20,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(
                f"unknown journal fsync policy {fsync!r} (known: {', '.join(FSYNC_POLICIES)})"
            )
        self.path = path
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.compact_bytes = compact_bytes
        self.reserve_bytes = reserve_bytes
        self.model = _Model()
        #: the states of the durable prefix (what a reader may rely on)
        self.durable_states: dict[str, Any] = {}
        #: bytes of a torn or corrupt tail dropped when the journal was opened
        self.dropped_bytes = 0
        self._fd: int | None = None
        self._size = 0  # bytes in the file (durable or written)
        # Shared with the writer thread, under ``_lock``: the records appended and not
        # yet taken by it (with their states), how many records were appended, the bytes
        # it is writing now, a compaction's snapshot for it to write (data, records it
        # covers, states), whether it has work (``_go``) and whether it should end.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._buf = bytearray()
        self._buf_states: dict[str, Any] = {}
        self._appended = 0  # records appended
        self._inflight = 0
        self._snapshot: tuple[bytearray, int, dict[str, Any]] | None = None
        self._go = False
        self._want = 0  # the highest record a caller of durable() waits for
        #: the device's free bytes when last asked: (monotonic time, free, file size then)
        self._space: tuple[float, int, int] | None = None
        self._stop = False
        self._thread_running = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._crash: BaseException | None = None  # what ended the writer thread (a bug)
        self._durable = 0  # records durable
        self._wake = trio.Event()
        self._synced = trio.Event()
        self._compact = False
        self.error: StorageError | None = None
        self._failures = 0  # failed writes so far
        self.compactions = 0
        self.groups = 0
        self._scope: trio.CancelScope | None = None
        self._closing = False
        self._removed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, **options: Any) -> Journal:
        """Read ``path`` if it exists (recovering its content, dropping a torn tail),
        and start a fresh file holding one snapshot of it. Raises StorageError."""
        journal = cls(path, **options)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise StorageError.from_os_error(exc, "the journal", path) from None
        if data:
            if len(data) < _HEADER.size:
                journal.dropped_bytes = len(data)  # the header itself was torn
            else:
                magic, version, _ = _HEADER.unpack_from(data, 0)
                if magic != MAGIC:
                    raise StorageError(
                        f"{path} is not a fifoflow journal (no header)", path=str(path)
                    )
                if version > VERSION:
                    raise StorageError(
                        f"{path} is a journal of format {version}; this runner reads up to {VERSION}",
                        path=str(path),
                    )
                records, end = read_records(data)
                journal.dropped_bytes = len(data) - end
                for record in records:
                    journal.model.apply(record)
        journal.durable_states = dict(journal.model.states)
        try:
            journal._rewrite(journal._snapshot_bytes())
        except OSError as exc:
            raise StorageError.from_os_error(exc, "the journal", path) from None
        return journal

    def seed(self, states: dict[str, Any]) -> None:
        """States of modules the journal knows nothing of (a flow that was not journaled
        until now); recorded with the next group."""
        fresh = {q: s for q, s in states.items() if q not in self.model.states}
        if fresh:
            self._append({"k": "d", "s": fresh}, fresh)

    def _snapshot_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, 0) + encode_record(self.model.snapshot())

    def _rewrite(self, data: bytes | bytearray) -> None:
        """Replace the file with ``data`` (atomically), and write on from there."""
        tmp = self.path.with_name(self.path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        self._size = len(data)

    def close(self) -> None:
        """Stop the writer and close the file (the writer thread closes it once its
        write is over, if one is under way: its descriptor must not be reused under it)."""
        if self._scope is not None:
            self._scope.cancel()
        with self._lock:
            self._closing = True
            self._stop = True
            self._work.notify()
            running = self._thread_running
        if not running:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def remove(self) -> None:
        self._removed = True
        self.close()
        self.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ appending

    @property
    def depth(self) -> int:
        return self.model.depth

    @property
    def size(self) -> int:
        """Bytes in the file plus bytes waiting to be written."""
        return self._size + self._inflight + len(self._buf)

    def _append(self, payload: dict[str, Any], states: dict[str, Any] | None = None) -> int:
        return self._push(encode_record(payload), states)

    def _push(self, record: bytes, states: dict[str, Any] | None = None) -> int:
        """Append an encoded record for the writer: the ticket to wait for. A writer
        thread busy with a group takes it when that group is synced, without waiting
        for the trio loop; an idle one is woken by :meth:`run`."""
        with self._lock:
            self._buf += record
            if states:
                self._buf_states.update(states)
            self._appended += 1
            ticket = self._appended
            idle = not self._go
        if idle:
            self._wake.set()
        return ticket

    def _next_end(self, qid: str, n: int) -> int:
        return self.model.ends.get(qid, 0) + n

    def accept(self, qid: str, port: str, msgs: list[Any]) -> tuple[int, int]:
        """Journal an inject of ``msgs`` for ``qid``: (its end position, the ticket to
        wait for with :meth:`durable`). Raises JournalFull, nothing journaled."""
        end = self._next_end(qid, len(msgs))
        payload = {"k": "i", "q": qid, "p": port, "e": end, "m": _msgs(msgs)}
        record = encode_record(payload)
        self._check_room(len(record))
        ticket = self._push(record)
        self.model.add(qid, port, end, msgs)
        return end, ticket

    def commit(
        self,
        consumed: dict[str, int],
        emits: Iterable[tuple[str, str, list[Any]] | tuple[str, str, bytes, int]],
        states: dict[str, Any],
    ) -> list[int]:
        """One host ``done`` (or states and emits reported outside of one): what it
        consumed, the cross-runtime messages it produced (their end positions are
        returned, in order) and the states that changed, as one record. Never refuses:
        this is the consequence of work already done (the reserve is kept for it)."""
        entries = []
        ends = []
        for qid, end in consumed.items():
            self.model.consume(qid, end)
        for emit in emits:
            # (module, port, msgs), or (module, port, raw JSON array bytes, their count)
            qid, port, msgs = emit[0], emit[1], emit[2]
            count = emit[3] if len(emit) > 3 else len(msgs)  # type: ignore[misc]
            end = self._next_end(qid, count)
            self.model.add(qid, port, end, msgs, count)
            entries.append([qid, port, end, _msgs(msgs)])
            ends.append(end)
        self.model.states.update(states)
        payload: dict[str, Any] = {"k": "d"}
        if consumed:
            payload["c"] = consumed
        if entries:
            payload["x"] = entries
        if states:
            payload["s"] = states
        self._append(payload, states)
        return ends

    def forget(self, qid: str) -> None:
        """A module was removed from the flow (hot swap): its stream counts as consumed
        (what waited for it is dropped, as the swap reports)."""
        end = self.model.ends.get(qid, 0)
        if end > self.model.consumed.get(qid, 0):
            self.commit({qid: end}, (), {})

    def check_room(self, n: int) -> None:
        """Raise JournalFull unless about ``n`` more bytes may be journaled now."""
        self._check_room(n)

    def _check_room(self, n: int) -> None:
        if self.size + n > self.max_bytes:
            self._compact = True
            self._wake.set()
            raise JournalFull(
                f"the journal of this flow is at its size bound ({self.max_bytes} bytes, "
                f"{self.depth} messages not yet handled); the message was not accepted, "
                "try again once the flow has caught up",
                path=str(self.path),
            )
        if self.error is not None:
            raise JournalFull(
                f"the journal cannot be written ({self.error}); the message was not accepted",
                errno=self.error.errno,
                path=str(self.path),
            )
        free = self._free_space()
        if free is not None and free < self.reserve_bytes + n:
            free = self._free_space(fresh=True)  # a refusal is never from an old figure
        if free is not None and free < self.reserve_bytes + n:
            raise JournalFull(
                f"could not store the message in the journal: no space left on the device "
                f"({max(free, 0)} bytes free, {self.reserve_bytes} kept in reserve) ({self.path}); "
                "the message was not accepted, try again once space is freed",
                errno=_errno.ENOSPC,
                path=str(self.path),
            )

    def _free_space(self, *, fresh: bool = False) -> int | None:
        """Bytes free on the journal's device for more records (None: unknown). The
        device is asked at most every :data:`FREE_SPACE_EVERY` seconds (a ``statvfs`` per
        inject costs the trio thread a system call and the GIL); in between, what this
        journal wrote or buffered since is taken off the last answer."""
        now = time.monotonic()
        if fresh or self._space is None or now - self._space[0] > FREE_SPACE_EVERY:
            try:
                st = os.statvfs(self.path.parent)
            except OSError:
                return None
            self._space = (now, st.f_bavail * st.f_frsize, self._size)
        _, free, size = self._space
        return free - (self._size - size) - self._inflight - len(self._buf)

    async def durable(self, ticket: int | None = None) -> None:
        """Wait until record ``ticket`` (default: every record appended so far) is
        durable. Raises StorageError when a write tried meanwhile failed (the writer
        tries again: a later call may succeed)."""
        if ticket is None:
            ticket = self._appended
        if self._durable < ticket:
            self._wait_for(ticket)
        failures = self._failures
        while self._durable < ticket:
            if self._failures != failures:  # the write tried while we waited failed
                raise StorageError(
                    f"{self.error}; the message is queued but not durable (it is still "
                    "handled unless the runner stops before the journal can be written)",
                    errno=self.error.errno,
                    path=self.error.path,
                )
            await self._synced.wait()

    def _wait_for(self, ticket: int) -> None:
        """Tell the writer thread that record ``ticket`` is waited for: it syncs as soon
        as that record is written (and writes it now if it is idle)."""
        with self._lock:
            if ticket > self._want:
                self._want = ticket
            if self._buf and not self._go:
                self._go = True
            self._work.notify()

    async def compact(self) -> None:
        """Compact now and wait until the new file is in place. Raises StorageError."""
        target = self.compactions + 1
        failures = self._failures
        self._compact = True
        self._wake.set()
        while self.compactions < target:
            if self._failures != failures and self.error is not None:
                raise self.error
            await self._synced.wait()

    def request_compaction(self) -> None:
        """At a checkpoint: compact if the file outgrew ``compact_bytes``."""
        if self._size > self.compact_bytes:
            self._compact = True
            self._wake.set()

    # ------------------------------------------------------------------ the writer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the writer thread until cancelled: wake it when records come while it is
        idle, and hand it compactions (snapshots are made here, on the trio thread,
        where the model lives). Group commit happens in the thread: what was appended
        while a group was written and synced is the next group, started at once."""
        self._token = trio.lowlevel.current_trio_token()
        with self._lock:
            self._stop = self._closing
            self._thread_running = not self._stop
        thread = threading.Thread(
            target=self._writer, name=f"journal {self.path.name}", daemon=True
        )
        if self._thread_running:
            thread.start()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    if self._crash is not None:
                        raise RuntimeError("the journal's writer thread failed") from self._crash
                    if self._compact:
                        self._compact = False
                        self._take_snapshot()
                    with self._lock:
                        if not self._go and (self._buf or self._snapshot is not None):
                            self._go = True
                            self._work.notify()
        finally:
            with self._lock:
                self._stop = True
                self._work.notify()
            if thread.is_alive():
                # what it writes now is finished (not abandoned: a part-written group
                # would be a torn tail); what waits in the buffer is not written
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(thread.join)

    def _take_snapshot(self) -> None:
        """A compaction: one snapshot of everything appended so far (the buffer
        included, which it replaces), for the writer thread to write next."""
        data = bytearray(self._snapshot_bytes())
        with self._lock:
            self._buf = bytearray()
            self._buf_states = {}
            self._snapshot = (data, self._appended, dict(self.model.states))

    def _writer(self) -> None:
        """The writer thread: write groups (and snapshots) as they come, and sync what
        was written as soon as someone waits for it (an inject, :meth:`durable`), when
        :data:`LAZY_SYNC_BYTES` are written and not synced, or :data:`LAZY_SYNC_SECONDS`
        after the first of them: a group nobody waits for needs no fsync of its own, the
        next one covers it (one ``fdatasync`` syncs the whole file). Each durable step is
        reported to the trio thread (:meth:`_finished`)."""
        work = self._work
        sync = self.fsync == "always"
        written = synced = 0  # records written to the file, records synced
        synced_size = self._size
        unsynced: list[bytearray] = []  # written, not synced (kept to write again)
        unsynced_states: dict[str, Any] = {}
        unsynced_bytes = 0
        since = 0.0  # when the oldest unsynced group was written
        try:
            while True:
                job = None
                data = None
                with work:
                    while not self._stop:
                        if self._go:
                            job = self._snapshot
                            if job is not None:
                                data, upto, states = job
                            else:
                                data, self._buf = self._buf, bytearray()
                                states, self._buf_states = self._buf_states, {}
                                upto = self._appended
                            self._inflight = len(data)
                            break
                        if written > synced:
                            late = since + LAZY_SYNC_SECONDS - time.monotonic()
                            if self._want > synced or late <= 0:
                                break  # sync what was written
                            work.wait(late)
                        else:
                            work.wait()
                    else:
                        return
                failure: OSError | None = None
                if data is not None:
                    try:
                        if job is not None:
                            self._rewrite(data)
                        else:
                            self._write(data)
                    except OSError as exc:
                        failure = exc
                    with work:
                        self._inflight = 0
                        if job is not None:
                            if failure is None and self._snapshot is job:
                                self._snapshot = None
                            # failed: the same snapshot is tried again (what was appended
                            # meanwhile follows it in the new file)
                        elif failure is not None and self._snapshot is None:
                            # tried again in front of what was appended meanwhile (a
                            # snapshot taken meanwhile holds this group already)
                            self._buf = data + self._buf
                            self._buf_states = {**states, **self._buf_states}
                        self._go = bool(self._buf) or self._snapshot is not None
                        wanted = self._want
                    if failure is not None:
                        self._report(upto, states, job is not None, failure)
                        self._pause()
                        continue
                    if job is not None or not sync:
                        # a snapshot is synced (it holds all that was written before it)
                        written = synced = upto
                        synced_size = self._size
                        unsynced.clear()
                        unsynced_states.clear()
                        unsynced_bytes = 0
                        self._report(upto, states, job is not None, None)
                        continue
                    if written == synced:
                        since = time.monotonic()
                    written = upto
                    unsynced.append(data)
                    unsynced_states.update(states)
                    unsynced_bytes += len(data)
                    if unsynced_bytes < LAZY_SYNC_BYTES and not synced < wanted <= written:
                        # Nobody waits for what is written yet (or what they wait for is
                        # still to write): synced with a later group, when someone waits,
                        # or lazily (the loop above).
                        continue
                # sync everything written so far
                try:
                    os.fdatasync(self._fd_or_closed())
                except OSError as exc:
                    # Whether the failed range reached the disk is unknown (and a retried
                    # fsync may not say): cut it off and write it again.
                    try:
                        os.ftruncate(self._fd_or_closed(), synced_size)
                    except OSError:
                        pass  # the file is closed or broken: the next write says so
                    self._size = synced_size
                    with work:
                        if self._snapshot is None:
                            self._buf = bytearray().join(unsynced) + self._buf
                            self._buf_states = {**unsynced_states, **self._buf_states}
                        self._go = bool(self._buf) or self._snapshot is not None
                    written = synced
                    unsynced.clear()
                    unsynced_states.clear()
                    unsynced_bytes = 0
                    self._report(synced, {}, False, exc)
                    self._pause()
                    continue
                synced = written
                synced_size = self._size
                states = dict(unsynced_states)
                unsynced.clear()
                unsynced_states.clear()
                unsynced_bytes = 0
                self._report(synced, states, False, None)
        except BaseException as exc:
            # A bug, not an OSError: raised by the journal's task (Journal.run), as an
            # error in a worker thread of trio.to_thread would be.
            self._crash = exc
            if self._token is not None:
                try:
                    self._token.run_sync_soon(self._wake_run)
                except trio.RunFinishedError:
                    pass
        finally:
            with work:
                self._thread_running = False
                closing = self._closing
            if closing:
                self._close_fd()
                if self._removed:  # a compaction may have put the file back meanwhile
                    self.path.unlink(missing_ok=True)

    def _wake_run(self) -> None:
        self._wake.set()

    def _pause(self) -> None:
        """After a failed write: wait a moment (or until stopped) before trying again."""
        with self._work:
            self._work.wait_for(lambda: self._stop, FAILED_WRITE_PAUSE)

    def _fd_or_closed(self) -> int:
        if self._fd is None:
            raise OSError(_errno.EBADF, "the journal is closed")
        return self._fd

    def _report(
        self, upto: int, states: dict[str, Any], compacting: bool, failure: OSError | None
    ) -> None:
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._finished, upto, states, compacting, failure)
        except trio.RunFinishedError:
            pass  # the trio run is over: nobody waits for this group any more

    def _finished(
        self, upto: int, states: dict[str, Any], compacting: bool, failure: OSError | None
    ) -> None:
        """On the trio thread: a group (or snapshot) is durable, or its write failed."""
        if failure is not None:
            self.error = StorageError.from_os_error(failure, "the journal", self.path)
            self._failures += 1
        else:
            if compacting:
                self.compactions += 1
            self.error = None
            self.groups += 1
            if upto > self._durable:
                self._durable = upto
            self.durable_states.update(states)
        self._release()

    def _release(self) -> None:
        synced, self._synced = self._synced, trio.Event()
        synced.set()

    def _write(self, data: bytes | bytearray) -> None:
        fd = self._fd
        if fd is None:
            raise OSError(_errno.EBADF, "the journal is closed")
        try:
            _write_all(fd, data)
        except OSError:
            # A part written before the error is a torn tail: cut it, the group goes again.
            os.ftruncate(fd, self._size)
            raise
        self._size += len(data)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
