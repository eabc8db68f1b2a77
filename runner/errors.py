"""Errors raised by the runner core.

::

    RunnerError                 base; .code is a stable machine-readable string
    ├── FlowNotFound            no flow with that id
    ├── FlowStateError          the call does not fit the flow's state (e.g. inject into a stopped flow)
    ├── FlowLoadError           a module's code was refused by its runtime; .module, .error
    ├── RuntimeStartError       a runtime host could not be started or did not say hello
    └── ProtocolError           a runtime host broke the protocol (garbage, missing field)

Pipe failures surface as trio's ``BrokenResourceError`` / ``ClosedResourceError``
inside the runner and are turned into a runtime restart; they never reach callers.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FlowLoadError",
    "FlowNotFound",
    "FlowStateError",
    "ProtocolError",
    "RunnerError",
    "RuntimeStartError",
]


class RunnerError(Exception):
    code = "runner_error"


class FlowNotFound(RunnerError):
    code = "flow_not_found"


class FlowStateError(RunnerError):
    code = "flow_state"


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
