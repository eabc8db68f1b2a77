"""Errors raised by the dispatcher core.

They are runner errors (:class:`~fifoflow.runner.errors.RunnerError`): one hierarchy,
so a caller maps every core error to an answer by its class alone. Where a dispatcher
error means what a runner error means, it derives from that runner class too (a flow
the dispatcher does not know is a :class:`~fifoflow.runner.errors.FlowNotFound`, a flow
that has no runner right now a :class:`~fifoflow.runner.errors.FlowStateError`)::

    RunnerError                     (fifoflow.runner.errors)
    └── DispatcherError             base; .code "dispatcher_error": the dispatcher refuses
        │                           the call as things are (no backend, say hello first)
        ├── RegistrationRefused     the registration token is unknown, used or expired
        ├── FlowUnknown             no flow with that id         (also a runner FlowNotFound)
        ├── RuntimeUnknown          no runner reports that runtime (also a RuntimeNotFound)
        ├── UnknownRunner           no runner with that id, or a wrong secret (also a NotFound)
        ├── FlowPending             the flow (or the runner asked for) has no live runner
        │                           right now; send the call again   (also a FlowStateError)
        ├── NotYourPart             a runner's call concerns a flow part not placed on it
        │                           (relay, paused, snapshot); .field names the param
        ├── PageRefused             a web page's connection is refused: a wrong page secret,
        │                           or too many pages; .field names the query parameter
        ├── RunnerTimeout           a runner did not answer a call within the dispatcher's
        │                           call timeout; .runner_id, .method, .seconds
        └── StoreVersionError       the state dir was written by a newer fifoflow; .found,
                                    .known (schema versions)

``.code`` is stable and machine-readable (it is what API answers carry); ``.field``
names the argument at fault, or is None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..runner.errors import FlowNotFound, FlowStateError, NotFound, RunnerError, RuntimeNotFound

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DispatcherError",
    "FlowPending",
    "FlowUnknown",
    "NotYourPart",
    "PageRefused",
    "RegistrationRefused",
    "RunnerTimeout",
    "RuntimeUnknown",
    "StoreVersionError",
    "UnknownRunner",
]


class DispatcherError(RunnerError):
    code = "dispatcher_error"


class RegistrationRefused(DispatcherError):
    code = "registration_refused"
    field = "token"


class FlowUnknown(DispatcherError, FlowNotFound):
    code = "flow_not_found"
    field = "flowId"


class RuntimeUnknown(DispatcherError, RuntimeNotFound):
    code = "runtime_not_found"
    # Not the runner's "runtimeId": the dispatcher's answers have never named a field
    # for it, and clients read those answers.
    field = None


class UnknownRunner(DispatcherError, NotFound):
    code = "unknown_runner"
    field = "runnerId"


class PageRefused(DispatcherError):
    """A web page's connection is refused: its page id is bound to another secret, or
    the dispatcher serves as many pages as it may (``ClientRunners.max_pages``)."""

    code = "page_refused"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class FlowPending(DispatcherError, FlowStateError):
    code = "flow_pending"


class NotYourPart(DispatcherError):
    """A runner spoke for a flow part it does not hold: a runner's link credential
    reaches only the parts placed on it (never another runner's flow)."""

    code = "not_your_part"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RunnerTimeout(DispatcherError):
    """A runner did not answer a call in time (it may be busy, stuck or cut off). The
    call may still happen there later: it was sent, only the answer did not come."""

    code = "runner_timeout"

    def __init__(
        self,
        message: str,
        *,
        runner_id: str | None = None,
        method: str | None = None,
        seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.runner_id = runner_id
        self.method = method
        self.seconds = seconds

    @classmethod
    def unanswered(cls, runner_id: str, method: str, seconds: float) -> RunnerTimeout:
        return cls(
            f"runner {runner_id} did not answer {method} within {seconds:g} s",
            runner_id=runner_id,
            method=method,
            seconds=seconds,
        )


class StoreVersionError(DispatcherError):
    """The SQLite state was written by a newer fifoflow than this one: this one cannot
    know what the newer one stored, so it does not touch it."""

    code = "store_version"

    def __init__(self, path: Path, found: int, known: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, but this fifoflow knows versions up to"
            f" {known}: run the fifoflow that wrote it (or a newer one), or use another"
            " state dir"
        )
        self.path = path
        self.found = found
        self.known = known
