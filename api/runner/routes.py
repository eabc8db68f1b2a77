"""REST routes: one blueprint per resource, each a translation to :mod:`.methods`.

::

    GET    /health                                         health
    GET    /runtimes                                       listRuntimes
    GET    /runtimes/{runtimeId}/flows                     listFlowsForRuntime
    GET    /environments[?runtime=ID]                      listEnvironments
    POST   /environments/{environmentId}/packages          changeEnvironment ({install, remove})
    POST   /environments/{environmentId}/rebuild           rebuildEnvironment
    POST   /environments/gc[?maxIdle=S]                    gcEnvironments
    GET    /flows                                          listFlows
    GET    /flows/{flowId}                                 getFlow
    PUT    /flows/{flowId}[?revision=N]                    addOrUpdateFlow (201 added, 200 updated/swapped)
    DELETE /flows/{flowId}                                 removeFlow
    POST   /flows/{flowId}/start                           startFlow
    POST   /flows/{flowId}/stop                            stopFlow
    POST   /flows/{flowId}/step                            singleStepFlow
    PUT    /flows/{flowId}/modules/{moduleId}/breakpoint   setBreakPointAtModule ({condition}?)
    DELETE /flows/{flowId}/modules/{moduleId}/breakpoint   removeBreakPointAtModule
    GET    /flows/{flowId}/debug                           getDebugState
    POST   /flows/{flowId}/pause                           pauseFlow
    POST   /flows/{flowId}/continue                        continueFlow
    GET    /flows/{flowId}/queues                          getQueues
    PUT    /flows/{flowId}/modules/{moduleId}/queue/{i}    editQueuedMessage
    DELETE /flows/{flowId}/modules/{moduleId}/queue/{i}    dropQueuedMessage
    POST   /flows/{flowId}/modules/{moduleId}/inputs/{port} inject
    GET    /flows/{flowId}/modules/{moduleId}/state        getModuleState
    GET    /flows/{flowId}/modules/{moduleId}/errors       getModuleErrors
    GET    /flows/{flowId}/logs[?limit=N]                  getLogs
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from fifoflow.api.common.errors import InvalidParams
from fifoflow.api.common.http import json_response, read_json
from fifoflow.api.runner.methods import call

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["flows_blueprint", "runtimes_blueprint"]


def _query_int(name: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidParams(f"{name} must be an integer, got {text!r}", field=name) from None


async def _json_object(what: str) -> dict[str, Any]:
    body = await read_json()
    if not isinstance(body, dict):
        raise InvalidParams(f"the body must be {what} (a JSON object)", field="body")
    return body


def runtimes_blueprint(runner: Runner) -> Blueprint:
    bp = Blueprint("runtimes", __name__)

    @bp.get("/health")
    async def health() -> Response:
        return json_response(await call(runner, "health", {}))

    @bp.get("/runtimes")
    async def list_runtimes() -> Response:
        return json_response(await call(runner, "listRuntimes", {}))

    @bp.get("/environments")
    async def list_environments() -> Response:
        params: dict[str, Any] = {}
        if "runtime" in request.args:
            params["runtimeId"] = request.args["runtime"]
        return json_response(await call(runner, "listEnvironments", params))

    @bp.post("/environments/<environmentId>/packages")
    async def change_environment(environmentId: str) -> Response:
        body = await _json_object('{"install": [...], "remove": [...]}')
        extra = sorted(set(body) - {"install", "remove"})
        if extra:
            raise InvalidParams(
                f"unknown field(s): {', '.join(extra)} (allowed: install, remove)", field=extra[0]
            )
        params = {**body, "environmentId": environmentId}
        return json_response(await call(runner, "changeEnvironment", params))

    @bp.post("/environments/<environmentId>/rebuild")
    async def rebuild_environment(environmentId: str) -> Response:
        return json_response(
            await call(runner, "rebuildEnvironment", {"environmentId": environmentId})
        )

    @bp.post("/environments/gc")
    async def gc_environments() -> Response:
        params: dict[str, Any] = {}
        max_idle = _query_int("maxIdle")
        if max_idle is not None:
            params["maxIdle"] = max_idle
        return json_response(await call(runner, "gcEnvironments", params))

    @bp.get("/runtimes/<runtimeId>/flows")
    async def list_flows_for_runtime(runtimeId: str) -> Response:
        return json_response(await call(runner, "listFlowsForRuntime", {"runtimeId": runtimeId}))

    return bp


def flows_blueprint(runner: Runner) -> Blueprint:
    bp = Blueprint("flows", __name__)

    @bp.get("/flows")
    async def list_flows() -> Response:
        return json_response(await call(runner, "listFlows", {}))

    @bp.get("/flows/<flowId>")
    async def get_flow(flowId: str) -> Response:
        return json_response(await call(runner, "getFlow", {"flowId": flowId}))

    @bp.put("/flows/<flowId>")
    async def put_flow(flowId: str) -> Response:
        revision = _query_int("revision")
        document = await _json_object("a flow document")
        document.setdefault("id", flowId)
        if document["id"] != flowId:
            raise InvalidParams(
                f"the flow's id {document['id']!r} is not the id in the path {flowId!r}",
                field="flow.id",
            )
        params: dict[str, Any] = {"flow": document}
        if revision is not None:
            params["revision"] = revision
        result = await call(runner, "applyFlow", params)
        body = {
            "created": result["created"],
            "flow": runner.describe_flow(flowId),
            "swap": result["swap"],
        }
        return json_response(body, 201 if result["created"] else 200)

    @bp.delete("/flows/<flowId>")
    async def delete_flow(flowId: str) -> Response:
        await call(runner, "removeFlow", {"flowId": flowId})
        return json_response({"removed": flowId})

    @bp.post("/flows/<flowId>/start")
    async def start_flow(flowId: str) -> Response:
        return json_response(await call(runner, "startFlow", {"flowId": flowId}))

    @bp.post("/flows/<flowId>/stop")
    async def stop_flow(flowId: str) -> Response:
        return json_response(await call(runner, "stopFlow", {"flowId": flowId}))

    @bp.post("/flows/<flowId>/step")
    async def step_flow(flowId: str) -> Response:
        return json_response(await call(runner, "singleStepFlow", {"flowId": flowId}))

    @bp.put("/flows/<flowId>/modules/<moduleId>/breakpoint")
    async def set_breakpoint(flowId: str, moduleId: str) -> Response:
        params: dict[str, Any] = {"flowModuleId": f"{flowId}/{moduleId}"}
        if await request.get_data(cache=True):
            body = await _json_object('{"condition": "msg.n == 3"} or no body')
            extra = sorted(set(body) - {"condition"})
            if extra:
                raise InvalidParams(
                    f"unknown field(s): {', '.join(extra)} (allowed: condition)", field=extra[0]
                )
            if "condition" in body:
                params["condition"] = body["condition"]
        return json_response(await call(runner, "setBreakPointAtModule", params))

    @bp.delete("/flows/<flowId>/modules/<moduleId>/breakpoint")
    async def remove_breakpoint(flowId: str, moduleId: str) -> Response:
        params = {"flowModuleId": f"{flowId}/{moduleId}"}
        return json_response({"removed": await call(runner, "removeBreakPointAtModule", params)})

    @bp.get("/flows/<flowId>/debug")
    async def debug_state(flowId: str) -> Response:
        return json_response(await call(runner, "getDebugState", {"flowId": flowId}))

    @bp.post("/flows/<flowId>/pause")
    async def pause_flow(flowId: str) -> Response:
        return json_response(await call(runner, "pauseFlow", {"flowId": flowId}))

    @bp.post("/flows/<flowId>/continue")
    async def continue_flow(flowId: str) -> Response:
        return json_response(await call(runner, "continueFlow", {"flowId": flowId}))

    @bp.get("/flows/<flowId>/queues")
    async def queues(flowId: str) -> Response:
        return json_response(await call(runner, "getQueues", {"flowId": flowId}))

    @bp.put("/flows/<flowId>/modules/<moduleId>/queue/<int:index>")
    async def edit_queued(flowId: str, moduleId: str, index: int) -> Response:
        body = await _json_object('{"msg": ...}')
        extra = sorted(set(body) - {"msg"})
        if extra:
            raise InvalidParams(
                f"unknown field(s): {', '.join(extra)} (allowed: msg)", field=extra[0]
            )
        params = {"flowId": flowId, "moduleId": moduleId, "index": index, "msg": body.get("msg")}
        return json_response(await call(runner, "editQueuedMessage", params))

    @bp.delete("/flows/<flowId>/modules/<moduleId>/queue/<int:index>")
    async def drop_queued(flowId: str, moduleId: str, index: int) -> Response:
        params = {"flowId": flowId, "moduleId": moduleId, "index": index}
        return json_response(await call(runner, "dropQueuedMessage", params))

    @bp.post("/flows/<flowId>/modules/<moduleId>/inputs/<port>")
    async def inject(flowId: str, moduleId: str, port: str) -> Response:
        body = await _json_object('{"msg": ...} or {"msgs": [...]}')
        for reserved in ("flowId", "moduleId", "port"):
            if reserved in body:
                raise InvalidParams(f"{reserved} belongs in the path, not the body", field=reserved)
        params = {**body, "flowId": flowId, "moduleId": moduleId, "port": port}
        return json_response(await call(runner, "inject", params))

    @bp.get("/flows/<flowId>/modules/<moduleId>/state")
    async def module_state(flowId: str, moduleId: str) -> Response:
        params = {"flowId": flowId, "moduleId": moduleId}
        return json_response(await call(runner, "getModuleState", params))

    @bp.get("/flows/<flowId>/modules/<moduleId>/errors")
    async def module_errors(flowId: str, moduleId: str) -> Response:
        params = {"flowId": flowId, "moduleId": moduleId}
        return json_response(await call(runner, "getModuleErrors", params))

    @bp.get("/flows/<flowId>/logs")
    async def logs(flowId: str) -> Response:
        params: dict[str, Any] = {"flowId": flowId}
        limit = _query_int("limit")
        if limit is not None:
            params["limit"] = limit
        return json_response(await call(runner, "getLogs", params))

    return bp
