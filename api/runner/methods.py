"""The Runner API's methods, once: each takes its params model and calls the runner.

JSON-RPC calls them by name (:data:`METHODS`); REST routes (``routes.py``) build the same
params from the path, query and body and call the same functions. The seed's names are
used verbatim: ``listRuntimes``, ``listFlowsForRuntime``, ``addOrUpdateFlow``,
``removeFlow``, ``startFlow``, ``stopFlow``, ``setBreakPointAtModule``,
``removeBreakPointAtModule``, ``singleStepFlow``; around them the debugger
(``pauseFlow``, ``continueFlow``, ``getDebugState``, ``getQueues``,
``editQueuedMessage``, ``dropQueuedMessage``), environments (``listEnvironments``,
``changeEnvironment``, ``rebuildEnvironment``, ``gcEnvironments``) and ``applyFlow``,
``health``, ``listFlows``, ``getFlow``, ``inject``, ``getModuleState``,
``getModuleErrors``, ``getFlowStats``, ``getLogs``. Nothing here keeps state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fifoflow.api.common import models as shared
from fifoflow.api.common.errors import InvalidParams
from fifoflow.api.common.routes import Method
from fifoflow.flows import parse_flow
from fifoflow.runner.conditions import ConditionError

from . import models as m

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["METHODS", "apply_flow", "inject", "set_breakpoint"]


def flows_for_runtime(runner: Runner, p: m.RuntimeRef) -> list[Any]:
    """The flows with a module in the runtime (summaries, as listFlows gives them), or
    with ``ids`` only their ids."""
    ids = runner.list_flows_for_runtime(p.runtimeId)
    return ids if p.ids else [runner.describe_flow(flow_id) for flow_id in ids]


async def apply_flow(runner: Runner, p: m.ApplyFlow) -> m.ApplyResult:
    """addOrUpdateFlow with the whole answer: created, revision, and for a running flow
    the hot swap's report (what changed, messages re-homed and dropped, timings)."""
    flow = parse_flow(p.flow, base_dir=None, runtimes=runner.runtimes, source_name="flow")
    result = await runner.apply_flow(flow, revision=p.revision)
    return m.ApplyResult(created=result.created, revision=result.revision, swap=result.report)


async def add_or_update_flow(runner: Runner, p: m.ApplyFlow) -> bool:
    return (await apply_flow(runner, p)).created


async def remove_flow(runner: Runner, p: m.FlowRef) -> bool:
    await runner.remove_flow(p.flowId)
    return True


async def start_flow(runner: Runner, p: m.FlowRef) -> Any:
    await runner.start_flow(p.flowId)
    return runner.describe_flow(p.flowId)


async def stop_flow(runner: Runner, p: m.FlowRef) -> Any:
    await runner.stop_flow(p.flowId)
    return runner.describe_flow(p.flowId)


async def set_breakpoint(runner: Runner, p: m.SetBreakpoint) -> Any:
    try:
        return await runner.set_breakpoint_at_module(p.flowModuleId, p.condition)
    except ConditionError as exc:
        raise InvalidParams(str(exc), field="condition") from None


async def edit_queued(runner: Runner, p: m.QueueEdit) -> m.Old:
    if p.msg is None:
        raise InvalidParams(
            "msg is required (null is not a message; use dropQueuedMessage)", field="msg"
        )
    return m.Old(await runner.edit_queued_message(p.flowId, p.moduleId, p.index, p.msg))


async def drop_queued(runner: Runner, p: m.QueueDrop) -> m.Old:
    return m.Old(await runner.edit_queued_message(p.flowId, p.moduleId, p.index, None))


async def change_environment(runner: Runner, p: m.EnvironmentChange) -> Any:
    if not p.install and not p.remove:
        raise InvalidParams("give packages to install and/or remove", field="install")
    try:
        return await runner.change_environment(p.environmentId, p.install, p.remove)
    except ValueError as exc:
        raise InvalidParams(str(exc), field="install") from None


async def get_flow(runner: Runner, p: m.FlowRef) -> Any:
    return {**runner.describe_flow(p.flowId), "flow": runner.flow_document(p.flowId)}


async def inject(runner: Runner, p: m.Inject) -> shared.Accepted:
    if (p.msg is None) == (p.msgs is None):
        raise InvalidParams(
            "give either msg (one message) or msgs (an array of messages)", field="msgs"
        )
    msgs = [p.msg] if p.msgs is None else p.msgs
    if any(msg is None for msg in msgs):
        raise InvalidParams("a message cannot be null (null means 'send nothing')", field="msgs")
    await runner.inject(p.flowId, p.moduleId, p.port, msgs)
    return shared.Accepted(len(msgs))


def _sync(fn: Any) -> Any:
    """A method from a plain function (the async ones' lambdas return awaitables)."""

    async def call(runner: Runner, p: Any) -> Any:
        return fn(runner, p)

    return call


METHODS: dict[str, Method] = {
    method.name: method
    for method in [
        Method("listRuntimes", m.NoParams, _sync(lambda r, p: r.list_runtimes())),
        Method("listFlowsForRuntime", m.RuntimeRef, _sync(flows_for_runtime)),
        Method("addOrUpdateFlow", m.ApplyFlow, add_or_update_flow),
        Method("removeFlow", m.FlowRef, remove_flow),
        Method("startFlow", m.FlowRef, start_flow),
        Method("stopFlow", m.FlowRef, stop_flow),
        Method("setBreakPointAtModule", m.SetBreakpoint, set_breakpoint),
        Method(
            "removeBreakPointAtModule",
            m.BreakpointRef,
            lambda r, p: r.remove_breakpoint_at_module(p.flowModuleId),
        ),
        Method("singleStepFlow", m.StepParams, lambda r, p: r.single_step_flow(p.flowId)),
        Method("applyFlow", m.ApplyFlow, apply_flow),
        Method("pauseFlow", m.FlowRef, lambda r, p: r.pause_flow(p.flowId)),
        Method("continueFlow", m.FlowRef, lambda r, p: r.continue_flow(p.flowId)),
        Method("getDebugState", m.FlowRef, _sync(lambda r, p: r.debug_state(p.flowId))),
        Method("getQueues", m.FlowRef, _sync(lambda r, p: r.queues(p.flowId))),
        Method("editQueuedMessage", m.QueueEdit, edit_queued),
        Method("dropQueuedMessage", m.QueueDrop, drop_queued),
        Method(
            "listEnvironments",
            m.EnvironmentFilter,
            _sync(lambda r, p: r.list_environments(p.runtimeId)),
        ),
        Method("changeEnvironment", m.EnvironmentChange, change_environment),
        Method(
            "rebuildEnvironment",
            m.EnvironmentRef,
            lambda r, p: r.rebuild_environment(p.environmentId),
        ),
        Method(
            "gcEnvironments",
            m.GcParams,
            _sync(lambda r, p: m.GcResult(r.gc_environments(p.maxIdle))),
        ),
        Method("health", m.NoParams, _sync(lambda r, p: {**r.health(), "server": "runner"})),
        Method("listFlows", m.NoParams, _sync(lambda r, p: r.flows())),
        Method("getFlow", m.FlowRef, get_flow),
        Method("inject", m.Inject, inject),
        Method(
            "getModuleState",
            m.ModuleRef,
            _sync(lambda r, p: shared.ModuleState(r.module_state(p.flowId, p.moduleId))),
        ),
        Method(
            "getModuleErrors",
            m.ModuleRef,
            _sync(lambda r, p: r.module_errors(p.flowId, p.moduleId)),
        ),
        Method("getFlowStats", m.FlowRef, _sync(lambda r, p: r.flow_stats(p.flowId))),
        Method("getLogs", m.LogsParams, _sync(lambda r, p: r.flow_logs(p.flowId, p.limit))),
    ]
}
