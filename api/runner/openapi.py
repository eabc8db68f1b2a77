"""The OpenAPI 3.1 document of the Runner API, served at ``GET /openapi.json``.

Written by hand next to the routes and kept true by ``tests/api/test_openapi.py``, which
checks that every route of the app is documented (and nothing else is) and runs
schemathesis against a live server. Flow documents are described with the runtimes of
the runner that serves the document, so ``runtime`` is an enum of what it can run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from fifoflow.api.common.http import json_response
from fifoflow.api.runner.methods import MAX_INJECT, MAX_LOGS
from fifoflow.flows.model import ID_PATTERN

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["openapi_blueprint", "openapi_document"]

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_ERRORS = {
    400: "the body is not JSON, or a parameter is malformed",
    401: "no bearer token, or the wrong one",
    404: "no such flow, module, port or runtime",
    409: "the call does not fit the flow's state (or its revision)",
    413: "the body is larger than the configured limit",
    422: "a field has the wrong type or value; the flow document is invalid; "
    "new module code did not load (the running version is unchanged)",
    503: "a runtime could not be started",
}


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    *,
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    ok_status: int = 200,
    extra_ok: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok_status): ok}
    for status, response in (extra_ok or {}).items():
        responses[str(status)] = response
    for status in sorted({401, *errors}):
        responses[str(status)] = _json(_ref("Error"), _ERRORS[status])
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return operation


def openapi_document(runtimes: list[str], version: str) -> dict[str, Any]:
    ident = {"type": "string", "pattern": "^" + ID_PATTERN.pattern.removesuffix(r"\Z") + "$"}
    any_json = {}  # any JSON value
    message = {"not": {"type": "null"}, "description": "any JSON value but null"}
    summary = _json(_ref("FlowSummary"), "the flow's status")
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "code", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "code": {"type": "string", "description": "stable, machine-readable"},
                        "message": {"type": "string"},
                        "field": {"type": "string", "description": "the parameter at fault"},
                        "problems": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["path", "message"],
                                "properties": {
                                    "path": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
        "Runtime": {
            "type": "object",
            "required": ["id", "name", "version"],
            "properties": {k: {"type": "string"} for k in ("id", "name", "version")},
        },
        "Module": {
            "type": "object",
            "required": ["id", "runtime"],
            "additionalProperties": False,
            "properties": {
                "id": ident,
                "runtime": {"type": "string", "enum": runtimes},
                "code": {"type": "string", "description": "the module's source (python, node)"},
                "command": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "exec modules: the argv of the program",
                },
                "config": {"type": "object"},
                "inputs": {"type": "array", "items": ident},
                "outputs": {"type": "array", "items": ident},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "requirements": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "python modules: pip requirement specifiers",
                },
                "packages": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "node modules: npm package specifiers",
                },
                "placement": _ref("Placement"),
            },
        },
        "Placement": {
            "type": "object",
            "additionalProperties": False,
            "description": "what a dispatcher needs of the runner that holds the module",
            "properties": {
                "labels": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "labels the runner must report (fifoflow runner serve --label)",
                },
                "cpus": {"type": "number", "minimum": 0, "description": "CPUs reserved"},
                "memory": {
                    "type": ["integer", "string"],
                    "description": 'memory reserved: bytes, or "512MiB", "2GiB", "500MB"',
                },
            },
        },
        "Flow": {
            "type": "object",
            "required": ["fifoflow", "modules"],
            "additionalProperties": False,
            "description": "A flow document (see flows/examples); module code inline. "
            "The id may be left out: the path gives it.",
            "properties": {
                "fifoflow": {"type": "integer", "const": 1},
                "id": ident,
                "description": {"type": "string"},
                "requirements": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "pip specifiers for every python module",
                },
                "packages": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "npm specifiers for every node module",
                },
                "modules": {"type": "array", "items": _ref("Module")},
                "wires": {
                    "type": "array",
                    "items": {"type": "string", "examples": ["a.out -> b.in"]},
                },
            },
        },
        "FlowSummary": {
            "type": "object",
            "required": ["id", "revision", "status", "pending", "outputs", "errors", "wantRunning"],
            "properties": {
                "id": {"type": "string"},
                "revision": {"type": "integer"},
                "status": {
                    "type": "string",
                    "enum": ["stopped", "starting", "running", "stopping", "failed"],
                },
                "error": {"type": ["string", "null"]},
                "pending": {"type": "integer", "description": "messages queued or in flight"},
                "outputs": {"type": "integer", "description": "messages that reached an exit"},
                "errors": {"type": "integer", "description": "errors raised by modules"},
                "runtimes": {"type": "object", "description": "per runtime: pid, queues, restarts"},
                "wantRunning": {
                    "type": "boolean",
                    "description": "started by the user; a restarted runner starts it again",
                },
                "paused": {"type": "boolean", "description": "held by the debugger"},
            },
        },
        "FlowDetail": {
            "allOf": [
                _ref("FlowSummary"),
                {"type": "object", "required": ["flow"], "properties": {"flow": _ref("Flow")}},
            ]
        },
        "ModuleError": {
            "type": "object",
            "required": ["time", "module", "runtime", "error"],
            "properties": {
                "time": {"type": "number"},
                "module": {"type": "string"},
                "port": {"type": ["string", "null"]},
                "runtime": {"type": "string"},
                "msg": any_json,
                "error": {"type": "object"},
            },
        },
        "LogEntry": {
            "type": "object",
            "required": ["time", "runtime", "level", "stream", "text"],
            "properties": {
                "time": {"type": "number"},
                "runtime": {"type": "string"},
                "module": {"type": ["string", "null"]},
                "level": {"type": "string"},
                "stream": {"type": "string"},
                "text": {"type": "string"},
            },
        },
        "Inject": {
            "type": "object",
            "additionalProperties": False,
            "description": "one message (msg) or several in order (msgs)",
            "properties": {
                "msg": message,
                "msgs": {"type": "array", "items": message, "maxItems": MAX_INJECT},
            },
            "oneOf": [{"required": ["msg"]}, {"required": ["msgs"]}],
        },
        "Breakpoint": {
            "type": "object",
            "required": ["module", "condition", "hits"],
            "properties": {
                "module": {"type": "string"},
                "condition": {"type": ["string", "null"], "examples": ["msg.n == 3"]},
                "hits": {"type": "integer"},
            },
        },
        "DebugState": {
            "type": "object",
            "required": ["paused", "pause", "breakpoints"],
            "properties": {
                "paused": {"type": "boolean"},
                "pause": {
                    "type": ["object", "null"],
                    "description": "why: reason (breakpoint|pause), module, port, msg, time",
                },
                "breakpoints": {"type": "array", "items": _ref("Breakpoint")},
            },
        },
        "Step": {
            "type": "object",
            "description": "per flowModuleId ('<flow>/<module>'): what the tick did",
            "additionalProperties": {
                "type": "object",
                "required": ["inputStates", "outputStates", "errors", "edits"],
                "properties": {
                    "inputStates": {
                        "type": "object",
                        "required": ["consumed", "queued"],
                        "properties": {
                            "consumed": {
                                "type": ["object", "null"],
                                "description": "{port, msg} handled this tick",
                            },
                            "queued": {
                                "type": "object",
                                "additionalProperties": {"type": "array"},
                                "description": "per input port, the messages still waiting",
                            },
                        },
                    },
                    "outputStates": {
                        "type": "object",
                        "additionalProperties": {"type": "array"},
                        "description": "per output port, what the module emitted this tick",
                    },
                    "errors": {"type": "array", "items": _ref("ModuleError")},
                    "edits": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
        "Queues": {
            "type": "object",
            "description": "per module, its waiting messages in order",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "port", "msg"],
                    "properties": {
                        "index": {"type": "integer"},
                        "port": {"type": "string"},
                        "msg": any_json,
                    },
                },
            },
        },
        "Environment": {
            "type": "object",
            "required": ["id", "runtime", "requirements", "packages", "usedBy"],
            "properties": {
                "id": {"type": "string"},
                "runtime": {"type": "string"},
                "requirements": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "array", "items": {"type": "string"}},
                "built": {"type": "number"},
                "lastUsed": {"type": "number"},
                "packages": {"type": "array", "items": {"type": "string"}},
                "usedBy": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime", "flows", "runtimes"],
            "properties": {
                "status": {"type": "string"},
                "version": {"type": "string"},
                "uptime": {"type": "number"},
                "flows": {"type": "object", "additionalProperties": {"type": "integer"}},
                "runtimes": {"type": "array", "items": {"type": "string"}},
                "stateDir": {"type": ["string", "null"]},
            },
        },
    }

    def path_param(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": {"type": "string"},
        }

    parameters = {
        "flowId": path_param("flowId", "the flow's id"),
        "moduleId": path_param("moduleId", "a module's id within the flow"),
        "port": path_param("port", "an input port of the module"),
        "runtimeId": path_param("runtimeId", "a runtime id, as listRuntimes gives it"),
        "revision": {
            "name": "revision",
            "in": "query",
            "required": False,
            "description": "update only if the flow is at this revision (0: must not exist)",
            "schema": {"type": "integer", "minimum": 0},
        },
        "index": {
            "name": "index",
            "in": "path",
            "required": True,
            "description": "position in the module's queue (0: next to be handled)",
            "schema": {"type": "integer", "minimum": 0},
        },
        "environmentId": path_param(
            "environmentId", "an environment id, as listEnvironments gives it"
        ),
        "runtimeQuery": {
            "name": "runtime",
            "in": "query",
            "required": False,
            "description": "only this runtime's environments",
            "schema": {"type": "string", "minLength": 1},
        },
        "maxIdle": {
            "name": "maxIdle",
            "in": "query",
            "required": False,
            "description": "seconds unused before removal (default: the runner's setting)",
            "schema": {"type": "integer", "minimum": 0},
        },
        "limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "the most recent N lines",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOGS},
        },
    }

    flow_ok = _json(
        {
            "type": "object",
            "required": ["created", "flow", "swap"],
            "properties": {
                "created": {"type": "boolean"},
                "flow": _ref("FlowSummary"),
                "swap": {
                    "type": ["object", "null"],
                    "description": "a running flow was hot-swapped: changes, summary, "
                    "rehomed (messages that followed a moved module), dropped (what waited "
                    "for a removed module), pausedMs, durationMs",
                },
            },
        },
        "the flow was updated (a running flow hot-swapped, a stopped one replaced; "
        "module state is kept)",
    )
    created = {**flow_ok, "description": "the flow was added"}
    paths: dict[str, Any] = {
        "/health": {
            "get": _op("health", "The runner's health and version", _json(_ref("Health"), "ok"), ())
        },
        "/runtimes": {
            "get": _op(
                "listRuntimes",
                "Runtimes this runner can run",
                _json({"type": "array", "items": _ref("Runtime")}, "the runtimes"),
                (),
            )
        },
        "/runtimes/{runtimeId}/flows": {
            "get": _op(
                "listFlowsForRuntime",
                "Flows with modules on a runtime",
                _json({"type": "array", "items": {"type": "string"}}, "flow ids"),
                (404,),
                params=("runtimeId",),
            )
        },
        "/environments": {
            "get": _op(
                "listEnvironments",
                "Environments (one per requirement set) and their packages",
                _json({"type": "array", "items": _ref("Environment")}, "the environments"),
                (404, 422),
                params=("runtimeQuery",),
            )
        },
        "/environments/{environmentId}/packages": {
            "post": _op(
                "changeEnvironment",
                "Install and/or remove packages in an environment",
                _json(_ref("Environment"), "the environment after the change"),
                (400, 404, 413, 422),
                params=("environmentId",),
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "install": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "remove": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    },
                },
            )
        },
        "/environments/{environmentId}/rebuild": {
            "post": _op(
                "rebuildEnvironment",
                "Build an environment again from its requirements",
                _json(_ref("Environment"), "rebuilt"),
                (404, 422),
                params=("environmentId",),
            )
        },
        "/environments/gc": {
            "post": _op(
                "gcEnvironments",
                "Remove environments no flow uses, idle longer than maxIdle seconds",
                _json(
                    {
                        "type": "object",
                        "required": ["removed"],
                        "properties": {"removed": {"type": "array", "items": {"type": "string"}}},
                    },
                    "what was removed",
                ),
                (400, 422),
                params=("maxIdle",),
            )
        },
        "/flows": {
            "get": _op(
                "listFlows",
                "Every flow and its status",
                _json({"type": "array", "items": _ref("FlowSummary")}, "the flows"),
                (),
            )
        },
        "/flows/{flowId}": {
            "get": _op(
                "getFlow",
                "A flow's status and document",
                _json(_ref("FlowDetail"), "the flow"),
                (404,),
                params=("flowId",),
            ),
            "put": _op(
                "addOrUpdateFlow",
                "Add a flow, or update it (a running flow is hot-swapped)",
                flow_ok,
                (400, 409, 413, 422),
                params=("flowId", "revision"),
                body=_ref("Flow"),
                extra_ok={201: created},
            ),
            "delete": _op(
                "removeFlow",
                "Stop and remove a flow",
                _json(
                    {
                        "type": "object",
                        "required": ["removed"],
                        "properties": {"removed": {"type": "string"}},
                    },
                    "removed",
                ),
                (404,),
                params=("flowId",),
            ),
        },
        "/flows/{flowId}/start": {
            "post": _op(
                "startFlow", "Start a flow", summary, (404, 409, 422, 503), params=("flowId",)
            )
        },
        "/flows/{flowId}/stop": {
            "post": _op("stopFlow", "Stop a flow gracefully", summary, (404,), params=("flowId",))
        },
        "/flows/{flowId}/step": {
            "post": _op(
                "singleStepFlow",
                "Advance a paused flow one tick: each module with a waiting message handles one",
                _json(_ref("Step"), "what every module consumed, emitted and raised"),
                (404, 409),
                params=("flowId",),
            )
        },
        "/flows/{flowId}/pause": {
            "post": _op(
                "pauseFlow",
                "Pause a running flow (returns once nothing is in flight)",
                _json(_ref("DebugState"), "paused"),
                (404, 409),
                params=("flowId",),
            )
        },
        "/flows/{flowId}/continue": {
            "post": _op(
                "continueFlow",
                "Resume a paused flow until the next breakpoint",
                _json(_ref("DebugState"), "running"),
                (404, 409),
                params=("flowId",),
            )
        },
        "/flows/{flowId}/debug": {
            "get": _op(
                "getDebugState",
                "Whether the flow is paused, why, and its breakpoints",
                _json(_ref("DebugState"), "the debugger's state"),
                (404,),
                params=("flowId",),
            )
        },
        "/flows/{flowId}/queues": {
            "get": _op(
                "getQueues",
                "Every module's waiting messages",
                _json(_ref("Queues"), "the queues"),
                (404,),
                params=("flowId",),
            )
        },
        "/flows/{flowId}/modules/{moduleId}/breakpoint": {
            "put": {
                **_op(
                    "setBreakPointAtModule",
                    "Pause the flow when a message (matching the condition) is about to reach the module",
                    _json(_ref("Breakpoint"), "set"),
                    (400, 404, 409, 422),
                    params=("flowId", "moduleId"),
                ),
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "condition": {
                                        "type": "string",
                                        "description": "msg.path OP json, or port OP json; "
                                        "OP is == != < <= > >=",
                                        "examples": ["msg.n == 3"],
                                    }
                                },
                            }
                        }
                    },
                },
            },
            "delete": _op(
                "removeBreakPointAtModule",
                "Remove a module's breakpoint",
                _json(
                    {
                        "type": "object",
                        "required": ["removed"],
                        "properties": {"removed": {"type": "boolean"}},
                    },
                    "whether there was one",
                ),
                (404, 409),
                params=("flowId", "moduleId"),
            ),
        },
        "/flows/{flowId}/modules/{moduleId}/queue/{index}": {
            "put": _op(
                "editQueuedMessage",
                "Replace a waiting message of a paused flow",
                _json(
                    {"type": "object", "required": ["old"], "properties": {"old": any_json}},
                    "replaced",
                ),
                (400, 404, 409, 422),
                params=("flowId", "moduleId", "index"),
                body={
                    "type": "object",
                    "required": ["msg"],
                    "additionalProperties": False,
                    "properties": {"msg": message},
                },
            ),
            "delete": _op(
                "dropQueuedMessage",
                "Drop a waiting message of a paused flow",
                _json(
                    {"type": "object", "required": ["old"], "properties": {"old": any_json}},
                    "dropped",
                ),
                (404, 409),
                params=("flowId", "moduleId", "index"),
            ),
        },
        "/flows/{flowId}/modules/{moduleId}/inputs/{port}": {
            "post": _op(
                "inject",
                "Send messages to a module's input port (waits while its queue is full)",
                _json(
                    {
                        "type": "object",
                        "required": ["accepted"],
                        "properties": {"accepted": {"type": "integer"}},
                    },
                    "queued, in order",
                ),
                (400, 404, 409, 413, 422),
                params=("flowId", "moduleId", "port"),
                body=_ref("Inject"),
            )
        },
        "/flows/{flowId}/modules/{moduleId}/state": {
            "get": _op(
                "getModuleState",
                "The module's last reported state",
                _json(
                    {"type": "object", "required": ["state"], "properties": {"state": any_json}},
                    "state",
                ),
                (404,),
                params=("flowId", "moduleId"),
            )
        },
        "/flows/{flowId}/modules/{moduleId}/errors": {
            "get": _op(
                "getModuleErrors",
                "The module's recent errors, oldest first",
                _json({"type": "array", "items": _ref("ModuleError")}, "errors"),
                (404,),
                params=("flowId", "moduleId"),
            )
        },
        "/flows/{flowId}/logs": {
            "get": _op(
                "getLogs",
                "Recent log lines of the flow's runtimes, oldest first",
                _json({"type": "array", "items": _ref("LogEntry")}, "log lines"),
                (400, 404, 422),
                params=("flowId", "limit"),
            )
        },
        "/openapi.json": {
            "get": _op("openapi", "This document", _json({"type": "object"}, "OpenAPI 3.1"), ())
        },
        "/ws": {
            "get": {
                "operationId": "websocket",
                "summary": "JSON-RPC 2.0 over WebSocket: every operationId above, and events",
                "description": "Upgrade to a WebSocket. Call methods by operationId with named "
                "params; subscribe {flows, kinds, outputs} streams 'event' notifications. "
                "Browsers may pass ?access_token= instead of the Authorization header.",
                "responses": {
                    "101": {"description": "switching protocols"},
                    "400": {"description": "not a WebSocket upgrade request"},
                    "401": _json(_ref("Error"), _ERRORS[401]),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fifoflow Runner API",
            "version": version,
            "description": "Drive a fifoflow runner: flows, runtimes, messages, state, logs.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": parameters,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_blueprint(runner: Runner) -> Blueprint:
    bp = Blueprint("openapi", __name__)

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(openapi_document(sorted(runner.runtimes), runner.version))

    return bp
