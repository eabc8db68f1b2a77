"""The runner's state directory: flows, whether they should run, module state snapshots.

Layout (one file per flow, so a write never rewrites what did not change)::

    <state dir>/
        flows/<name>.json     {"id": "a", "revision": 3, "running": true, "flow": {document}}
        states/<name>.json    {"id": "a", "saved": 1732500000.0, "modules": {"<module id>": state}}
        fifos/                the runtimes' FIFO folders (cleared when a runner starts)
        lock                  held (flock) by the one runner using this state dir

File names (:func:`file_stem`): a flow's ``<name>`` is its id when the id is at most
:data:`~fifoflow.flows.limits.MAX_ID` characters of ``A-Z a-z 0-9 _ -`` (every id
validation passes today, so those files read as before); any other id gets its
characters outside that set replaced by ``_``, cut to 64, then ``~`` and 32 hex digits of
the SHA-256 of the id. Plain names never hold ``~`` and hashed ones always do, so two
ids never share a file (short of a SHA-256 collision); every name is ASCII and at most
128 characters, so ``.<name>.json.<pid>.tmp`` fits any file system's 255. The id a file
belongs to is the ``id`` inside it; files written before ``id`` was stored (the first
layout, ``<id>.json``) give it by their name, and are renamed if the id's name is
different now: a runner upgraded in place opens its old state dir.

Flow documents are stored standalone (module files inlined), so a stored flow does not
depend on the directory it was first loaded from. ``running`` is what the user asked
for (``startFlow``/``stopFlow``), not what the process happened to be doing when it
stopped: a runner that shuts down keeps its flows marked running, and starts them
again when it comes back with the same state dir.

Every write is atomic: a temporary file in the same folder, flushed and fsynced, then
renamed over the old one; a crash leaves the old file or the new one, never half of one.

Error handling: a write that fails (a full disk, a read-only mount, a file where a
folder should be) raises :class:`~.errors.StorageError` (:class:`~.errors.StorageFull`
for a full disk) naming the flow, the file and the OS's reason; what was there before
is left as it was. A file that cannot be read back (truncated by a full disk, edited by
hand) is moved aside as ``<name>.corrupt`` and reported by :meth:`FlowStore.load`; the
other flows still load.

Resource handling: :meth:`FlowStore.lock` keeps one file descriptor open (the lock)
until :meth:`FlowStore.unlock`; every other call opens, writes and closes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import orjson

from ..flows.limits import MAX_ID
from .errors import RunnerError, StorageError

__all__ = ["FlowStore", "StateDirInUse", "StoredFlow", "file_stem"]

#: ids stored under their own name: characters every file system takes, at most MAX_ID
_PLAIN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID}}}\Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def file_stem(flow_id: str) -> str:
    """The name (without ``.json``) of a flow's files: injective, ASCII, at most
    ``MAX_ID`` characters, the id itself when that is safe (see the module docstring)."""
    if _PLAIN.match(flow_id):
        return flow_id
    digest = hashlib.sha256(flow_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{_UNSAFE.sub('_', flow_id)[:64]}~{digest}"


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

    def flow_path(self, flow_id: str) -> Path:
        return self.flows_dir / f"{file_stem(flow_id)}.json"

    def states_path(self, flow_id: str) -> Path:
        return self.states_dir / f"{file_stem(flow_id)}.json"

    def save_flow(
        self, flow_id: str, document: dict[str, Any], *, revision: int, running: bool
    ) -> None:
        """Raises :class:`StorageError`; the flow's file is then as it was."""
        data = {"id": flow_id, "revision": revision, "running": running, "flow": document}
        path = self.flow_path(flow_id)
        try:
            atomic_write(path, orjson.dumps(data))
        except OSError as exc:
            raise StorageError.from_os_error(exc, f"flow {flow_id!r}", path) from None

    def save_states(self, flow_id: str, states: dict[str, Any]) -> None:
        """Raises :class:`StorageError`; the last state written is then kept."""
        data = {"id": flow_id, "saved": time.time(), "modules": states}
        path = self.states_path(flow_id)
        try:
            atomic_write(path, orjson.dumps(data))
        except OSError as exc:
            doing = f"the module state of flow {flow_id!r}"
            raise StorageError.from_os_error(exc, doing, path) from None

    def remove(self, flow_id: str) -> None:
        """Remove the flow's files (the flow's first: a state file left over without its
        flow is never read). Raises :class:`StorageError`."""
        for path in (self.flow_path(flow_id), self.states_path(flow_id)):
            try:
                path.unlink(missing_ok=True)
                _fsync_dir(path.parent)
            except OSError as exc:
                doing = f"the removal of flow {flow_id!r}"
                raise StorageError.from_os_error(exc, doing, path) from None

    # ------------------------------------------------------------------ reading

    def load(self) -> tuple[list[StoredFlow], list[str]]:
        """Every stored flow, sorted by id, and a list of problems (files set aside)."""
        flows: list[StoredFlow] = []
        problems: list[str] = []
        seen: set[str] = set()
        for path in sorted(self.flows_dir.glob("*.json")):
            try:
                data = orjson.loads(path.read_bytes())
                document = data["flow"]
                revision = data["revision"]
                running = data["running"]
                # the first layout kept no id beside the document: the name was the id
                flow_id = data.get("id", path.stem)
                if not (
                    isinstance(document, dict)
                    and isinstance(revision, int)
                    and isinstance(running, bool)
                    and isinstance(flow_id, str)
                ):
                    raise TypeError("fields have the wrong types")
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
                problems.append(f"{path}: unreadable ({exc}); moved to {self._set_aside(path)}")
                continue
            own = self.flow_path(flow_id)
            if flow_id in seen or (path != own and own.exists()):
                problems.append(
                    f"{path}: a second file for flow {flow_id!r} (copied by hand?); "
                    f"moved to {self._set_aside(path)}"
                )
                continue
            seen.add(flow_id)
            state_path = self.states_path(flow_id)
            if path != own:
                # a file of the first layout whose id is named differently now
                os.replace(path, own)
                old_state = self.states_dir / path.name
                if old_state.exists() and not state_path.exists():
                    os.replace(old_state, state_path)
            states: dict[str, Any] = {}
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
        return sorted(flows, key=lambda f: f.flow_id), problems

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
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # a half-written temporary file must not keep the space a full disk lacks
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
