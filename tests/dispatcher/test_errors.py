"""The dispatcher's errors: stable codes, and the runner's classes where they mean the
same (an API maps status by class: NotFound -> 404, FlowStateError -> 409)."""

from __future__ import annotations

import pytest

from fifoflow.dispatcher import errors
from fifoflow.runner.errors import (
    FlowNotFound,
    FlowStateError,
    NotFound,
    RunnerError,
    RuntimeNotFound,
)


@pytest.mark.parametrize(
    ("cls", "code", "field", "runner_class"),
    [
        (errors.DispatcherError, "dispatcher_error", None, RunnerError),
        (errors.RegistrationRefused, "registration_refused", "token", RunnerError),
        (errors.FlowUnknown, "flow_not_found", "flowId", FlowNotFound),
        (errors.RuntimeUnknown, "runtime_not_found", None, RuntimeNotFound),
        (errors.UnknownRunner, "unknown_runner", "runnerId", NotFound),
        (errors.FlowPending, "flow_pending", None, FlowStateError),
        (errors.RunnerTimeout, "runner_timeout", None, RunnerError),
    ],
)
def test_codes_fields_and_runner_classes(
    cls: type[errors.DispatcherError], code: str, field: str | None, runner_class: type
) -> None:
    exc = cls("why")
    assert (exc.code, exc.field, str(exc)) == (code, field, "why")
    assert isinstance(exc, errors.DispatcherError)
    assert isinstance(exc, runner_class)


def test_service_still_exports_the_errors() -> None:
    from fifoflow.dispatcher import service

    for name in ("DispatcherError", "FlowPending", "FlowUnknown", "RegistrationRefused",
                 "RuntimeUnknown", "UnknownRunner"):  # fmt: skip
        assert getattr(service, name) is getattr(errors, name)


def test_a_runner_timeout_names_the_runner_the_call_and_the_deadline() -> None:
    exc = errors.RunnerTimeout.unanswered("r-1", "deploy", 2.5)
    assert str(exc) == "runner r-1 did not answer deploy within 2.5 s"
    assert (exc.runner_id, exc.method, exc.seconds) == ("r-1", "deploy", 2.5)
