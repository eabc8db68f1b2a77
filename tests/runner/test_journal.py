"""Journaled flows (runner/JOURNAL.md): the record format, recovery of a torn tail, and
a journaled python -> node -> python flow handled across runner restarts."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio

from fifoflow.flows import FlowError
from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.errors import JournalFull, StorageError
from fifoflow.runner.journal import MAGIC, Journal, encode_record, read_records

from .helpers import make_flow

if TYPE_CHECKING:
    from pathlib import Path

#: python -> node -> python; ``count`` counts distinct ids in order (duplicates and gaps
#: are counted apart), the others count what they see
COUNTER: dict[str, Any] = {
    "id": "counter",
    "durability": "journal",
    "modules": [
        {
            "id": "add",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
                "    return msg\n"
            ),
        },
        {
            "id": "double",
            "runtime": "node",
            "code": (
                "exports.handle = (msg, ctx) => {\n"
                "  ctx.state.seen = (ctx.state.seen || 0) + 1;\n"
                "  return msg;\n"
                "};\n"
            ),
        },
        {
            "id": "count",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    s = ctx.state\n"
                "    last = s.get('last', -1)\n"
                "    if msg['id'] <= last:\n"
                "        s['dups'] = s.get('dups', 0) + 1\n"
                "        return None\n"
                "    if msg['id'] != last + 1:\n"
                "        s['gaps'] = s.get('gaps', 0) + 1\n"
                "    s['last'] = msg['id']\n"
                "    s['count'] = s.get('count', 0) + 1\n"
                "    return None\n"
            ),
        },
    ],
    "wires": ["add.out -> double.in", "double.out -> count.in"],
}


def _batch(start: int, n: int) -> list[dict[str, int]]:
    return [{"id": i} for i in range(start, start + n)]


# ---------------------------------------------------------------------- the format


def test_records_round_trip_and_a_torn_or_flipped_record_ends_the_journal() -> None:
    header = MAGIC + b"\x01\x00\x00\x00"
    records = [{"k": "i", "q": "f/a", "p": "in", "e": n, "m": [n]} for n in range(1, 4)]
    data = header + b"".join(encode_record(r) for r in records)
    assert read_records(data) == (records, len(data))
    cut = len(data) - 5  # the last record torn mid-way
    assert read_records(data[:cut]) == (records[:2], len(data) - len(encode_record(records[2])))
    flipped = bytearray(data)
    flipped[-3] ^= 0x40  # a bit flipped inside the last record's payload
    assert read_records(bytes(flipped))[0] == records[:2]
    # zeros (a file extended but not written) are no record
    assert read_records(data + b"\x00" * 64) == (records, len(data))


async def test_a_journal_is_versioned_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_bytes(b"not a journal at all")
    with pytest.raises(StorageError, match="is not a fifoflow journal"):
        Journal.open(path)
    path.write_bytes(MAGIC + b"\x09\x00\x00\x00")
    with pytest.raises(StorageError, match="journal of format 9; this runner reads up to 1"):
        Journal.open(path)
    assert path.read_bytes() == MAGIC + b"\x09\x00\x00\x00"  # left as it was


async def test_records_are_durable_in_groups_and_recovered(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        tickets = [journal.accept("f/a", "in", [i, i + 1])[1] for i in range(0, 20, 2)]
        await journal.durable(tickets[-1])
        assert journal.groups <= 2  # appended together, written together
        # a host handled the first 5 messages of f/a, and emitted two to f/b
        assert journal.commit({"f/a": 5}, [("f/b", "in", ["x", "y"])], {"f/a": {"n": 5}}) == [2]
        await journal.durable()
        assert journal.durable_states == {"f/a": {"n": 5}}
        assert journal.depth == 15 + 2
        nursery.cancel_scope.cancel()
    journal.close()
    again = Journal.open(path)
    try:
        assert again.model.states == {"f/a": {"n": 5}}
        pending = again.model.pending()
        assert pending["f/a"][0] == ("in", 6, [5])  # the rest of a partly handled entry
        assert [m for _, _, msgs in pending["f/a"] for m in msgs] == list(range(5, 20))
        assert pending["f/b"] == [("in", 2, ["x", "y"])]
        assert again.depth == 17
    finally:
        again.close()


async def test_a_full_journal_refuses_and_queues_nothing(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.log", max_bytes=2000)
    try:
        journal.accept("f/a", "in", ["x" * 500])
        with pytest.raises(JournalFull, match="at its size bound \\(2000 bytes"):
            journal.accept("f/a", "in", ["x" * 2000])
        assert journal.depth == 1
        huge = Journal.open(tmp_path / "k.log", reserve_bytes=1 << 62)
        with pytest.raises(JournalFull, match="no space left on the device"):
            huge.accept("f/a", "in", [1])
        assert huge.depth == 0
        huge.close()
    finally:
        journal.close()


async def test_records_nobody_waits_for_are_synced_lazily_and_the_writer_ends(
    tmp_path: Path,
) -> None:
    # A host's done record has no waiter: written at once, synced with a later group or
    # lazily (LAZY_SYNC_SECONDS); an inject's group is synced as soon as it is written.
    path = tmp_path / "j.log"
    journal = Journal.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.commit({}, [], {"f/a": {"n": 1}})
        with trio.fail_after(5):
            while "f/a" not in journal.durable_states:  # nobody called durable()
                await journal._synced.wait()
        _, ticket = journal.accept("f/a", "in", [1])
        with trio.fail_after(5):
            await journal.durable(ticket)
        assert read_records(path.read_bytes())[0][-1]["m"] == [1]
        assert any(t.name == "journal j.log" for t in threading.enumerate())
        nursery.cancel_scope.cancel()
    # the writer thread is joined when its task ends
    assert not any(t.name == "journal j.log" for t in threading.enumerate())
    journal.close()
    again = Journal.open(path)
    assert again.model.states == {"f/a": {"n": 1}}
    again.close()


async def test_a_bug_in_the_writer_thread_ends_the_journals_task(tmp_path: Path) -> None:
    # Not an OSError (those are tried again): the task raises it, nobody waits forever.
    journal = Journal.open(tmp_path / "j.log")

    def broken(data: bytes) -> None:
        raise ZeroDivisionError("a bug")

    journal._write = broken  # type: ignore[method-assign]
    journal.accept("f/a", "in", [1])  # for the writer as soon as it runs
    with trio.fail_after(5), pytest.raises(RuntimeError, match="writer thread failed") as info:
        await journal.run()
    journal.close()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not any(t.name == "journal j.log" for t in threading.enumerate())


async def test_a_refusal_for_space_asks_the_device_again(tmp_path: Path) -> None:
    # The free space is asked at most every FREE_SPACE_EVERY seconds, but an old figure
    # never refuses: space freed a moment ago is seen at once.
    mount = tmp_path / "small"
    if not mount_tmpfs(mount, "8m"):
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs (the test runs as root on the test machines)")
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        journal = Journal.open(mount / "j.log", reserve_bytes=1 << 20)
        try:
            filler = fill(mount, 512 << 10)
            with pytest.raises(JournalFull, match="no space left on the device"):
                journal.accept("f/a", "in", ["x"])
            filler.unlink()
            journal.accept("f/a", "in", ["x"])  # within the interval, yet accepted
            assert journal.depth == 1
        finally:
            journal.close()
    finally:
        unmount(mount)


def test_an_unknown_durability_is_refused_clearly() -> None:
    with pytest.raises(FlowError, match="durability: unknown durability 'sometimes'"):
        make_flow({**COUNTER, "durability": "sometimes"})


async def test_a_journaled_flow_needs_a_state_dir() -> None:
    async with open_runner(RunnerConfig()) as runner:
        with pytest.raises(Exception, match="durability 'journal' needs a state dir"):
            await runner.add_or_update_flow(make_flow(COUNTER))


# ---------------------------------------------------------------------- in a runner


async def test_a_journaled_flow_comes_back_where_it_was(tmp_path: Path) -> None:
    """Graceful restarts, a torn tail cut mid-record in between: every message handled
    once, states where they were, the flow runs on."""
    config = RunnerConfig(state_dir=tmp_path)
    async with open_runner(config) as runner:
        await runner.add_or_update_flow(make_flow(COUNTER))
        await runner.start_flow("counter")
        for start in range(0, 600, 100):
            await runner.inject("counter", "add", "in", _batch(start, 100))
        await runner.wait_idle("counter")
        assert runner.module_state("counter", "count") == {"last": 599, "count": 600}
        await runner.inject("counter", "add", "in", _batch(600, 50))
    path = tmp_path / "journal" / "counter.log"
    data = path.read_bytes()
    records, end = read_records(data)
    assert end == len(data)
    # Cut the file in the middle of the last inject's record: that inject and all that
    # follows is a torn tail; what comes back is the flow as it was before it.
    offsets = []
    offset = 8
    for record in records:
        size = len(encode_record(record))
        offsets.append((offset, size, record))
        offset += size
    start, size, record = next(o for o in reversed(offsets) if o[2]["k"] == "i")
    assert record["m"][0] == {"id": 600}
    os.truncate(path, start + size // 2)
    async with open_runner(config) as runner:
        assert any("torn or corrupt record" in p for p in runner.restore_problems)
        assert runner.module_state("counter", "count") == {"last": 599, "count": 600}
        assert runner.describe_flow("counter")["status"] == "running"
        await runner.inject("counter", "add", "in", _batch(600, 100))
        await runner.wait_idle("counter")
        assert runner.module_state("counter", "count") == {"last": 699, "count": 700}
        assert runner.module_state("counter", "double") == {"seen": 700}
        journal = runner._journals["counter"]
        assert journal.depth == 0
    # nothing left to do after a graceful stop: the journal holds no message
    again = Journal.open(path)
    assert again.depth == 0
    again.close()


async def test_messages_queued_in_a_stopped_journaled_flow_survive_an_update(
    tmp_path: Path,
) -> None:
    config = RunnerConfig(state_dir=tmp_path)
    async with open_runner(config) as runner:
        await runner.add_or_update_flow(make_flow(COUNTER))
        await runner.start_flow("counter")
        await runner.inject("counter", "add", "in", _batch(0, 10))
        await runner.wait_idle("counter")
        await runner.stop_flow("counter")
        # an update of the stopped flow: a new version of `count` (same counting)
        doc = {**COUNTER, "description": "v2"}
        await runner.add_or_update_flow(make_flow(doc))
        await runner.start_flow("counter")
        await runner.inject("counter", "add", "in", _batch(10, 10))
        await runner.wait_idle("counter")
        assert runner.module_state("counter", "count") == {"last": 19, "count": 20}
        with pytest.raises(Exception, match="stop it to change its durability"):
            await runner.add_or_update_flow(make_flow({**doc, "durability": "checkpoint"}))
        await runner.remove_flow("counter")
        assert not (tmp_path / "journal" / "counter.log").exists()


async def test_compaction_keeps_exactly_what_the_journal_holds(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    journal = Journal.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(0, 1000, 10):
            journal.accept("f/a", "in", list(range(i, i + 10)))
        journal.commit({"f/a": 995}, [("f/b", "in", ["x"])], {"f/a": {"n": 995}})
        await journal.durable()
        before = path.stat().st_size
        expected = (journal.model.pending(), dict(journal.model.states), journal.depth)
        await journal.compact()
        assert path.stat().st_size < before / 10
        # appended after the compaction: goes on the new file
        journal.accept("f/a", "in", [1000])
        await journal.durable()
        nursery.cancel_scope.cancel()
    journal.close()
    again = Journal.open(path)
    try:
        pending = again.model.pending()
        assert pending["f/a"] == [*expected[0]["f/a"], ("in", 1001, [1000])]
        assert pending["f/b"] == expected[0]["f/b"]
        assert again.model.states == expected[1]
        assert again.depth == expected[2] + 1
    finally:
        again.close()


async def test_a_runner_compacts_journals_at_checkpoints(tmp_path: Path) -> None:
    config = RunnerConfig(state_dir=tmp_path, journal_compact_bytes=20_000)
    async with open_runner(config) as runner:
        await runner.add_or_update_flow(make_flow(COUNTER))
        await runner.start_flow("counter")
        for start in range(0, 2000, 100):
            await runner.inject("counter", "add", "in", _batch(start, 100))
        await runner.wait_idle("counter")
        journal = runner._journals["counter"]
        assert journal.size > 20_000
        runner.checkpoint()  # asks the writer to compact the journal
        await journal.compact()  # and waits until one is done
        assert journal.compactions >= 1
        assert (tmp_path / "journal" / "counter.log").stat().st_size < 2_000
        await runner.inject("counter", "add", "in", _batch(2000, 10))
        await runner.wait_idle("counter")
    async with open_runner(config) as runner:
        assert runner.module_state("counter", "count") == {"last": 2009, "count": 2010}


def mount_tmpfs(path: Path, size: str) -> bool:
    """A small tmpfs at ``path`` (a full disk on demand); False where mounting is not
    allowed (not root). Undo with :func:`unmount`."""
    path.mkdir(parents=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
    except OSError:
        return False
    return done.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` but for ``leave`` bytes; the filler file."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


async def test_a_write_that_meets_a_full_disk_is_tried_again_and_corrupts_nothing(
    tmp_path: Path,
) -> None:
    mount = tmp_path / "small"
    if not mount_tmpfs(mount, "8m"):
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs (the test runs as root on the test machines)")
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        path = mount / "j.log"
        journal = Journal.open(path, reserve_bytes=0)
        try:
            await _fill_and_free(journal, mount)
        finally:
            journal.close()
        again = Journal.open(path)
        assert again.dropped_bytes == 0
        assert [m for _, _, msgs in again.model.pending()["f/a"] for m in msgs] == [
            "before",
            "x" * 20_000,
        ]
        again.close()
    finally:
        unmount(mount)


async def _fill_and_free(journal: Journal, mount: Path) -> None:
    """A group that meets a full disk fails (its waiters are told), is kept, and is
    written once space returns."""
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.accept("f/a", "in", ["before"])
        await journal.durable()
        _, ticket = journal.accept("f/a", "in", ["x" * 20_000])  # room checked: yes
        filler = fill(mount, 0)  # ...and gone before the writer writes it
        with pytest.raises(StorageError, match="No space left on device"):
            await journal.durable(ticket)
        assert journal.error is not None
        with pytest.raises(JournalFull, match="cannot be written"):
            journal.accept("f/a", "in", ["refused"])
        filler.unlink()
        with trio.fail_after(10):
            await journal.durable(ticket)  # tried again by the writer
        assert journal.error is None
        nursery.cancel_scope.cancel()


async def test_an_inject_too_big_for_the_journal_is_refused_whole(tmp_path: Path) -> None:
    config = RunnerConfig(state_dir=tmp_path, journal_max_bytes=60_000)
    async with open_runner(config) as runner:
        await runner.add_or_update_flow(make_flow(COUNTER))
        await runner.start_flow("counter")
        big = [{"id": i, "pad": "x" * 40} for i in range(3000)]  # three chunks, ~150 kB
        with pytest.raises(JournalFull, match="at its size bound"):
            await runner.inject("counter", "add", "in", big)
        assert runner.describe_flow("counter")["pending"] == 0
        assert runner.describe_flow("counter")["journaled"] == 0
        await runner.inject("counter", "add", "in", _batch(0, 10))
        await runner.wait_idle("counter")
        assert runner.module_state("counter", "count") == {"last": 9, "count": 10}


async def test_raw_bodies_are_journaled_as_they_came_and_a_broken_one_is_skipped(
    tmp_path: Path,
) -> None:
    # A raw host's emit goes into the record as its bytes; at replay it is values again.
    # A body that is not JSON (a host breaking the protocol) makes an intact record that
    # does not parse: skipped, and the records after it are still read.
    path = tmp_path / "f.log"
    journal = Journal.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.accept("f/a", "in", [1, 2, 3])
        assert journal.commit({"f/a": 3}, [("f/b", "in", b'[{"x":1},"y"]', 2)], {}) == [2]
        journal.commit({}, [("f/b", "in", b"[not json", 1)], {})
        journal.commit({}, [("f/c", "in", [7])], {"f/a": {"n": 3}})
        await journal.durable()
        nursery.cancel_scope.cancel()
    journal.close()
    data = path.read_bytes()
    records, offset = read_records(data)
    assert offset == len(data)
    assert [r["k"] for r in records] == ["s", "i", "d", "d"]  # (the broken one left out)
    assert records[2]["x"] == [["f/b", "in", 2, [{"x": 1}, "y"]]]
    again = Journal.open(path)
    try:
        pending = again.model.pending()
        assert pending["f/b"] == [("in", 2, [{"x": 1}, "y"])]
        assert pending["f/c"] == [("in", 1, [7])]
        assert again.model.states["f/a"] == {"n": 3}
    finally:
        again.close()
