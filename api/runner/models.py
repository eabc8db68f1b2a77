"""The Runner API's shapes: what each method takes (params, bodies, queries) and answers.

JSON-RPC calls send a method's params model as named params; REST routes gather the same
fields from the path, the query and the body. Constraints are ``msgspec.Meta``: the
converter checks them and the OpenAPI document shows them (``api/common/schema.py``).
Answers the cores give as plain data are described here too, for the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import attrs
import msgspec

from fifoflow.api.common.models import ModuleError
from fifoflow.api.common.schema import Message, NonEmpty
from fifoflow.flows.codec import FlowDocument
from fifoflow.flows.limits import MAX_INJECT, MAX_LOGS
from fifoflow.runner import EventKind, FlowStatus
from fifoflow.runner.environments import ENV_ID_PATTERN

Revision = Annotated[
    int, msgspec.Meta(ge=0, description="act only if the flow is at this revision (0: new)")
]


# ---------------------------------------------------------------------- params


@attrs.frozen
class NoParams:
    pass


@attrs.frozen
class RuntimeRef:
    runtimeId: NonEmpty
    #: only the flows' ids (the seed's answer is the flows)
    ids: bool = False


@attrs.frozen
class FlowRef:
    flowId: NonEmpty


@attrs.frozen
class StepParams:
    """singleStepFlow without a flowId steps the one paused flow."""

    flowId: NonEmpty | None = None


@attrs.frozen
class ModuleRef:
    flowId: NonEmpty
    moduleId: NonEmpty


@attrs.frozen
class ApplyFlow:
    flow: dict[str, Any]
    revision: Revision | None = None


@attrs.frozen
class SetBreakpoint:
    flowModuleId: NonEmpty
    condition: str | None = None


@attrs.frozen
class BreakpointRef:
    flowModuleId: NonEmpty


@attrs.frozen
class QueueEdit:
    flowId: NonEmpty
    moduleId: NonEmpty
    index: Annotated[int, msgspec.Meta(ge=0)]
    msg: Message


@attrs.frozen
class QueueDrop:
    flowId: NonEmpty
    moduleId: NonEmpty
    index: Annotated[int, msgspec.Meta(ge=0)]


@attrs.frozen
class EnvironmentFilter:
    runtimeId: NonEmpty | None = None


#: an environment id (``runner/environments.py`` ENV_ID_PATTERN): it names a folder
EnvironmentId = Annotated[
    str,
    msgspec.Meta(
        pattern="^" + ENV_ID_PATTERN.pattern.removesuffix(r"\Z") + "$",
        description="an environment id, as listEnvironments gives it: <runtime>-<16 hex digits>",
    ),
]


@attrs.frozen
class EnvironmentRef:
    environmentId: EnvironmentId


@attrs.frozen
class EnvironmentChange:
    environmentId: EnvironmentId
    install: list[NonEmpty] = attrs.field(factory=list)
    remove: list[NonEmpty] = attrs.field(factory=list)


@attrs.frozen
class GcParams:
    maxIdle: Annotated[int, msgspec.Meta(ge=0)] | None = None


@attrs.frozen
class Inject:
    """One message (msg) or several in order (msgs)."""

    flowId: NonEmpty
    moduleId: NonEmpty
    port: NonEmpty = "in"
    msg: Message = None
    msgs: Annotated[list[Message], msgspec.Meta(max_length=MAX_INJECT)] | None = None


@attrs.frozen
class LogsParams:
    flowId: NonEmpty
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOGS)] | None = None


@attrs.frozen
class Subscribe:
    flows: list[str] | None = None
    kinds: list[EventKind] | None = None
    outputs: (
        list[Annotated[str, msgspec.Meta(pattern=r"^[^.]+\.[^.]+$", description="module.port")]]
        | None
    ) = None


@attrs.frozen
class Unsubscribe:
    subscription: str


# ---------------------------------------------------------------------- REST bodies, queries


@attrs.frozen
class Messages:
    """One message (msg) or several in order (msgs)."""

    msg: Message = None
    msgs: Annotated[list[Message], msgspec.Meta(max_length=MAX_INJECT)] = None


InjectBody = Annotated[
    Messages,
    msgspec.Meta(extra_json_schema={"oneOf": [{"required": ["msg"]}, {"required": ["msgs"]}]}),
]


@attrs.frozen
class BreakpointBody:
    condition: Annotated[
        str,
        msgspec.Meta(
            description="msg.path OP json, or port OP json; OP is == != < <= > >=",
            examples=["msg.n == 3"],
        ),
    ] = None


@attrs.frozen
class QueueEditBody:
    msg: Message


@attrs.frozen
class PackagesBody:
    install: list[NonEmpty] = attrs.field(factory=list)
    remove: list[NonEmpty] = attrs.field(factory=list)


@attrs.frozen
class RuntimeFlowsQuery:
    ids: Annotated[bool, msgspec.Meta(description="only the flows' ids")] | None = None


@attrs.frozen
class PutFlowQuery:
    revision: Revision | None = None


@attrs.frozen
class LogsQuery:
    limit: (
        Annotated[int, msgspec.Meta(ge=1, le=MAX_LOGS, description="the most recent N lines")]
        | None
    ) = None


@attrs.frozen
class EnvironmentsQuery:
    runtime: (
        Annotated[str, msgspec.Meta(min_length=1, description="only this runtime's environments")]
        | None
    ) = None


@attrs.frozen
class GcQuery:
    maxIdle: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0, description="seconds unused before removal (default: the runner's setting)"
            ),
        ]
        | None
    ) = None


# ---------------------------------------------------------------------- answers


@attrs.frozen
class Runtime:
    id: str
    name: str
    version: str


@attrs.frozen
class FlowSummary:
    id: str
    revision: int
    status: FlowStatus
    error: str | None
    pending: Annotated[int, msgspec.Meta(description="messages queued or in flight")]
    outputs: Annotated[int, msgspec.Meta(description="messages that reached an exit")]
    errors: Annotated[int, msgspec.Meta(description="errors raised by modules")]
    restarts: Annotated[
        int,
        msgspec.Meta(description="runtime hosts and module child processes restarted (crashes)"),
    ]
    wantRunning: Annotated[
        bool, msgspec.Meta(description="started by the user; a restarted runner starts it again")
    ]
    runtimes: Annotated[
        dict[str, Any], msgspec.Meta(description="per runtime: pid, queues, restarts")
    ] = None
    paused: Annotated[bool, msgspec.Meta(description="held by the debugger")] = False
    journaled: Annotated[
        int,
        msgspec.Meta(
            description="durability journal: messages in the flow's journal not handled yet"
        ),
    ] = 0
    durability: Annotated[
        str, msgspec.Meta(description="checkpoint or journal (runner/JOURNAL.md)")
    ] = "checkpoint"


@attrs.frozen
class FlowDetail(FlowSummary):
    flow: FlowDocument = None


@attrs.frozen
class Applied:
    """addOrUpdateFlow's whole answer (REST)."""

    created: bool
    flow: FlowSummary
    swap: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(
            description="a running flow was hot-swapped: changes, summary, rehomed (messages "
            "that followed a moved module), dropped (what waited for a removed module), "
            "pausedMs, durationMs"
        ),
    ]


@attrs.frozen
class ApplyResult:
    """applyFlow's answer (JSON-RPC)."""

    created: bool
    revision: int
    swap: dict[str, Any] | None


@attrs.frozen
class Breakpoint:
    module: str
    condition: Annotated[str | None, msgspec.Meta(examples=["msg.n == 3"])]
    hits: int


@attrs.frozen
class WireStats:
    wire: Annotated[str, msgspec.Meta(examples=["split.out->work.in"])]
    via: Annotated[
        Literal["runner", "host"],
        msgspec.Meta(description="host: a same-runtime wire, which never leaves its host"),
    ]
    messages: Annotated[
        int | None,
        msgspec.Meta(
            description="messages that went along it: routed by the runner, plus those"
            " delivered inside one host as the host reports them (null: via a host that"
            " does not count, PROTOCOL.md section 12)"
        ),
    ]
    host: Annotated[
        int | None,
        msgspec.Meta(description="of those, messages delivered inside one host (null: not known)"),
    ] = None
    direct: Annotated[
        int | None,
        msgspec.Meta(
            description="of those, messages that went host to host through a direct channel"
            " (the runner kept a copy of each; null: via host)"
        ),
    ] = None
    runner: Annotated[
        int | None,
        msgspec.Meta(description="of those, messages the runner delivered itself (null: via host)"),
    ] = None


@attrs.frozen
class ModuleStats:
    runtime: str
    host: Annotated[str, msgspec.Meta(description="the runtime instance holding it")]
    queued: Annotated[int, msgspec.Meta(description="messages waiting for it in the runner")]
    capacity: Annotated[int, msgspec.Meta(description="its queue's bound")]
    full: Annotated[bool, msgspec.Meta(description="its queue is full: back-pressure")]
    errors: Annotated[int, msgspec.Meta(description="errors it raised since the flow was made")]
    breakpoint: Breakpoint | None


@attrs.frozen
class FlowStats:
    """Counters of a flow for a live picture: poll it and compute rates."""

    id: str
    status: FlowStatus
    revision: int
    time: Annotated[float, msgspec.Meta(description="unix time the counters were read")]
    pending: int
    outputs: int
    errors: int
    paused: bool
    wires: list[WireStats]
    modules: dict[str, ModuleStats]
    exits: Annotated[dict[str, int], msgspec.Meta(description="module.port -> messages out")]
    injected: Annotated[dict[str, int], msgspec.Meta(description="module.port -> injected")]


@attrs.frozen
class DebugState:
    paused: bool
    pause: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="why: reason (breakpoint|pause), module, port, msg, time"),
    ]
    breakpoints: list[Breakpoint]


@attrs.frozen
class InputStates:
    consumed: Annotated[
        dict[str, Any] | None, msgspec.Meta(description="{port, msg} handled this tick")
    ]
    queued: Annotated[
        dict[str, list[Any]], msgspec.Meta(description="per input port, the messages still waiting")
    ]


@attrs.frozen
class ModuleStep:
    inputStates: InputStates
    outputStates: Annotated[
        dict[str, list[Any]], msgspec.Meta(description="per output port, what it emitted this tick")
    ]
    errors: list[ModuleError]
    edits: list[dict[str, Any]]


Step = Annotated[
    dict[str, ModuleStep],
    msgspec.Meta(description="per flowModuleId ('<flow>/<module>'): what the tick did"),
]


@attrs.frozen
class QueuedMessage:
    index: int
    port: str
    msg: Any


Queues = Annotated[
    dict[str, list[QueuedMessage]],
    msgspec.Meta(description="per module, its waiting messages in order"),
]


@attrs.frozen
class Old:
    old: Any


@attrs.frozen
class Environment:
    id: str
    runtime: str
    requirements: list[str]
    packages: list[str]
    usedBy: list[str]
    extra: list[str] = None
    built: float = None
    lastUsed: float = None


@attrs.frozen
class GcResult:
    removed: list[str]


@attrs.frozen
class Health:
    status: str
    version: str
    uptime: float
    flows: dict[str, int]
    runtimes: list[str]
    stateDir: str | None = None
    #: messages in journaled flows' journals not handled yet (lost if the state dir is)
    journaled: int = 0
    #: what answers: the page at /ui/ adapts to it (the dispatcher says "dispatcher")
    server: Literal["runner"] = "runner"
