"""Errors raised by the runner core.

::

    RunnerError                 base; .code is a stable machine-readable string,
    │                           .field names the argument at fault (or None)
    ├── NotFound                an id names nothing
    │   ├── FlowNotFound        no flow with that id
    │   ├── ModuleNotFound      the flow has no such module
    │   ├── PortNotFound        the module has no such port
    │   └── RuntimeNotFound     no runtime with that id
    ├── FlowStateError          the call does not fit the flow's state (e.g. inject into a stopped flow)
    │   └── RevisionConflict    the caller updated from an old revision of the flow
    ├── NotSupported            this runner does not do that yet (the message says what)
    ├── FlowLoadError           a module's code was refused by its runtime; .module, .error
    ├── RuntimeStartError       a runtime host could not be started or did not say hello
    ├── ProtocolError           a runtime host broke the protocol (garbage, missing field)
    └── StorageError            the state dir could not be written (read-only, not a folder,
        │                       no permission); .errno, .path
        └── StorageFull         ... because the disk or the quota is full (ENOSPC, EDQUOT)

Pipe failures surface as trio's ``BrokenResourceError`` / ``ClosedResourceError``
inside the runner and are turned into a runtime restart; they never reach callers.

Exception groups: a nursery wraps what its tasks raise in (nested) exception groups.
:func:`leaves` flattens one, and :func:`first` finds the exception that matters in it,
for callers that re-raise it as itself (the one walk over groups; ``api/`` uses it too).
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, TypeVar

import trio

__all__ = [
    "FlowLoadError",
    "FlowNotFound",
    "FlowStateError",
    "JournalFull",
    "ModuleNotFound",
    "NotFound",
    "NotSupported",
    "PortNotFound",
    "ProtocolError",
    "RevisionConflict",
    "RunnerError",
    "RuntimeNotFound",
    "RuntimeStartError",
    "StorageError",
    "StorageFull",
    "first",
    "leaves",
]

E = TypeVar("E", bound=BaseException)


class RunnerError(Exception):
    code = "runner_error"
    field: str | None = None


class NotFound(RunnerError):
    code = "not_found"


class FlowNotFound(NotFound):
    code = "flow_not_found"
    field = "flowId"


class ModuleNotFound(NotFound):
    code = "module_not_found"
    field = "moduleId"


class PortNotFound(NotFound):
    code = "port_not_found"
    field = "port"


class RuntimeNotFound(NotFound):
    code = "runtime_not_found"
    field = "runtimeId"


class FlowStateError(RunnerError):
    code = "flow_state"


class RevisionConflict(FlowStateError):
    code = "revision_conflict"
    field = "revision"


class NotSupported(RunnerError):
    code = "not_implemented"


class FlowLoadError(RunnerError):
    code = "module_load_failed"

    def __init__(self, module: str, error: dict[str, Any]) -> None:
        self.module = module
        self.error = error
        message = f"{module}: {error.get('type', 'Error')}: {error.get('message', '')}"
        super().__init__(message)


class RuntimeStartError(RunnerError):
    code = "runtime_start_failed"


class ProtocolError(RunnerError):
    code = "protocol_error"


class StorageError(RunnerError):
    """What the OS said when the runner wrote its state dir, and where; made by
    :meth:`from_os_error` (which picks :class:`StorageFull` for a full disk)."""

    code = "storage_error"

    def __init__(self, message: str, *, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.path = path

    @classmethod
    def from_os_error(
        cls, exc: OSError, doing: str, path: os.PathLike[str] | str | None = None
    ) -> StorageError:
        """``doing``: what the runner was writing (``"flow 'a'"``), ``path``: the file it
        was writing (else the one the OS names); the message adds the OS's reason."""
        kind = StorageFull if exc.errno in (_errno.ENOSPC, _errno.EDQUOT) else StorageError
        if path is None and exc.filename is not None:
            path = os.fsdecode(exc.filename)
        path = os.fspath(path) if path is not None else None
        reason = exc.strerror or str(exc)
        where = f" ({path})" if path else ""
        return kind(f"could not store {doing}: {reason}{where}", errno=exc.errno, path=path)


class StorageFull(StorageError):
    code = "storage_full"


class JournalFull(StorageFull):
    """A journaled flow refused a message: its journal is at its size bound, or the disk
    has less than the journal's reserve left (runner/JOURNAL.md). Nothing was queued."""

    code = "journal_full"


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, nested groups flattened, in order (depth first);
    ``[exc]`` for an exception that is not a group."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found


def first(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The first leaf of ``exc`` (see :func:`leaves`) that is a ``kind``, or None.

    ``trio.Cancelled`` never counts, even for ``kind=BaseException``: in a group it is how
    a nursery stopped the other tasks, not what went wrong."""
    for leaf in leaves(exc):
        if isinstance(leaf, kind) and not isinstance(leaf, trio.Cancelled):
            return leaf
    return None
