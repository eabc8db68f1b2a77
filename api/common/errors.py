"""Errors of the Runner API and how they look on the wire.

::

    ApiError                    an HTTP status, a stable code, a message, the field at fault
    ├── BadRequest              400: the body is not JSON, or not the right shape
    ├── InvalidParams           422: a field has the wrong type or value (.field names it)
    └── Unauthorized            401: no token, or the wrong one

Errors of the cores are translated here, not caught in routes, for both apps: a
:class:`~fifoflow.runner.RunnerError` (the dispatcher's errors are RunnerErrors too)
keeps its ``code`` and ``field`` and gets the status of :data:`STATUS`, by class; what a
runner answered to a forwarded call (``RemoteError``) keeps the runner's code; a :class:`~fifoflow.flows.FlowError` becomes a 422 listing every
problem with its path. Every error body is::

    {"error": {"status": 422, "code": "invalid_flow", "message": "...",
               "field": "modules[0].runtime", "problems": [{"path": ..., "message": ...}]}}
"""

from __future__ import annotations

from typing import Any

from fifoflow.dispatcher.errors import DispatcherError, RunnerTimeout
from fifoflow.flows import FlowError
from fifoflow.runner import (
    FlowLoadError,
    FlowStateError,
    NotFound,
    NotSupported,
    ProtocolError,
    RunnerError,
    RuntimeStartError,
    StorageError,
    StorageFull,
    SwapRejected,
)
from fifoflow.runner.environments import EnvironmentBuildError
from fifoflow.runner.rpc import RemoteError
from fifoflow.runner.runs.errors import RunError

__all__ = [
    "ApiError",
    "BadRequest",
    "InvalidParams",
    "Unauthorized",
    "from_exception",
]


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status: int | None = None,
        code: str | None = None,
        problems: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.problems = problems
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.problems is not None:
            error["problems"] = self.problems
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class InvalidParams(ApiError):
    status = 422
    code = "invalid_params"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


#: HTTP status of each kind of runner error (first match wins; RunnerError itself is 400)
STATUS: list[tuple[type[RunnerError], int]] = [
    (NotFound, 404),
    (SwapRejected, 422),
    (FlowStateError, 409),
    (FlowLoadError, 422),
    (EnvironmentBuildError, 422),
    (NotSupported, 501),
    (RuntimeStartError, 503),
    (ProtocolError, 502),
    # the state dir could not be written: full (storage_full), read-only, not a folder,
    # no permission (storage_error); the message names the file and the OS's reason
    (StorageError, 507),
    # a runner the dispatcher called did not answer in time (the message names it)
    (RunnerTimeout, 504),
    # runs: RunNotFound is a NotFound (404) and RunStateError a FlowStateError (409)
    # above; a refused run (run_refused) and a lost lease (lease_lost) do not fit now
    (RunError, 409),
    # the dispatcher's not-found and not-now errors are NotFound and FlowStateError
    # above; any other is a call that does not fit the dispatcher's state
    (DispatcherError, 409),
]


def from_exception(exc: Exception) -> ApiError:
    """The :class:`ApiError` that answers ``exc`` (an error of the cores or of the API)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, FlowError):
        problems = [{"path": p.path, "message": p.message} for p in exc.problems]
        first = exc.problems[0] if exc.problems else None
        return InvalidParams(
            "invalid flow: "
            + "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems),
            code="invalid_flow",
            field=f"flow.{first.path}" if first and first.path else "flow",
            problems=problems,
        )
    if isinstance(exc, SwapRejected):
        problem = {"path": f"modules.{exc.module}", "message": str(exc)}
        return InvalidParams(str(exc), code=exc.code, field="flow", problems=[problem])
    if isinstance(exc, RemoteError):
        # what a runner said about a call the dispatcher forwarded to it
        remote = exc.remote_code or ""
        status = (
            404
            if remote.endswith("not_found")
            else 507
            if remote in (StorageError.code, StorageFull.code)
            else 409
        )
        return ApiError(str(exc), status=status, code=exc.remote_code or exc.code)
    if isinstance(exc, RunnerError):
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
        return ApiError(str(exc), status=status, code=exc.code, field=exc.field)
    raise TypeError(f"not an API error: {exc!r}") from exc
