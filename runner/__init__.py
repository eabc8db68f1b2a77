"""fifoflow.runner: runtime supervision, FIFO channels, routing, the runner service.

Modules: ``pipes`` (the FIFO pair), ``framing`` (sans-IO line protocol), ``process`` (one
host process), ``hosts`` (spawned or attached hosts), ``instance`` (supervision of one
host), ``queues`` (sans-IO queues, window and redelivery), ``faults`` (sans-IO backoff,
crash loops, hung handlers), ``flowrun`` (a flow's routing, outputs and errors),
``service`` (the Runner API object), ``swap`` (hot swap), ``store`` (the state dir),
``status`` (lifecycle enums), ``events``, ``config``.
"""

from .config import RunnerConfig
from .debugger import PauseReason
from .errors import (
    FlowLoadError,
    FlowNotFound,
    FlowStateError,
    ModuleNotFound,
    NotFound,
    NotSupported,
    PortNotFound,
    ProtocolError,
    RevisionConflict,
    RunnerError,
    RuntimeNotFound,
    RuntimeStartError,
    StorageError,
    StorageFull,
    first,
    leaves,
)
from .events import EventHub, EventKind, Subscription
from .flowrun import FlowRun
from .service import Runner, UpdateResult, open_runner
from .status import FlowStatus, InstanceStatus
from .store import FlowStore, StateDirInUse, StoredFlow
from .swap import SwapRejected

__all__ = [
    "EventHub",
    "EventKind",
    "FlowLoadError",
    "FlowNotFound",
    "FlowRun",
    "FlowStateError",
    "FlowStatus",
    "FlowStore",
    "InstanceStatus",
    "ModuleNotFound",
    "NotFound",
    "NotSupported",
    "PauseReason",
    "PortNotFound",
    "ProtocolError",
    "RevisionConflict",
    "Runner",
    "RunnerConfig",
    "RunnerError",
    "RuntimeNotFound",
    "RuntimeStartError",
    "StateDirInUse",
    "StorageError",
    "StorageFull",
    "StoredFlow",
    "Subscription",
    "SwapRejected",
    "UpdateResult",
    "first",
    "leaves",
    "open_runner",
]
