"""The state dir: file names derived from any id, old layouts, write failures per flow."""

from __future__ import annotations

import errno
import re
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from fifoflow.api.common.errors import from_exception
from fifoflow.flows.limits import MAX_ID
from fifoflow.runner import (
    EventKind,
    FlowStore,
    RunnerConfig,
    StorageError,
    StorageFull,
    open_runner,
)
from fifoflow.runner.store import file_stem

from .helpers import make_flow

if TYPE_CHECKING:
    from pathlib import Path

#: ids the store must keep apart, far beyond what validation lets through
IDS = [
    "a",
    "A",
    "_",
    "-",
    "a" * MAX_ID,
    "a" * (MAX_ID + 1),
    "a" * (MAX_ID + 2),
    "x" * 10_000,
    "a~b",
    "a_b",
    "a/b",
    "a b",
    ".",
    "..",
    ".hidden",
    "",
    "é",
    "e\u0301",
    "流れ",
    "a.json",
    "con",
    "a\nb",
    "a\x00b",
]


def test_file_names_are_injective_bounded_readable_and_plain_for_valid_ids() -> None:
    names = [file_stem(i) for i in IDS]
    assert len(set(names)) == len(IDS)
    for flow_id, name in zip(IDS, names, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9_~-]{1,128}", name), (flow_id, name)
        # with ".json" and the temporary file's ".<name>.<pid>.tmp", within NAME_MAX
        assert len(f".{name}.json.4194304.tmp".encode()) <= 255
    assert file_stem("a" * MAX_ID) == "a" * MAX_ID
    assert file_stem("Flow_1-x") == "Flow_1-x"
    assert file_stem("a/b").startswith("a_b~")
    assert file_stem("x" * 10_000).startswith("x" * 64 + "~")


def test_any_id_round_trips_through_the_store(tmp_path: Path) -> None:
    store = FlowStore.open(tmp_path)
    for n, flow_id in enumerate(IDS):
        store.save_flow(flow_id, {"id": flow_id}, revision=n, running=n % 2 == 0)
        store.save_states(flow_id, {"m": {"n": n}})
    flows, problems = store.load()
    assert problems == []
    assert [(f.flow_id, f.revision, f.states) for f in flows] == sorted(
        (flow_id, n, {"m": {"n": n}}) for n, flow_id in enumerate(IDS)
    )
    for flow_id in IDS:
        store.remove(flow_id)
    assert list((tmp_path / "flows").iterdir()) == []
    assert list((tmp_path / "states").iterdir()) == []


def _old_layout(state_dir: Path, flow_id: str, document: dict[str, Any], states: Any) -> None:
    """Files as the first layout wrote them: named ``<id>.json``, no ``id`` inside."""
    for folder in ("flows", "states"):
        (state_dir / folder).mkdir(parents=True, exist_ok=True)
    flow = {"revision": 2, "running": True, "flow": document}
    (state_dir / "flows" / f"{flow_id}.json").write_bytes(orjson.dumps(flow))
    saved = {"saved": 1.0, "modules": states}
    (state_dir / "states" / f"{flow_id}.json").write_bytes(orjson.dumps(saved))


COUNTER: dict[str, Any] = {
    "fifoflow": 1,
    "id": "counter",
    "modules": [
        {
            "id": "count",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
                "    return ctx.state['seen']\n"
            ),
        }
    ],
}


async def test_a_runner_upgraded_in_place_opens_its_old_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    _old_layout(state_dir, "counter", COUNTER, {"count": {"seen": 5}})
    # the first layout stored ids up to 250 characters; they are refused now
    long_id = "L" * 200
    _old_layout(state_dir, long_id, {**COUNTER, "id": long_id}, {})
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        [problem] = runner.restore_problems
        assert "no longer valid" in problem
        assert "id: 200 characters, at most 128" in problem
        assert [f["id"] for f in runner.flows()] == ["counter"]
        assert runner.describe_flow("counter")["status"] == "running"
        assert runner.module_state("counter", "count") == {"seen": 5}
        sub = runner.subscribe(flows=["counter"], kinds=["output"])
        await runner.inject("counter", "count", "in", [1])
        with trio.fail_after(20):
            assert (await sub.receive())["msgs"] == [6]
        await runner.stop_flow("counter")
    # files now carry their id; the long one was renamed to its bounded name
    assert sorted(p.name for p in (state_dir / "flows").iterdir()) == sorted(
        ["counter.json", f"{file_stem(long_id)}.json"]
    )
    assert sorted(p.name for p in (state_dir / "states").iterdir()) == sorted(
        ["counter.json", f"{file_stem(long_id)}.json"]
    )
    stored = orjson.loads((state_dir / "states" / "counter.json").read_bytes())
    assert (stored["id"], stored["modules"]) == ("counter", {"count": {"seen": 6}})
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        assert runner.module_state("counter", "count") == {"seen": 6}
        assert runner.describe_flow("counter")["wantRunning"] is False


def test_a_second_file_for_one_flow_is_set_aside_not_merged(tmp_path: Path) -> None:
    store = FlowStore.open(tmp_path)
    store.save_flow("a", {"id": "a"}, revision=4, running=False)
    copy = (tmp_path / "flows" / "a.json").read_bytes()
    (tmp_path / "flows" / "0-copy-of-a.json").write_bytes(copy)
    [flow], [problem] = store.load()
    assert (flow.flow_id, flow.revision) == ("a", 4)
    assert "a second file for flow 'a'" in problem
    assert (tmp_path / "flows" / "0-copy-of-a.json.corrupt").exists()
    assert (tmp_path / "flows" / "a.json").read_bytes() == copy


async def test_a_flow_that_cannot_be_saved_is_not_registered(tmp_path: Path) -> None:
    """A directory where the flow's file goes: a real EISDIR from rename(2)."""
    state_dir = tmp_path / "state"
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        (state_dir / "flows" / "blocked.json").mkdir()
        with pytest.raises(StorageError) as caught:
            await runner.add_or_update_flow(make_flow({**COUNTER, "id": "blocked"}))
        assert caught.value.code == "storage_error"
        assert caught.value.errno == errno.EISDIR
        assert "could not store flow 'blocked'" in str(caught.value)
        assert "blocked.json" in str(caught.value)
        assert runner.flows() == []
        assert list((state_dir / "flows").iterdir()) == [state_dir / "flows" / "blocked.json"]
        assert list((state_dir / "flows" / "blocked.json").iterdir()) == []
        assert await runner.add_or_update_flow(make_flow(COUNTER)) is True
        assert [f["id"] for f in runner.flows()] == ["counter"]
        # an update of a stopped flow that cannot be written leaves the old version
        (state_dir / "flows" / "counter.json").unlink()
        (state_dir / "flows" / "counter.json").mkdir()
        with pytest.raises(StorageError):
            await runner.apply_flow(make_flow({**COUNTER, "description": "new"}))
        assert runner.describe_flow("counter")["revision"] == 1
        assert "description" not in runner.flow_document("counter")
        # a flow that cannot be marked running is not started
        with pytest.raises(StorageError):
            await runner.start_flow("counter")
        assert runner.describe_flow("counter")["status"] == "stopped"
        # nor removed while its files stay
        (state_dir / "states" / "counter.json").mkdir()
        (state_dir / "states" / "counter.json" / "x").touch()
        with pytest.raises(StorageError):
            await runner.remove_flow("counter")
        assert [f["id"] for f in runner.flows()] == ["counter"]


async def test_one_flows_failed_checkpoint_never_stops_the_others(tmp_path: Path) -> None:
    """A directory where one flow's state file goes (EISDIR); the checkpoint loop runs."""
    state_dir = tmp_path / "state"
    async with open_runner(RunnerConfig(state_dir=state_dir, checkpoint_interval=0.05)) as runner:
        (state_dir / "states" / "blocked.json").mkdir()
        sub = runner.subscribe(kinds=[EventKind.CHECKPOINT])
        # the blocked flow comes first in the runner's order of flows
        for flow_id in ("blocked", "good"):
            await runner.add_or_update_flow(make_flow({**COUNTER, "id": flow_id}))
            await runner.start_flow(flow_id)
            await runner.inject(flow_id, "count", "in", [1, 2, 3])
            await runner.wait_idle(flow_id)
        failures: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while True:
                event = await sub.receive()
                if event["flow"] == "blocked":
                    failures.append(event)
                elif event["modules"] == ["count"]:
                    stored = orjson.loads((state_dir / "states" / "good.json").read_bytes())
                    if stored["modules"] == {"count": {"seen": 3}}:
                        break
        [failure] = failures  # reported once, though every checkpoint tries again
        assert failure["error"]["code"] == "storage_error"
        assert "the module state of flow 'blocked'" in failure["error"]["message"]
        assert "blocked.json" in failure["error"]["message"]
    # leaving the runner (what SIGTERM does) wrote the others and raised nothing
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        assert runner.module_state("good", "count") == {"seen": 3}
        assert {f["id"]: f["status"] for f in runner.flows()} == {
            "blocked": "running",
            "good": "running",
        }
        [problem] = runner.restore_problems
        assert "blocked.json: unreadable" in problem


def test_a_full_disk_is_storage_full_and_507() -> None:
    """ENOSPC as the kernel gives it (/dev/full), through the error the store raises."""
    with (
        pytest.raises(OSError, match="No space left") as caught,
        open("/dev/full", "wb", buffering=0) as full,
    ):
        full.write(b"x")
    error = StorageError.from_os_error(caught.value, "flow 'a'")
    assert isinstance(error, StorageFull)
    assert str(error) == "could not store flow 'a': No space left on device"
    answer = from_exception(error)
    assert (answer.status, answer.code) == (507, "storage_full")
    readonly = StorageError.from_os_error(
        OSError(errno.EROFS, "Read-only file system", "/s/flows/a.json"), "flow 'a'"
    )
    assert not isinstance(readonly, StorageFull)
    assert (from_exception(readonly).status, from_exception(readonly).code) == (
        507,
        "storage_error",
    )
