"""The runner's state directory: flows, whether they should run, module state snapshots.

Layout (one file per flow, so a write never rewrites what did not change)::

    <state dir>/
        flows/<flow id>.json     {"revision": 3, "running": true, "flow": {flow document}}
        states/<flow id>.json    {"saved": 1732500000.0, "modules": {"<module id>": state}}
        fifos/                   the runtimes' FIFO folders (cleared when a runner starts)
        lock                     held (flock) by the one runner using this state dir

Flow documents are stored standalone (module files inlined), so a stored flow does not
depend on the directory it was first loaded from. ``running`` is what the user asked
for (``startFlow``/``stopFlow``), not what the process happened to be doing when it
stopped: a runner that shuts down keeps its flows marked running, and starts them
again when it comes back with the same state dir.

Every write is atomic: a temporary file in the same folder, flushed and fsynced, then
renamed over the old one; a crash leaves the old file or the new one, never half of one.

Error handling: a file that cannot be read back (truncated by a full disk, edited by
hand) is moved aside as ``<name>.corrupt`` and reported by :meth:`FlowStore.load`; the
other flows still load.

Resource handling: :meth:`FlowStore.lock` keeps one file descriptor open (the lock)
until :meth:`FlowStore.unlock`; every other call opens, writes and closes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import orjson

from .errors import RunnerError

__all__ = ["FlowStore", "StateDirInUse", "StoredFlow"]


class StateDirInUse(RunnerError):
    code = "state_dir_in_use"


@attrs.frozen
class StoredFlow:
    flow_id: str
    document: dict[str, Any]
    revision: int
    running: bool
    states: dict[str, Any]


class FlowStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.flows_dir = root / "flows"
        self.states_dir = root / "states"
        self.fifos_dir = root / "fifos"
        self._lock_fd: int | None = None

    @classmethod
    def open(cls, root: Path) -> FlowStore:
        """Create the directories if needed (mode 0700: flows hold code and data)."""
        store = cls(Path(root))
        for folder in (store.root, store.flows_dir, store.states_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return store

    def lock(self) -> None:
        """Take the state dir for this process, and clear the FIFO folders a runner that
        was killed left behind. Raises :class:`StateDirInUse` if another runner has it."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirInUse(
                f"the state dir {self.root} is in use by another runner (pid {holder}); "
                "give each runner its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        shutil.rmtree(self.fifos_dir, ignore_errors=True)
        self.fifos_dir.mkdir(mode=0o700)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ writing

    def save_flow(
        self, flow_id: str, document: dict[str, Any], *, revision: int, running: bool
    ) -> None:
        data = {"revision": revision, "running": running, "flow": document}
        atomic_write(self.flows_dir / f"{flow_id}.json", orjson.dumps(data))

    def save_states(self, flow_id: str, states: dict[str, Any]) -> None:
        data = {"saved": time.time(), "modules": states}
        atomic_write(self.states_dir / f"{flow_id}.json", orjson.dumps(data))

    def remove(self, flow_id: str) -> None:
        for path in (self.flows_dir / f"{flow_id}.json", self.states_dir / f"{flow_id}.json"):
            path.unlink(missing_ok=True)
        _fsync_dir(self.flows_dir)

    # ------------------------------------------------------------------ reading

    def load(self) -> tuple[list[StoredFlow], list[str]]:
        """Every stored flow, sorted by id, and a list of problems (files set aside)."""
        flows: list[StoredFlow] = []
        problems: list[str] = []
        for path in sorted(self.flows_dir.glob("*.json")):
            flow_id = path.stem
            try:
                data = orjson.loads(path.read_bytes())
                document = data["flow"]
                revision = data["revision"]
                running = data["running"]
                if not (
                    isinstance(document, dict)
                    and isinstance(revision, int)
                    and isinstance(running, bool)
                ):
                    raise TypeError("fields have the wrong types")
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                problems.append(f"{path}: unreadable ({exc}); moved to {self._set_aside(path)}")
                continue
            states: dict[str, Any] = {}
            state_path = self.states_dir / f"{flow_id}.json"
            if state_path.exists():
                try:
                    modules = orjson.loads(state_path.read_bytes())["modules"]
                    if not isinstance(modules, dict):
                        raise TypeError("'modules' is not an object")
                    states = modules
                except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    moved = self._set_aside(state_path)
                    problems.append(
                        f"{state_path}: unreadable ({exc}); moved to {moved}; flow {flow_id!r} starts without its module state"
                    )
            flows.append(StoredFlow(flow_id, document, revision, running, states))
        return flows, problems

    @staticmethod
    def _set_aside(path: Path) -> Path:
        target = path.with_name(path.name + ".corrupt")
        os.replace(path, target)
        return target


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
