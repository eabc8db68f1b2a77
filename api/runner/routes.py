"""The Runner API's REST routes: one table, each route a translation to a method.

The table is what the app registers (``app.py``) and what the OpenAPI document is built
from (``openapi.py``): a route's path, models, answer and errors are written here once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fifoflow.api.common import models as shared
from fifoflow.api.common.errors import InvalidParams
from fifoflow.api.common.models import LogEntry, ModuleError
from fifoflow.api.common.routes import CONVERTER, Answer, Call, Route
from fifoflow.flows.codec import FlowDocument

from . import methods
from . import models as m

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["ROUTES"]

F = {"flowId": (str, "the flow's id")}
FM = {**F, "moduleId": (str, "a module's id within the flow")}


def _call(name: str, **fixed: Any) -> Any:
    """A view that calls the method ``name`` with the path parameters (and ``fixed``)."""
    method = methods.METHODS[name]

    async def view(runner: Runner, call: Call) -> Any:
        params = method.params(**call.path, **fixed)
        return await method.call(runner, params)

    return view


async def _put_flow(runner: Runner, call: Call) -> Answer:
    flow_id = call.path["flowId"]
    document = dict(call.body)
    document.setdefault("id", flow_id)
    if document["id"] != flow_id:
        raise InvalidParams(
            f"the flow's id {document['id']!r} is not the id in the path {flow_id!r}",
            field="flow.id",
        )
    result = await methods.apply_flow(runner, m.ApplyFlow(document, call.query.revision))
    summary = CONVERTER.structure(runner.describe_flow(flow_id), m.FlowSummary)
    body = m.Applied(result.created, summary, result.swap)
    return Answer(body, 201 if result.created else 200)


async def _delete_flow(runner: Runner, call: Call) -> shared.Removed:
    await runner.remove_flow(call.path["flowId"])
    return shared.Removed(call.path["flowId"])


def _flow_module(call: Call) -> str:
    return f"{call.path['flowId']}/{call.path['moduleId']}"


async def _set_breakpoint(runner: Runner, call: Call) -> Any:
    condition = call.body.condition if call.body is not None else None
    return await methods.set_breakpoint(runner, m.SetBreakpoint(_flow_module(call), condition))


async def _remove_breakpoint(runner: Runner, call: Call) -> shared.RemovedBreakpoint:
    return shared.RemovedBreakpoint(await runner.remove_breakpoint_at_module(_flow_module(call)))


async def _edit_queued(runner: Runner, call: Call) -> m.Old:
    return await methods.edit_queued(runner, m.QueueEdit(**call.path, msg=call.body.msg))


async def _inject(runner: Runner, call: Call) -> shared.Accepted:
    body = call.body
    return await methods.inject(runner, m.Inject(**call.path, msg=body.msg, msgs=body.msgs))


async def _runtime_flows(runner: Runner, call: Call) -> Any:
    params = m.RuntimeRef(call.path["runtimeId"], ids=bool(call.query.ids))
    return methods.flows_for_runtime(runner, params)


async def _list_environments(runner: Runner, call: Call) -> Any:
    return runner.list_environments(call.query.runtime)


async def _change_environment(runner: Runner, call: Call) -> Any:
    body = call.body
    params = m.EnvironmentChange(call.path["environmentId"], body.install, body.remove)
    return await methods.change_environment(runner, params)


async def _gc(runner: Runner, call: Call) -> m.GcResult:
    return m.GcResult(runner.gc_environments(call.query.maxIdle))


async def _logs(runner: Runner, call: Call) -> Any:
    return runner.flow_logs(call.path["flowId"], call.query.limit)


async def _openapi(runner: Runner, call: Call) -> Any:
    from .openapi import runner_openapi  # the document is built from this table

    return runner_openapi(sorted(runner.runtimes), runner.version)


ENV = {"environmentId": (str, "an environment id, as listEnvironments gives it")}
INDEX = {**FM, "index": (int, "position in the module's queue (0: next to be handled)")}

ROUTES: list[Route] = [
    Route("get", "/health", "health", "The runner's health and version", _call("health"), m.Health),
    Route("get", "/runtimes", "listRuntimes", "Runtimes this runner can run", _call("listRuntimes"), list[m.Runtime], "the runtimes"),
    Route("get", "/runtimes/{runtimeId}/flows", "listFlowsForRuntime", "Flows with modules on a runtime",
          _runtime_flows, list[m.FlowSummary | str], "the flows (with ?ids=true: their ids)",
          query=m.RuntimeFlowsQuery, errors=(404, 422),
          params={"runtimeId": (str, "a runtime id, as listRuntimes gives it")}),
    Route("get", "/environments", "listEnvironments", "Environments (one per requirement set) and their packages",
          _list_environments, list[m.Environment], "the environments", query=m.EnvironmentsQuery, errors=(404, 422)),
    Route("post", "/environments/{environmentId}/packages", "changeEnvironment", "Install and/or remove packages in an environment",
          _change_environment, m.Environment, "the environment after the change", body=m.PackagesBody,
          errors=(400, 404, 413, 422), params=ENV),
    Route("post", "/environments/{environmentId}/rebuild", "rebuildEnvironment", "Build an environment again from its requirements",
          _call("rebuildEnvironment"), m.Environment, "rebuilt", errors=(404, 422), params=ENV),
    Route("post", "/environments/gc", "gcEnvironments", "Remove environments no flow uses, idle longer than maxIdle seconds",
          _gc, m.GcResult, "what was removed", query=m.GcQuery, errors=(400, 422)),
    Route("get", "/flows", "listFlows", "Every flow and its status", _call("listFlows"), list[m.FlowSummary], "the flows"),
    Route("get", "/flows/{flowId}", "getFlow", "A flow's status and document", _call("getFlow"), m.FlowDetail, "the flow",
          errors=(404,), params=F),
    Route("put", "/flows/{flowId}", "addOrUpdateFlow", "Add a flow, or update it (a running flow is hot-swapped)",
          _put_flow, m.Applied,
          "the flow was updated (a running flow hot-swapped, a stopped one replaced; module state is kept)",
          also={201: "the flow was added"}, query=m.PutFlowQuery, body=FlowDocument, parse_body=False,
          errors=(400, 409, 413, 422, 507), params=F),
    Route("delete", "/flows/{flowId}", "removeFlow", "Stop and remove a flow", _delete_flow, shared.Removed, "removed",
          errors=(404, 507), params=F),
    Route("post", "/flows/{flowId}/start", "startFlow", "Start a flow", _call("startFlow"), m.FlowSummary, "the flow's status",
          errors=(404, 409, 422, 503, 507), params=F),
    Route("post", "/flows/{flowId}/stop", "stopFlow", "Stop a flow gracefully", _call("stopFlow"), m.FlowSummary, "the flow's status",
          errors=(404, 507), params=F),
    Route("post", "/flows/{flowId}/step", "singleStepFlow", "Advance a paused flow one tick: each module with a waiting message handles one",
          _call("singleStepFlow"), m.Step, "what every module consumed, emitted and raised", errors=(404, 409), params=F),
    Route("post", "/flows/{flowId}/pause", "pauseFlow", "Pause a running flow (returns once nothing is in flight)",
          _call("pauseFlow"), m.DebugState, "paused", errors=(404, 409), params=F),
    Route("post", "/flows/{flowId}/continue", "continueFlow", "Resume a paused flow until the next breakpoint",
          _call("continueFlow"), m.DebugState, "running", errors=(404, 409), params=F),
    Route("get", "/flows/{flowId}/debug", "getDebugState", "Whether the flow is paused, why, and its breakpoints",
          _call("getDebugState"), m.DebugState, "the debugger's state", errors=(404,), params=F),
    Route("get", "/flows/{flowId}/queues", "getQueues", "Every module's waiting messages",
          _call("getQueues"), m.Queues, "the queues", errors=(404,), params=F),
    Route("put", "/flows/{flowId}/modules/{moduleId}/breakpoint", "setBreakPointAtModule",
          "Pause the flow when a message (matching the condition) is about to reach the module",
          _set_breakpoint, m.Breakpoint, "set", body=m.BreakpointBody, body_required=False,
          errors=(400, 404, 409, 422), params=FM),
    Route("delete", "/flows/{flowId}/modules/{moduleId}/breakpoint", "removeBreakPointAtModule", "Remove a module's breakpoint",
          _remove_breakpoint, shared.RemovedBreakpoint, "whether there was one", errors=(404, 409), params=FM),
    Route("put", "/flows/{flowId}/modules/{moduleId}/queue/{index}", "editQueuedMessage", "Replace a waiting message of a paused flow",
          _edit_queued, m.Old, "replaced", body=m.QueueEditBody, errors=(400, 404, 409, 422), params=INDEX),
    Route("delete", "/flows/{flowId}/modules/{moduleId}/queue/{index}", "dropQueuedMessage", "Drop a waiting message of a paused flow",
          _call("dropQueuedMessage"), m.Old, "dropped", errors=(404, 409), params=INDEX),
    Route("post", "/flows/{flowId}/modules/{moduleId}/inputs/{port}", "inject",
          "Send messages to a module's input port (waits while its queue is full)",
          _inject, shared.Accepted, "queued, in order", body=m.InjectBody, errors=(400, 404, 409, 413, 422, 507),
          params={**FM, "port": (str, "an input port of the module")}),
    Route("get", "/flows/{flowId}/modules/{moduleId}/state", "getModuleState", "The module's last reported state",
          _call("getModuleState"), shared.ModuleState, "state", errors=(404,), params=FM),
    Route("get", "/flows/{flowId}/modules/{moduleId}/errors", "getModuleErrors", "The module's recent errors, oldest first",
          _call("getModuleErrors"), list[ModuleError], "errors", errors=(404,), params=FM),
    Route("get", "/flows/{flowId}/stats", "getFlowStats",
          "Counters for a live picture: messages per wire, queue depth per module, errors, breakpoints",
          _call("getFlowStats"), m.FlowStats, "the counters (poll them for rates)", errors=(404,), params=F),
    Route("get", "/flows/{flowId}/logs", "getLogs", "Recent log lines of the flow's runtimes, oldest first",
          _logs, list[LogEntry], "log lines", query=m.LogsQuery, errors=(400, 404, 422), params=F),
    Route("get", "/openapi.json", "openapi", "This document", _openapi, dict[str, Any], "OpenAPI 3.1"),
]  # fmt: skip
