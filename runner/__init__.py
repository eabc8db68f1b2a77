"""fifoflow.runner: runtime supervision, FIFO channels, routing, the runner service.

Modules: ``pipes`` (the FIFO pair), ``framing`` (sans-IO line protocol), ``process`` (one
host process), ``instance`` (supervision, queues, redelivery), ``flowrun`` (a flow's
routing, outputs and errors), ``service`` (the Runner API object), ``events``, ``config``.
"""

from .config import RunnerConfig
from .errors import (
    FlowLoadError,
    FlowNotFound,
    FlowStateError,
    ProtocolError,
    RunnerError,
    RuntimeStartError,
)
from .events import EventHub, Subscription
from .flowrun import FlowRun, FlowStatus
from .service import Runner, open_runner

__all__ = [
    "EventHub",
    "FlowLoadError",
    "FlowNotFound",
    "FlowRun",
    "FlowStateError",
    "FlowStatus",
    "ProtocolError",
    "Runner",
    "RunnerConfig",
    "RunnerError",
    "RuntimeStartError",
    "Subscription",
    "open_runner",
]
