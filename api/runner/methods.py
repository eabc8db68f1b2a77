"""The Runner API's methods, once: REST routes and JSON-RPC calls both come here.

Each method takes the :class:`~fifoflow.runner.Runner` and a dict of named parameters
(what a JSON-RPC call sends as ``params``; what a REST route gathers from its path, query
and body), checks every parameter (an :class:`~.errors.InvalidParams` names the one at
fault) and calls the runner. Nothing here keeps state.

The seed's names are used verbatim: ``listRuntimes``, ``listFlowsForRuntime``,
``addOrUpdateFlow``, ``removeFlow``, ``startFlow``, ``stopFlow``,
``setBreakPointAtModule``, ``removeBreakPointAtModule``, ``singleStepFlow``. Around them:
``applyFlow`` (addOrUpdateFlow's whole answer), the debugger's ``pauseFlow``,
``continueFlow``, ``getDebugState``, ``getQueues``, ``editQueuedMessage``,
``dropQueuedMessage``, the environments' ``listEnvironments``, ``changeEnvironment``,
``rebuildEnvironment``, ``gcEnvironments``, and ``health``, ``listFlows``, ``getFlow``, ``inject``, ``getModuleState``,
``getModuleErrors``, ``getLogs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fifoflow.api.common.errors import InvalidParams
from fifoflow.flows import parse_flow
from fifoflow.runner.conditions import ConditionError

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["METHODS", "Method", "call"]

Params = dict[str, Any]
Method = Callable[["Runner", Params], Awaitable[Any]]

#: largest number of messages one inject call takes (split bigger batches)
MAX_INJECT = 100_000
MAX_LOGS = 10_000


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _str(params: Params, name: str, *, default: str | None = None) -> str:
    value = params.get(name, default)
    if value is None:
        raise InvalidParams(f"missing required parameter {name!r}", field=name)
    if not isinstance(value, str):
        raise InvalidParams(f"{name} must be a string, got {_json_type(value)}", field=name)
    if not value:
        raise InvalidParams(f"{name} must not be empty", field=name)
    return value


def _opt_int(params: Params, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParams(f"{name} must be an integer, got {_json_type(value)}", field=name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidParams(f"{name} must be {bound}, got {value}", field=name)
    return value


def _no_extra(params: Params, *known: str) -> None:
    extra = sorted(set(params) - set(known))
    if extra:
        allowed = ", ".join(known) or "none"
        raise InvalidParams(
            f"unknown parameter(s): {', '.join(extra)} (allowed: {allowed})", field=extra[0]
        )


# ---------------------------------------------------------------------- the seed's methods


async def list_runtimes(runner: Runner, params: Params) -> Any:
    _no_extra(params)
    return runner.list_runtimes()


async def list_flows_for_runtime(runner: Runner, params: Params) -> Any:
    _no_extra(params, "runtimeId")
    return runner.list_flows_for_runtime(_str(params, "runtimeId"))


async def apply_flow(runner: Runner, params: Params) -> Any:
    """addOrUpdateFlow with the whole answer: created, revision, and for a running flow
    the hot swap's report (what changed, messages re-homed and dropped, timings)."""
    _no_extra(params, "flow", "revision")
    document = params.get("flow")
    if not isinstance(document, dict):
        raise InvalidParams(
            f"flow must be a flow document (an object), got {_json_type(document)}", field="flow"
        )
    revision = _opt_int(params, "revision", minimum=0)
    flow = parse_flow(document, base_dir=None, runtimes=runner.runtimes, source_name="flow")
    result = await runner.apply_flow(flow, revision=revision)
    return {"created": result.created, "revision": result.revision, "swap": result.report}


async def add_or_update_flow(runner: Runner, params: Params) -> Any:
    return (await apply_flow(runner, params))["created"]


async def remove_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    await runner.remove_flow(_str(params, "flowId"))
    return True


async def start_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    flow_id = _str(params, "flowId")
    await runner.start_flow(flow_id)
    return runner.describe_flow(flow_id)


async def stop_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    flow_id = _str(params, "flowId")
    await runner.stop_flow(flow_id)
    return runner.describe_flow(flow_id)


async def set_breakpoint(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowModuleId", "condition")
    condition = params.get("condition")
    if condition is not None and not isinstance(condition, str):
        raise InvalidParams(
            f"condition must be a string like 'msg.n == 3', got {_json_type(condition)}",
            field="condition",
        )
    try:
        return await runner.set_breakpoint_at_module(_str(params, "flowModuleId"), condition)
    except ConditionError as exc:
        raise InvalidParams(str(exc), field="condition") from None


async def remove_breakpoint(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowModuleId")
    return await runner.remove_breakpoint_at_module(_str(params, "flowModuleId"))


async def single_step_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    flow_id = params.get("flowId")
    return await runner.single_step_flow(_str(params, "flowId") if flow_id is not None else None)


# ---------------------------------------------------------------------- the debugger


async def pause_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    return await runner.pause_flow(_str(params, "flowId"))


async def continue_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    return await runner.continue_flow(_str(params, "flowId"))


async def get_debug_state(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    return runner.debug_state(_str(params, "flowId"))


async def get_queues(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    return runner.queues(_str(params, "flowId"))


def _index(params: Params) -> int:
    index = _opt_int(params, "index", minimum=0)
    if index is None:
        raise InvalidParams("missing required parameter 'index'", field="index")
    return index


async def edit_queued_message(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "moduleId", "index", "msg")
    if params.get("msg") is None:
        raise InvalidParams(
            "msg is required (null is not a message; use dropQueuedMessage)", field="msg"
        )
    old = await runner.edit_queued_message(
        _str(params, "flowId"), _str(params, "moduleId"), _index(params), params["msg"]
    )
    return {"old": old}


async def drop_queued_message(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "moduleId", "index")
    old = await runner.edit_queued_message(
        _str(params, "flowId"), _str(params, "moduleId"), _index(params), None
    )
    return {"old": old}


# ---------------------------------------------------------------------- environments


def _str_list(params: Params, name: str) -> list[str]:
    value = params.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidParams(f"{name} must be an array of non-empty strings", field=name)
    return value


async def list_environments(runner: Runner, params: Params) -> Any:
    _no_extra(params, "runtimeId")
    runtime = params.get("runtimeId")
    return runner.list_environments(_str(params, "runtimeId") if runtime is not None else None)


async def change_environment(runner: Runner, params: Params) -> Any:
    _no_extra(params, "environmentId", "install", "remove")
    install, remove = _str_list(params, "install"), _str_list(params, "remove")
    if not install and not remove:
        raise InvalidParams("give packages to install and/or remove", field="install")
    try:
        return await runner.change_environment(_str(params, "environmentId"), install, remove)
    except ValueError as exc:
        raise InvalidParams(str(exc), field="install") from None


async def rebuild_environment(runner: Runner, params: Params) -> Any:
    _no_extra(params, "environmentId")
    return await runner.rebuild_environment(_str(params, "environmentId"))


async def gc_environments(runner: Runner, params: Params) -> Any:
    _no_extra(params, "maxIdle")
    max_idle = _opt_int(params, "maxIdle", minimum=0)
    return {"removed": runner.gc_environments(max_idle)}


# ---------------------------------------------------------------------- around them


async def health(runner: Runner, params: Params) -> Any:
    _no_extra(params)
    return runner.health()


async def list_flows(runner: Runner, params: Params) -> Any:
    _no_extra(params)
    return runner.flows()


async def get_flow(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId")
    flow_id = _str(params, "flowId")
    return {**runner.describe_flow(flow_id), "flow": runner.flow_document(flow_id)}


async def inject(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "moduleId", "port", "msgs", "msg")
    flow_id = _str(params, "flowId")
    module_id = _str(params, "moduleId")
    port = _str(params, "port", default="in")
    if ("msgs" in params) == ("msg" in params):
        raise InvalidParams(
            "give either msg (one message) or msgs (an array of messages)", field="msgs"
        )
    if "msg" in params:
        msgs = [params["msg"]]
    else:
        msgs = params["msgs"]
        if not isinstance(msgs, list):
            raise InvalidParams(f"msgs must be an array, got {_json_type(msgs)}", field="msgs")
        if len(msgs) > MAX_INJECT:
            raise InvalidParams(
                f"at most {MAX_INJECT} messages per call, got {len(msgs)}", field="msgs"
            )
    if any(m is None for m in msgs):
        raise InvalidParams("a message cannot be null (null means 'send nothing')", field="msgs")
    await runner.inject(flow_id, module_id, port, msgs)
    return {"accepted": len(msgs)}


async def get_module_state(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "moduleId")
    flow_id, module_id = _str(params, "flowId"), _str(params, "moduleId")
    return {"state": runner.module_state(flow_id, module_id)}


async def get_module_errors(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "moduleId")
    return runner.module_errors(_str(params, "flowId"), _str(params, "moduleId"))


async def get_logs(runner: Runner, params: Params) -> Any:
    _no_extra(params, "flowId", "limit")
    limit = _opt_int(params, "limit", minimum=1, maximum=MAX_LOGS)
    return runner.flow_logs(_str(params, "flowId"), limit)


METHODS: dict[str, Method] = {
    "listRuntimes": list_runtimes,
    "listFlowsForRuntime": list_flows_for_runtime,
    "addOrUpdateFlow": add_or_update_flow,
    "removeFlow": remove_flow,
    "startFlow": start_flow,
    "stopFlow": stop_flow,
    "setBreakPointAtModule": set_breakpoint,
    "removeBreakPointAtModule": remove_breakpoint,
    "singleStepFlow": single_step_flow,
    "applyFlow": apply_flow,
    "pauseFlow": pause_flow,
    "continueFlow": continue_flow,
    "getDebugState": get_debug_state,
    "getQueues": get_queues,
    "editQueuedMessage": edit_queued_message,
    "dropQueuedMessage": drop_queued_message,
    "listEnvironments": list_environments,
    "changeEnvironment": change_environment,
    "rebuildEnvironment": rebuild_environment,
    "gcEnvironments": gc_environments,
    "health": health,
    "listFlows": list_flows,
    "getFlow": get_flow,
    "inject": inject,
    "getModuleState": get_module_state,
    "getModuleErrors": get_module_errors,
    "getLogs": get_logs,
}


async def call(runner: Runner, name: str, params: Params) -> Any:
    return await METHODS[name](runner, params)
