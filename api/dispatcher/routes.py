"""The dispatcher API's operator routes: one table, each route a call into the core.

The table is what the app registers (``app.py``) and what the OpenAPI document is built
from (``openapi.py``). The pages' files and sockets and the runners' link are not here:
they are not JSON routes (``pages.py``, ``dispatcher/link.py``).
"""

from __future__ import annotations

from typing import Any

from fifoflow.api.common import models as shared
from fifoflow.api.common.errors import InvalidParams
from fifoflow.api.common.models import LogEntry
from fifoflow.api.common.routes import Answer, Call, Route
from fifoflow.dispatcher.service import Dispatcher, DispatcherError, flow_summary
from fifoflow.flows.codec import FlowDocument

from . import models as m

__all__ = ["ROUTES", "client_token_route"]

F = {"flowId": (str, "a deployed flow's id")}
FM = {**F, "moduleId": (str, "a module's id within the flow")}
R = {"runnerId": (str, "a runner's id")}


async def _token(d: Dispatcher, call: Call) -> Any:
    return d.issue_token(call.body.ttl if call.body is not None else None)


async def _drain(d: Dispatcher, call: Call) -> m.Moved:
    return m.Moved(await d.drain(call.path["runnerId"]))


async def _events(d: Dispatcher, call: Call) -> Any:
    return d.events(call.query.since or 0)


async def _deploy(d: Dispatcher, call: Call) -> Any:
    return await d.deploy(call.body)


async def _put_flow(d: Dispatcher, call: Call) -> Any:
    flow_id = call.path["flowId"]
    if call.body.get("id", flow_id) != flow_id:
        raise InvalidParams(
            f"the document's id {call.body.get('id')!r} is not the path's {flow_id!r}",
            field="id",
        )
    return await d.deploy({**call.body, "id": flow_id})


async def _get_flow(d: Dispatcher, call: Call) -> Any:
    record = d.flow(call.path["flowId"])
    return {**flow_summary(record), "states": record["states"], "flow": record["document"]}


async def _runtime_flows(d: Dispatcher, call: Call) -> Any:
    ids = d.flows_for_runtime(call.path["runtimeId"])
    return ids if call.query.ids else [flow_summary(d.flow(flow_id)) for flow_id in ids]


async def _remove(d: Dispatcher, call: Call) -> shared.Removed:
    await d.remove(call.path["flowId"])
    return shared.Removed(call.path["flowId"])


async def _inject(d: Dispatcher, call: Call) -> Any:
    p = call.path
    return await d.inject(p["flowId"], p["moduleId"], p["port"], call.body.msgs)


async def _set_breakpoint(d: Dispatcher, call: Call) -> Any:
    condition = call.body.condition if call.body is not None else None
    return await d.set_breakpoint(call.path["flowId"], call.path["moduleId"], condition)


async def _remove_breakpoint(d: Dispatcher, call: Call) -> shared.RemovedBreakpoint:
    removed = await d.remove_breakpoint(call.path["flowId"], call.path["moduleId"])
    return shared.RemovedBreakpoint(removed)


def _flow(method: Any) -> Any:
    """A view calling ``method(dispatcher, flowId)``."""

    async def view(d: Dispatcher, call: Call) -> Any:
        return await method(d, call.path["flowId"])

    return view


async def _backend(d: Dispatcher, call: Call) -> Any:
    return {"backend": None} if d.backend is None else d.backend.describe()


async def _update_image(d: Dispatcher, call: Call) -> Any:
    if d.backend is None:
        raise DispatcherError("this dispatcher has no container backend (serve --docker IMAGE)")
    image, pull = call.body.image, call.body.pull
    try:
        return await d.backend.update_image(image, pull)
    except ValueError as exc:
        raise InvalidParams(str(exc), field="pull") from None
    except RuntimeError as exc:
        raise DispatcherError(f"update to {image} failed: {exc}") from None


async def _openapi(d: Dispatcher, call: Call) -> Any:
    from .openapi import dispatcher_openapi  # the document is built from this table

    return dispatcher_openapi(d.version)


def _created(view: Any) -> Any:
    async def created(d: Dispatcher, call: Call) -> Answer:
        return Answer(await view(d, call), 201)

    return created


#: a call forwarded to the runner(s) holding a flow: no such flow or module (404), no
#: runner now or the runner refused it (409), the runner did not answer in time (504)
FORWARDED = (404, 409, 504)
PLACED = "where the flow runs now, or why it waits"
SUMMARY = "the flow as a runner describes it"
DEBUG = "a part's debugger state"

ROUTES: list[Route] = [
    Route("get", "/health", "health", "The dispatcher's health", lambda d, c: _value({**d.health(), "server": "dispatcher"}), m.Health),
    Route("post", "/tokens", "issueToken", "A one-time registration token for a new runner", _token, m.Token,
          "the token", status=201, body=m.TokenBody, body_required=False, errors=(400, 422)),
    Route("get", "/runners", "listRunners", "Every runner, its status and hardware",
          lambda d, c: _value(d.runners()), list[m.Runner], "the runners"),
    Route("post", "/runners/{runnerId}/drain", "drainRunner", "Move every flow off a runner (state and waiting messages too)",
          _drain, m.Moved, "the flows moved", errors=(404,), params=R),
    Route("get", "/runners/{runnerId}/logs", "getRunnerLogs", "A runner's log lines (every flow on it)",
          lambda d, c: d.logs(runner_id=c.path["runnerId"]), list[dict[str, Any]], "log lines, oldest first",
          errors=FORWARDED, params=R),
    Route("get", "/events", "listEvents", "What happened, oldest first", _events, list[m.Event], "events",
          query=m.EventsQuery, errors=(422,)),
    Route("get", "/runtimes", "listRuntimes", "Every runtime some runner has, and the ready runners that have it",
          lambda d, c: _value(d.runtimes()), list[m.RuntimeRunners], "the runtimes"),
    Route("get", "/runtimes/{runtimeId}/flows", "listFlowsForRuntime", "Deployed flows with a module in that runtime",
          _runtime_flows, list[m.FlowPlacement | str], "the flows (with ?ids=true: their ids)",
          query=m.RuntimeFlowsQuery, errors=(404, 422), params={"runtimeId": (str, "a runtime id")}),
    Route("get", "/flows", "listFlows", "Deployed flows and where they run", lambda d, c: _value(d.flows()),
          list[m.FlowPlacement], "the flows"),
    Route("post", "/flows", "deployFlow", "Deploy a flow (or update it: each part is hot-swapped where it runs)",
          _created(_deploy), m.FlowPlacement, PLACED, status=201, body=FlowDocument, parse_body=False,
          errors=(400, 413, 422)),
    Route("get", "/flows/{flowId}", "getFlow", "A flow: placement, last states, document", _get_flow, m.FlowRecord,
          "the flow", errors=(404,), params=F),
    Route("put", "/flows/{flowId}", "addOrUpdateFlow", "Deploy or update the flow with this id", _put_flow,
          m.FlowPlacement, PLACED, body=FlowDocument, parse_body=False, errors=(400, 413, 422), params=F),
    Route("delete", "/flows/{flowId}", "removeFlow", "Remove a flow from its runners and the dispatcher", _remove,
          shared.Removed, "removed", errors=(404,), params=F),
    Route("post", "/flows/{flowId}/start", "startFlow", "Start every part", _flow(Dispatcher.start_flow), dict[str, Any], SUMMARY,
          errors=FORWARDED, params=F),
    Route("post", "/flows/{flowId}/stop", "stopFlow", "Stop every part (state kept)", _flow(Dispatcher.stop_flow), dict[str, Any],
          SUMMARY, errors=FORWARDED, params=F),
    Route("post", "/flows/{flowId}/modules/{moduleId}/inputs/{port}", "inject",
          "Send messages into a module, on whichever runner holds it", _inject, shared.Accepted, "how many were queued",
          body=m.InjectBody, errors=(400, 404, 409, 413, 422, 504),
          params={**FM, "port": (str, "an input port of the module")}),
    Route("get", "/flows/{flowId}/modules/{moduleId}/state", "getModuleState", "A module's state, from its runner",
          lambda d, c: d.module_state(c.path["flowId"], c.path["moduleId"]), shared.ModuleState, "the state", errors=FORWARDED, params=FM),
    Route("put", "/flows/{flowId}/modules/{moduleId}/breakpoint", "setBreakPointAtModule",
          "A breakpoint, set on the module's runner; a hit pauses every part", _set_breakpoint, dict[str, Any],
          "the breakpoint", body=m.BreakpointBody, body_required=False, errors=(400, 404, 409, 422, 504), params=FM),
    Route("delete", "/flows/{flowId}/modules/{moduleId}/breakpoint", "removeBreakPointAtModule", "Remove it",
          _remove_breakpoint, shared.RemovedBreakpoint, "whether there was one", errors=FORWARDED, params=FM),
    Route("post", "/flows/{flowId}/pause", "pauseFlow", "Pause every part", _flow(Dispatcher.pause_flow), dict[str, Any], DEBUG,
          errors=FORWARDED, params=F),
    Route("post", "/flows/{flowId}/continue", "continueFlow", "Resume every part until the next breakpoint",
          _flow(Dispatcher.continue_flow), dict[str, Any], DEBUG, errors=FORWARDED, params=F),
    Route("post", "/flows/{flowId}/step", "singleStepFlow", "One tick on every part; the answers merged by flowModuleId",
          _flow(Dispatcher.step_flow), m.Step, "per flowModuleId: inputStates, outputStates, errors", errors=FORWARDED, params=F),
    Route("get", "/flows/{flowId}/debug", "getDebugState", "Every part's debugger state", _flow(Dispatcher.debug_state),
          m.DebugParts, "runner id -> its part's debugger state", errors=FORWARDED, params=F),
    Route("get", "/flows/{flowId}/queues", "getQueues", "What waits at each module, across runners",
          _flow(Dispatcher.queues), m.Queues, "module id -> queued messages", errors=FORWARDED, params=F),
    Route("get", "/flows/{flowId}/stats", "getFlowStats",
          "Counters for a live picture, merged over the runners: messages per wire (wires between runners "
          "counted by the relay), queue depth per module and who holds it, errors, breakpoints",
          _flow(Dispatcher.flow_stats), m.FlowStats, "the counters (poll them for rates)", errors=FORWARDED, params=F),
    Route("get", "/flows/{flowId}/logs", "getFlowLogs", "Log lines from every runner holding a part of the flow",
          lambda d, c: d.logs(flow_id=c.path["flowId"]), list[LogEntry], "oldest first", errors=FORWARDED, params=F),
    Route("get", "/backend", "getBackend", "The container backend: image, pull policy, containers and their runners",
          _backend, dict[str, Any], '{"backend": null} when the dispatcher has none'),
    Route("post", "/backend/image", "updateImage",
          "Move every runner to a new image: new containers, flows moved with their state and waiting "
          "messages, old containers stopped",
          _update_image, m.ImageUpdate, "the update is done", body=m.ImageBody, errors=(400, 409, 413, 422)),
    Route("get", "/openapi.json", "openapi", "This document", _openapi, dict[str, Any], "OpenAPI 3.1"),
]  # fmt: skip


async def _value(value: Any) -> Any:
    return value


def client_token_route(token: str | None) -> Route:
    """``GET /client-token``: the token the operator gives to web pages (it lives in the
    server, not in the core)."""
    return Route(
        "get",
        "/client-token",
        "getClientToken",
        "The token web pages' client runners connect with (not the operator token)",
        lambda d, c: _value(m.ClientToken(token)),
        m.ClientToken,
        "the client token",
    )
