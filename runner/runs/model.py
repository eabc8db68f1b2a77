"""What a run is, as data: its states, what a user submits, what a worker is offered,
what it reports while it works and when it ends. No I/O here (see ``RUNS.md``).

Field names are the API's (camelCase), so the same classes are the JSON-RPC params,
the REST bodies, the link's params and the OpenAPI schemas; the one converter
(``flows/converter.py``) structures them strictly.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any

import attrs

if TYPE_CHECKING:
    from ...flows import Flow

from ...flows.converter import Limit
from ...flows.errors import FlowError, Problem
from ...flows.limits import MAX_ID, MAX_INJECT, MAX_NAME, MAX_TIMEOUT

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "FailOn",
    "RunInput",
    "RunOffer",
    "RunPart",
    "RunProgress",
    "RunResult",
    "RunState",
    "RunSubmission",
    "Target",
    "targets",
]


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"


#: a run in one of these states has ended; its result is recorded and never changes
TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELED})
ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})


class FailOn(enum.StrEnum):
    #: any module error fails the run (it ends at the first one)
    ERROR = "error"
    #: errors are recorded in the result; the run still succeeds when it goes idle
    NEVER = "never"


RunId = Annotated[str, Limit(min_length=1, max_length=MAX_ID)]
Seconds = Annotated[float, Limit(gt=0, le=MAX_TIMEOUT)]
#: "module.port" (an input port of the flow)
PortRef = Annotated[
    str, Limit(min_length=3, max_length=2 * MAX_NAME + 1, pattern=r"^[^.]+\.[^.]+$")
]


@attrs.frozen
class RunInput:
    """One message for the run: ``to`` an input port ("module.port"; absent: the flow's
    one entry port)."""

    msg: Any = None
    to: PortRef | None = None


@attrs.frozen
class RunSubmission:
    """``POST /runs``, ``submitRun``: a flow (a stored flow's id, optionally at a
    revision, or a document inline) and its inputs, with the run's options."""

    flow: Annotated[str, Limit(min_length=1, max_length=MAX_ID)] | None = None
    revision: Annotated[int, Limit(ge=1)] | None = None
    document: dict[str, Any] | None = None
    inputs: Annotated[list[RunInput], Limit(max_length=MAX_INJECT)] = attrs.field(factory=list)
    #: wall clock of one attempt, from its start (None: no limit)
    timeout: Seconds | None = None
    maxAttempts: Annotated[int, Limit(ge=1, le=100)] = 3
    #: how long an attempt holds the run without a renewal
    lease: Annotated[float, Limit(ge=1, le=3600)] = 30.0
    #: the worker must carry these labels (placement, as for flows)
    labels: dict[str, str] = attrs.field(factory=dict)
    #: higher runs are offered first; equal ones in submission order
    priority: Annotated[int, Limit(ge=-1000, le=1000)] = 0
    failOn: FailOn = FailOn.ERROR
    #: the caller's own name for the run (idempotency is by this key: a second submit
    #: with the same key answers the first run)
    key: Annotated[str, Limit(min_length=1, max_length=MAX_NAME)] | None = None


@attrs.frozen
class Target:
    """An input resolved against the flow: module, port, message."""

    module: str
    port: str
    msg: Any = None


@attrs.frozen
class RunPart:
    """One side of an attempt that spans a runner and a page (``RUNS.md``, "Runs with
    browser modules"): the offer's ``flow`` is only this side's modules. ``relay``: the
    output ports ("module.port") whose wires cross to the other side (what reaches them
    goes to the dispatcher, ``runRelay``). A ``coordinated`` side does not end itself on
    idle: it reports ``idle``/``sent``/``received`` in its progress and ends when the
    dispatcher says so (``runEnd``), or at its own error, timeout or cancel."""

    #: "server:<runner id>" or "page:<page id>"
    side: Annotated[str, Limit(min_length=1, max_length=MAX_ID + 8)]
    relay: list[PortRef] = attrs.field(factory=list)
    coordinated: bool = True


@attrs.frozen
class RunOffer:
    """What a worker (a runner) is given for one attempt: everything to run it, resolved
    (the flow document in full, every input's port). Written to the worker's state dir
    before the attempt starts."""

    runId: RunId
    attempt: Annotated[int, Limit(ge=1)]
    flow: dict[str, Any]
    inputs: list[Target]
    timeout: float | None = None
    lease: float = 30.0
    failOn: FailOn = FailOn.ERROR
    #: one side of a run with browser modules (None: the whole run)
    part: RunPart | None = None


@attrs.frozen
class RunProgress:
    """A lease renewal, with how far the attempt got."""

    runId: RunId
    attempt: Annotated[int, Limit(ge=1)]
    #: messages handled, per module
    handled: dict[str, int] = attrs.field(factory=dict)
    errors: int = 0
    outputs: int = 0
    #: per side of a run that spans a runner and pages ("server", "page:<id>"): its own
    #: handled/errors/outputs/state
    sides: dict[str, dict[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class RunResult:
    """How one attempt ended. ``state`` is terminal; the book records one result per run,
    from the attempt that holds it."""

    runId: RunId
    #: 0 for a run that ended before any attempt (canceled while queued)
    attempt: Annotated[int, Limit(ge=0)]
    state: RunState
    reason: str | None = None
    #: what reached unconnected output ports: {"from": "module.port", "msg": ...}, the
    #: first ones (capped); all of them are in the outputs file when ``outputsSpilled``
    outputs: list[dict[str, Any]] = attrs.field(factory=list)
    outputsTotal: int = 0
    outputsSpilled: bool = False
    #: module errors: {"module", "port", "msg", "error": {type, message, traceback}, "side"}
    errors: list[dict[str, Any]] = attrs.field(factory=list)
    errorsTotal: int = 0
    #: exec modules that exited non-zero: module -> {"code", "stderr"} (stderr's tail)
    exits: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    handled: dict[str, int] = attrs.field(factory=dict)
    #: recent log lines (capped)
    logs: list[dict[str, Any]] = attrs.field(factory=list)
    startedAt: float = 0.0
    finishedAt: float = 0.0
    sides: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    @property
    def duration(self) -> float:
        return max(0.0, self.finishedAt - self.startedAt)


def targets(flow: Flow, sub: RunSubmission) -> list[Target]:
    """Each input of ``sub`` resolved to a (module, port) of ``flow``; an input without
    ``to`` goes to the flow's one entry port."""
    inputs = {(m.id, p) for m in flow.modules for p in m.inputs}
    entries = flow.entry_ports()
    found = []
    for i, item in enumerate(sub.inputs):
        if item.to is None:
            if len(entries) != 1:
                names = ", ".join(f"{m}.{p}" for m, p in entries) or "none"
                message = f"flow {flow.id!r} has {len(entries)} entry ports ({names}): say which"
                raise FlowError([Problem(f"inputs[{i}].to", message)])
            module, port = entries[0]
        else:
            module, port = item.to.split(".", 1)
            if (module, port) not in inputs:
                known = ", ".join(f"{m}.{p}" for m, p in sorted(inputs)) or "none"
                message = f"no input port {item.to!r} in flow {flow.id!r} (its inputs: {known})"
                raise FlowError([Problem(f"inputs[{i}].to", message)])
        found.append(Target(module=module, port=port, msg=item.msg))
    return found
