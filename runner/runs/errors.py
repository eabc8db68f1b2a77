"""Errors of runs. Their ``code`` is stable (the API's); the HTTP status is chosen by
class in ``api/common/errors.py`` (RunNotFound 404, RunStateError 409, RunRefused 409,
LeaseLost 409)."""

from __future__ import annotations

from ..errors import FlowStateError, NotFound, RunnerError

__all__ = ["LeaseLost", "RunError", "RunNotFound", "RunRefused", "RunStateError"]


class RunError(RunnerError):
    code = "run_error"


class RunNotFound(NotFound):
    code = "run_not_found"
    field = "runId"


class RunStateError(FlowStateError):
    """The run is not in a state that allows this (its result before it ended, ...)."""

    code = "run_state"


class RunRefused(RunError):
    """A worker will not take a run; the message says why (runtime missing, no room,
    draining, cannot report to the book)."""

    code = "run_refused"


class LeaseLost(RunError):
    """The attempt no longer holds its run (lease expired, canceled, another attempt
    holds it): its progress and its result do not count."""

    code = "lease_lost"
