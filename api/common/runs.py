"""Runs over HTTP and JSON-RPC, for both servers: one route table, one set of methods.

A runner served alone and a dispatcher answer runs the same way; only where the
:class:`~fifoflow.runner.runs.book.RunBook` comes from differs, so the routes and methods
here take a :class:`RunsAt` (``RunnerRuns``: ``Runner.run_book``, or a 409 when the runner
takes its runs from a dispatcher; ``DispatcherRuns``: ``Dispatcher.run_book``)::

    POST /runs                  submitRun {RunSubmission}       201, the run's view
    GET  /runs?state=&flow=&limit=  listRuns                    newest first
    GET  /runs/{runId}          getRun                          the view
    POST /runs/{runId}/cancel   cancelRun {runId, reason?}      the view (409 if it ended)
    GET  /runs/{runId}/result   getRunResult                    RunResult (409 until it ended)
    GET  /runs/{runId}/outputs  (REST only)                     every output, JSON lines
    GET  /runs/{runId}/logs     getRunLogs {runId, limit?}      log lines

Requests are the core's models (``runner/runs/model.py``: :class:`RunSubmission`);
answers are described by :class:`RunView` and the core's :class:`RunResult` for the
OpenAPI documents (the book answers plain dicts of that shape). Errors map by class
(``api/common/errors.py``): RunNotFound 404, RunStateError / RunRefused / LeaseLost 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Protocol

import attrs
import orjson
import trio
from quart import Response

from fifoflow.flows import FlowError
from fifoflow.flows.converter import Limit
from fifoflow.flows.limits import MAX_ID, MAX_LOGS, MAX_NAME
from fifoflow.runner.runs.model import FailOn, RunResult, RunState, RunSubmission

from .errors import ApiError, InvalidParams
from .routes import Answer, Call, Method, Route

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "JSONL",
    "RUN_METHODS",
    "RUN_ROUTES",
    "DispatcherRuns",
    "RunView",
    "RunnerRuns",
    "RunsAt",
]

#: the media type of ``GET /runs/{runId}/outputs``: one JSON object per line
JSONL = "application/jsonl"
RunId = Annotated[str, Limit(min_length=1, max_length=MAX_ID, description="a run's id")]


class RunsAt(Protocol):
    """Where a server's runs are: its book (or an :class:`ApiError` saying why none)."""

    def book(self) -> Any: ...


@attrs.frozen
class RunnerRuns:
    """A runner's runs: its own book when it is served alone; none when it is linked to a
    dispatcher (runs are submitted there: 409 naming its URL when known)."""

    runner: Any
    dispatcher: str | None = None

    def book(self) -> Any:
        book = getattr(self.runner, "run_book", None)
        if book is None:
            where = f" at {self.dispatcher}" if self.dispatcher else ""
            raise ApiError(
                f"this runner takes runs from its dispatcher{where}: submit and ask about "
                "runs there",
                status=409,
                code="runs_at_dispatcher",
            )
        return book

    def subscribe(self, **kwargs: Any) -> Any:
        return self.runner.subscribe(**kwargs)


@attrs.frozen
class DispatcherRuns:
    dispatcher: Any

    def book(self) -> Any:
        book = getattr(self.dispatcher, "run_book", None)
        if book is None:
            raise ApiError("this dispatcher takes no runs", status=409, code="runs_unavailable")
        return book

    def subscribe(self, **kwargs: Any) -> Any:
        """Events of the dispatcher's run book (``run``, ``run-progress``)."""
        hub = getattr(self.dispatcher, "run_events", None)
        if hub is None:
            raise ApiError("this dispatcher takes no runs", status=409, code="runs_unavailable")
        return hub.subscribe(**kwargs)


# ---------------------------------------------------------------------- params, queries


@attrs.frozen
class RunRef:
    runId: RunId


@attrs.frozen
class RunFilter:
    state: RunState | None = None
    flow: Annotated[str, Limit(min_length=1, max_length=MAX_ID)] | None = None
    limit: Annotated[int, Limit(ge=1, le=10_000)] | None = None


@attrs.frozen
class CancelRun:
    runId: RunId
    reason: Annotated[str, Limit(min_length=1, max_length=MAX_NAME)] | None = None


@attrs.frozen
class RunLogsParams:
    runId: RunId
    limit: Annotated[int, Limit(ge=1, le=MAX_LOGS)] | None = None


@attrs.frozen
class RunsQuery:
    state: Annotated[RunState, Limit(description="only runs in this state")] | None = None
    flow: (
        Annotated[str, Limit(min_length=1, max_length=MAX_ID, description="only runs of this flow")]
        | None
    ) = None
    limit: (
        Annotated[
            int, Limit(ge=1, le=10_000, description="at most this many (default 100), newest first")
        ]
        | None
    ) = None


@attrs.frozen
class RunLogsQuery:
    limit: (
        Annotated[int, Limit(ge=1, le=MAX_LOGS, description="the most recent N lines")] | None
    ) = None


@attrs.frozen
class CancelBody:
    reason: (
        Annotated[
            str, Limit(min_length=1, max_length=MAX_NAME, description="recorded with the run")
        ]
        | None
    ) = None


# ---------------------------------------------------------------------- answers


@attrs.frozen
class RunAttempt:
    attempt: int
    worker: str | None = None
    startedAt: float | None = None
    endedAt: float | None = None
    reason: str | None = None


@attrs.frozen
class RunEvent:
    """One transition of the run."""

    seq: int
    time: float
    state: RunState
    attempt: int
    worker: str | None = None
    reason: str | None = None


@attrs.frozen
class RunProgressView:
    handled: dict[str, int] = attrs.field(factory=dict)
    errors: int = 0
    outputs: int = 0
    sides: dict[str, dict[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class RunView:
    """A run: its state, attempts, events and progress (``GET /runs/{runId}``, ``getRun``)."""

    id: str
    state: RunState
    attempt: int
    maxAttempts: int
    flow: str | None = None
    revision: int | None = None
    worker: str | None = None
    priority: int = 0
    labels: dict[str, str] = attrs.field(factory=dict)
    failOn: FailOn = FailOn.ERROR
    timeout: float | None = None
    lease: float | None = None
    key: str | None = None
    createdAt: float | None = None
    startedAt: float | None = None
    endedAt: float | None = None
    leaseExpires: float | None = None
    reason: str | None = None
    progress: RunProgressView | None = None
    attempts: list[RunAttempt] = attrs.field(factory=list)
    events: list[RunEvent] = attrs.field(factory=list)


# ---------------------------------------------------------------------- the calls


def submit(at: RunsAt, sub: RunSubmission) -> dict[str, Any]:
    if sub.flow is None and sub.document is None:
        raise InvalidParams(
            "give flow (a stored flow's id) or document (a flow document inline)", field="flow"
        )
    if sub.flow is not None and sub.document is not None:
        raise InvalidParams(
            "give flow (a stored flow's id) or document (a flow inline), not both",
            field="document",
        )
    try:
        return at.book().submit(sub)
    except FlowError as exc:  # paths are the submission's (document.modules[0]..., inputs[1].to)
        first = exc.problems[0] if exc.problems else None
        raise InvalidParams(
            "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems),
            code="invalid_run",
            field=first.path if first and first.path else "flow",
            problems=[{"path": p.path, "message": p.message} for p in exc.problems],
        ) from None


def list_runs(at: RunsAt, p: RunFilter | RunsQuery) -> list[dict[str, Any]]:
    return at.book().list(state=p.state, flow=p.flow, limit=p.limit or 100)


def cancel(at: RunsAt, run_id: str, reason: str | None) -> dict[str, Any]:
    book = at.book()
    return book.cancel(run_id, reason) if reason else book.cancel(run_id)


async def _lines(book: Any, run_id: str, result: dict[str, Any]) -> AsyncIterator[bytes]:
    """Every output of an ended run as JSON lines: from the spill file when the result
    says the outputs were spilled (and the file is still there), else the result's own."""
    path = book.outputs_path(run_id) if result.get("outputsSpilled") else None
    if path is not None:
        try:
            file = await trio.open_file(path, "rb")
        except FileNotFoundError:
            path = None
        else:
            async with file:
                while chunk := await file.read(65536):
                    yield chunk
            return
    for output in result.get("outputs", ()):
        yield orjson.dumps(output) + b"\n"


async def _outputs(at: RunsAt, call: Call) -> Response:
    book = at.book()
    run_id = call.path["runId"]
    result = book.result(run_id)  # RunNotFound 404, RunStateError 409 until it ended
    return Response(_lines(book, run_id, result), content_type=JSONL)


def _sync(fn: Any) -> Any:
    async def call(at: RunsAt, p: Any) -> Any:
        return fn(at, p)

    return call


async def _wrap(value: Any) -> Any:
    return value


RUN_METHODS: dict[str, Method] = {
    method.name: method
    for method in [
        Method("submitRun", RunSubmission, _sync(submit)),
        Method("getRun", RunRef, _sync(lambda at, p: at.book().get(p.runId))),
        Method("listRuns", RunFilter, _sync(list_runs)),
        Method("cancelRun", CancelRun, _sync(lambda at, p: cancel(at, p.runId, p.reason))),
        Method("getRunResult", RunRef, _sync(lambda at, p: at.book().result(p.runId))),
        Method("getRunLogs", RunLogsParams, _sync(lambda at, p: at.book().logs(p.runId, p.limit))),
    ]
}

RUN = {"runId": (str, "a run's id, as submitRun gave it")}
#: errors of a route that reads a run: no such run (404), the server takes no runs (409)
READ = (404, 409)

RUN_ROUTES: list[Route] = [
    Route("post", "/runs", "submitRun", "Submit a run: a flow (a stored one's id, or a document inline) and its inputs",
          lambda at, c: _wrap(Answer(submit(at, c.body), 201)), RunView, "the run, queued", status=201,
          body=RunSubmission, errors=(400, 404, 409, 413, 422)),
    Route("get", "/runs", "listRuns", "Runs, newest first", lambda at, c: _wrap(list_runs(at, c.query)),
          list[RunView], "the runs", query=RunsQuery, errors=(409, 422)),
    Route("get", "/runs/{runId}", "getRun", "A run: state, attempt, attempts with their reasons, events, progress",
          lambda at, c: _wrap(at.book().get(c.path["runId"])), RunView, "the run", errors=READ, params=RUN),
    Route("post", "/runs/{runId}/cancel", "cancelRun", "Cancel a run (a running attempt is stopped)",
          lambda at, c: _wrap(cancel(at, c.path["runId"], c.body.reason if c.body else None)), RunView,
          "the run, canceled", body=CancelBody, body_required=False, errors=(400, 404, 409, 413, 422), params=RUN),
    Route("get", "/runs/{runId}/result", "getRunResult", "How the run ended: outputs (capped), errors, exit codes, logs, timings",
          lambda at, c: _wrap(at.book().result(c.path["runId"])), RunResult, "the result",
          errors=READ, params=RUN, description="409 (run_state) until the run has ended."),
    Route("get", "/runs/{runId}/outputs", "getRunOutputs", "Every output of an ended run, one JSON object per line",
          _outputs, dict[str, Any], "{from: \"module.port\", msg} per line, in order", media=JSONL, errors=READ, params=RUN,
          description="Streamed from the attempt's outputs file when the result says outputsSpilled; "
          "409 (run_state) until the run has ended."),
    Route("get", "/runs/{runId}/logs", "getRunLogs", "The run's log lines, oldest first",
          lambda at, c: _wrap(at.book().logs(c.path["runId"], c.query.limit)), list[dict[str, Any]], "log lines",
          query=RunLogsQuery, errors=(*READ, 422), params=RUN),
]  # fmt: skip
