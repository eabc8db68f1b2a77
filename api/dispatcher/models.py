"""The dispatcher API's shapes: bodies and queries it takes, answers it gives.

Constraints are ``msgspec.Meta``: the converter checks them and the OpenAPI document
shows them (``api/common/schema.py``). Answers the core gives as plain data are
described here for the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import attrs
import msgspec

from fifoflow.api.common.schema import Message, NonEmpty
from fifoflow.dispatcher.status import FlowStatus as PlacementStatus
from fifoflow.dispatcher.status import RunnerStatus
from fifoflow.flows.codec import FlowDocument
from fifoflow.flows.limits import MAX_INJECT

# ---------------------------------------------------------------------- bodies, queries


@attrs.frozen
class TokenBody:
    ttl: Annotated[float, msgspec.Meta(gt=0, description="seconds the token is valid")] = None


@attrs.frozen
class EventsQuery:
    since: (
        Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="only events after this id")]
        | None
    ) = None


@attrs.frozen
class RuntimeFlowsQuery:
    ids: Annotated[bool, msgspec.Meta(description="only the flows' ids")] | None = None


@attrs.frozen
class InjectBody:
    msgs: Annotated[list[Message], msgspec.Meta(max_length=MAX_INJECT)]


@attrs.frozen
class PageInject:
    """A page's ``{"op": "inject", "id"?, ...}`` on its control socket (``/client/ws``),
    without its ``op`` and ``id``."""

    flow: NonEmpty
    module: NonEmpty
    msgs: Annotated[list[Message], msgspec.Meta(max_length=MAX_INJECT)]
    port: NonEmpty = "in"


@attrs.frozen
class BreakpointBody:
    condition: Annotated[str | None, msgspec.Meta(examples=["msg.n == 3"])] = None


@attrs.frozen
class ImageBody:
    image: NonEmpty
    pull: Literal["always", "if-not-present", "never"] | None = None


# ---------------------------------------------------------------------- answers


@attrs.frozen
class Health:
    status: Literal["ok"]
    version: str
    uptime: float
    runners: Annotated[dict[str, int], msgspec.Meta(description="how many runners in each status")]
    heartbeat: Annotated[float, msgspec.Meta(description="seconds between heartbeats")]
    ttl: Annotated[float, msgspec.Meta(description="silence after which a runner is lost")]
    #: what answers: the page at /ui/ adapts to it (a runner says "runner")
    server: Literal["dispatcher"] = "dispatcher"


@attrs.frozen
class Token:
    token: Annotated[str, msgspec.Meta(description="works once")]
    expires: Annotated[float, msgspec.Meta(description="unix time")]


@attrs.frozen
class Runner:
    id: str
    name: str
    registered: float
    status: RunnerStatus
    lastSeen: float | None
    hardware: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="hostname, os, arch, cpus, memoryGiB, diskGiB, runtimes, labels, "
            "capacity {cpus, memory (bytes)}"
        ),
    ]
    journaled: Annotated[
        int,
        msgspec.Meta(
            description="messages in its journaled flows not handled yet, as its last "
            "heartbeat said (lost if the runner never comes back on its state dir)"
        ),
    ] = 0


@attrs.frozen
class Event:
    """kind: token, registered, connected, hardware, ready, lost, back, signed-off,
    deployed, placed, pending, refused, displaced, paused, draining, drained,
    flow-removed, removed-stale-flow, journal-handed-over; other fields depend on the
    kind (lost: ``journaled``, the messages its journals held at its last heartbeat)."""

    id: int
    time: float
    runner: str | None
    kind: str


@attrs.frozen
class FlowPlacement:
    id: str
    runner: Annotated[
        str | None,
        msgspec.Meta(description="the runner holding all of it (null: pending, or spanning)"),
    ]
    status: PlacementStatus
    reason: Annotated[str | None, msgspec.Meta(description="why it is pending")]
    modules: list[str]
    placement: Annotated[dict[str, str], msgspec.Meta(description="module id -> runner id")]
    snapshot: Annotated[bool, msgspec.Meta(description="module states are held")] = None
    updated: float = None


@attrs.frozen
class FlowRecord(FlowPlacement):
    states: Annotated[
        dict[str, Any], msgspec.Meta(description="the last module states the runners reported")
    ] = None
    flow: FlowDocument = None


@attrs.frozen
class RuntimeRunners:
    id: str
    runners: Annotated[list[str], msgspec.Meta(description="ready runners that have it")]


@attrs.frozen
class Moved:
    moved: list[str]


@attrs.frozen
class ModuleStep:
    inputStates: dict[str, Any] = None
    outputStates: dict[str, Any] = None
    errors: list[Any] = None


Step = Annotated[
    dict[str, ModuleStep],
    msgspec.Meta(description="per flowModuleId: inputStates, outputStates, errors"),
]
DebugParts = Annotated[
    dict[str, dict[str, Any]], msgspec.Meta(description="runner id -> its part's debugger state")
]
Queues = Annotated[dict[str, list[Any]], msgspec.Meta(description="module id -> queued messages")]


@attrs.frozen
class WireCount:
    wire: Annotated[str, msgspec.Meta(examples=["split.out->work.in"])]
    via: Annotated[
        Literal["runner", "host", "relay"],
        msgspec.Meta(
            description="runner: routed by the runner holding both ends; host: inside one "
            "host, not seen; relay: between runners, counted by the dispatcher's relay and "
            "by the runners that sent directly"
        ),
    ]
    messages: Annotated[int | None, msgspec.Meta(description="messages on it (null: not seen)")]
    dispatcher: Annotated[
        int | None,
        msgspec.Meta(description="of a wire between runners: messages the dispatcher relayed"),
    ] = None
    direct: Annotated[
        int | None,
        msgspec.Meta(
            description="of a wire between runners: messages sent from runner to runner "
            "(acknowledged by the receiving runner)"
        ),
    ] = None


@attrs.frozen
class FlowStats:
    """A flow's counters merged over its runners: poll them and compute rates."""

    id: str
    status: PlacementStatus
    time: Annotated[float, msgspec.Meta(description="unix time the counters were read")]
    pending: int
    outputs: int
    errors: int
    paused: bool
    wires: list[WireCount]
    modules: Annotated[
        dict[str, dict[str, Any]],
        msgspec.Meta(
            description="per module: its part's counters (queued, capacity, full, errors, "
            "breakpoint), runner (who holds it: a runner or a page) and reachable"
        ),
    ]
    exits: dict[str, int]
    injected: dict[str, int]
    parts: Annotated[
        dict[str, str | None],
        msgspec.Meta(description="runner id -> its part's status (null: no answer)"),
    ]


@attrs.frozen
class ImageUpdate:
    image: str
    moved: list[str]
    seconds: float
    containers: list[str] = None


@attrs.frozen
class ClientToken:
    token: str | None
