"""The dispatcher's OpenAPI 3.1 document (``GET /openapi.json`` on the dispatcher).

Flow documents, errors and log lines share their schemas with the runner's document
(:func:`fifoflow.api.runner.openapi.openapi_document`); a test checks that every route of
the dispatcher app is in here and nothing else, and schemathesis runs it against a
live dispatcher.
"""

from __future__ import annotations

from typing import Any

from fifoflow.api.runner.openapi import JSON, _json, _ref, openapi_document

__all__ = ["dispatcher_openapi"]

_ERRORS = {
    400: "the body is not JSON, or a parameter is malformed",
    401: "no bearer token, or the wrong one",
    404: "no such flow, runner or runtime",
    409: "the flow has no runner right now (pending, or its runner is not connected), "
    "or the runner holding it refused the call",
    413: "the body is larger than 1 MiB",
    422: "a field has the wrong type or value; the flow document is invalid",
}


def _op(
    op_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    *,
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    ok_status: int = 200,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(ok_status): ok}
    for status in sorted({401, *errors}):
        responses[str(status)] = _json(_ref("Error"), _ERRORS[status])
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        operation["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {JSON: {"schema": body}},
        }
    return operation


def dispatcher_openapi(runtimes: list[str], version: str) -> dict[str, Any]:
    shared = openapi_document(runtimes, version)["components"]["schemas"]
    any_object = {"type": "object"}
    schemas: dict[str, Any] = {
        name: shared[name] for name in ("Error", "Flow", "Module", "Placement", "LogEntry")
    }
    schemas |= {
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime", "runners", "heartbeat", "ttl"],
            "properties": {
                "status": {"type": "string", "const": "ok"},
                "version": {"type": "string"},
                "uptime": {"type": "number"},
                "runners": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "how many runners in each status",
                },
                "heartbeat": {"type": "number", "description": "seconds between heartbeats"},
                "ttl": {"type": "number", "description": "silence after which a runner is lost"},
            },
        },
        "Token": {
            "type": "object",
            "required": ["token", "expires"],
            "properties": {
                "token": {"type": "string", "description": "works once"},
                "expires": {"type": "number", "description": "unix time"},
            },
        },
        "Runner": {
            "type": "object",
            "required": ["id", "name", "registered", "status", "lastSeen", "hardware"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "registered": {"type": "number"},
                "status": {
                    "type": "string",
                    "enum": [
                        "registered",
                        "starting",
                        "ready",
                        "lost",
                        "signed-off",
                        "draining",
                        "drained",
                    ],
                },
                "lastSeen": {"type": ["number", "null"]},
                "hardware": {
                    "type": "object",
                    "description": "hostname, os, arch, cpus, memoryGiB, diskGiB, runtimes, "
                    "labels, capacity {cpus, memory (bytes)}",
                },
            },
        },
        "Event": {
            "type": "object",
            "required": ["id", "time", "runner", "kind"],
            "description": "kind: token, registered, connected, hardware, ready, lost, back, "
            "signed-off, deployed, placed, pending, refused, displaced, paused, draining, "
            "drained, flow-removed, removed-stale-flow; other fields depend on the kind",
            "properties": {
                "id": {"type": "integer"},
                "time": {"type": "number"},
                "runner": {"type": ["string", "null"]},
                "kind": {"type": "string"},
            },
        },
        "FlowPlacement": {
            "type": "object",
            "required": ["id", "runner", "status", "reason", "modules", "placement"],
            "properties": {
                "id": {"type": "string"},
                "runner": {
                    "type": ["string", "null"],
                    "description": "the runner holding all of it (null: pending, or spanning)",
                },
                "status": {"type": "string", "enum": ["pending", "placed", "updating", "moving"]},
                "reason": {"type": ["string", "null"], "description": "why it is pending"},
                "modules": {"type": "array", "items": {"type": "string"}},
                "placement": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "module id -> runner id",
                },
                "snapshot": {"type": "boolean", "description": "module states are held"},
                "updated": {"type": "number"},
            },
        },
        "FlowRecord": {
            "allOf": [
                _ref("FlowPlacement"),
                {
                    "type": "object",
                    "required": ["states", "flow"],
                    "properties": {
                        "states": {
                            "type": "object",
                            "description": "the last module states the runners reported",
                        },
                        "flow": _ref("Flow"),
                    },
                },
            ]
        },
        "RuntimeRunners": {
            "type": "object",
            "required": ["id", "runners"],
            "properties": {
                "id": {"type": "string"},
                "runners": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "ready runners that have it",
                },
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
        "flowId": path_param("flowId", "a deployed flow's id"),
        "moduleId": path_param("moduleId", "a module's id within the flow"),
        "port": path_param("port", "an input port of the module"),
        "runnerId": path_param("runnerId", "a runner's id"),
        "runtimeId": path_param("runtimeId", "a runtime id"),
        "since": {
            "name": "since",
            "in": "query",
            "required": False,
            "description": "only events after this id",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1},
        },
    }
    flow_404 = (404, 409)
    placed = _json(_ref("FlowPlacement"), "where the flow runs now, or why it waits")
    paths: dict[str, Any] = {
        "/health": {"get": _op("health", "The dispatcher's health", _json(_ref("Health"), "ok"))},
        "/tokens": {
            "post": _op(
                "issueToken",
                "A one-time registration token for a new runner",
                _json(_ref("Token"), "the token"),
                (400, 422),
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"ttl": {"type": "number", "exclusiveMinimum": 0}},
                },
                body_required=False,
                ok_status=201,
            )
        },
        "/runners": {
            "get": _op(
                "listRunners",
                "Every runner, its status and hardware",
                _json({"type": "array", "items": _ref("Runner")}, "the runners"),
            )
        },
        "/runners/{runnerId}/drain": {
            "post": _op(
                "drainRunner",
                "Move every flow off a runner (state and waiting messages too)",
                _json(
                    {
                        "type": "object",
                        "required": ["moved"],
                        "properties": {"moved": {"type": "array", "items": {"type": "string"}}},
                    },
                    "the flows moved",
                ),
                (404,),
                params=("runnerId",),
            )
        },
        "/runners/{runnerId}/logs": {
            "get": _op(
                "getRunnerLogs",
                "A runner's log lines (every flow on it)",
                _json({"type": "array", "items": any_object}, "log lines, oldest first"),
                (404, 409),
                params=("runnerId",),
            )
        },
        "/events": {
            "get": _op(
                "listEvents",
                "What happened, oldest first",
                _json({"type": "array", "items": _ref("Event")}, "events"),
                (422,),
                params=("since",),
            )
        },
        "/runtimes": {
            "get": _op(
                "listRuntimes",
                "Every runtime some runner has, and the ready runners that have it",
                _json({"type": "array", "items": _ref("RuntimeRunners")}, "the runtimes"),
            )
        },
        "/runtimes/{runtimeId}/flows": {
            "get": _op(
                "listFlowsForRuntime",
                "Deployed flows with a module in that runtime",
                _json({"type": "array", "items": {"type": "string"}}, "flow ids"),
                (404,),
                params=("runtimeId",),
            )
        },
        "/flows": {
            "get": _op(
                "listFlows",
                "Deployed flows and where they run",
                _json({"type": "array", "items": _ref("FlowPlacement")}, "the flows"),
            ),
            "post": _op(
                "deployFlow",
                "Deploy a flow (or update it: each part is hot-swapped where it runs)",
                placed,
                (400, 413, 422),
                body=_ref("Flow"),
                ok_status=201,
            ),
        },
        "/flows/{flowId}": {
            "get": _op(
                "getFlow",
                "A flow: placement, last states, document",
                _json(_ref("FlowRecord"), "the flow"),
                (404,),
                params=("flowId",),
            ),
            "put": _op(
                "addOrUpdateFlow",
                "Deploy or update the flow with this id",
                placed,
                (400, 413, 422),
                params=("flowId",),
                body=_ref("Flow"),
            ),
            "delete": _op(
                "removeFlow",
                "Remove a flow from its runners and the dispatcher",
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
                "startFlow",
                "Start every part",
                _json(any_object, "the flow as a runner describes it"),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/stop": {
            "post": _op(
                "stopFlow",
                "Stop every part (state kept)",
                _json(any_object, "the flow as a runner describes it"),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/modules/{moduleId}/inputs/{port}": {
            "post": _op(
                "inject",
                "Send messages into a module, on whichever runner holds it",
                _json(
                    {
                        "type": "object",
                        "required": ["accepted"],
                        "properties": {"accepted": {"type": "integer"}},
                    },
                    "how many were queued",
                ),
                (400, 404, 409, 413, 422),
                params=("flowId", "moduleId", "port"),
                body={
                    "type": "object",
                    "required": ["msgs"],
                    "properties": {"msgs": {"type": "array", "items": {"not": {"type": "null"}}}},
                },
            )
        },
        "/flows/{flowId}/modules/{moduleId}/state": {
            "get": _op(
                "getModuleState",
                "A module's state, from its runner",
                _json(
                    {"type": "object", "required": ["state"], "properties": {"state": {}}},
                    "the state",
                ),
                flow_404,
                params=("flowId", "moduleId"),
            )
        },
        "/flows/{flowId}/modules/{moduleId}/breakpoint": {
            "put": _op(
                "setBreakPointAtModule",
                "A breakpoint, set on the module's runner; a hit pauses every part",
                _json(any_object, "the breakpoint"),
                (400, 404, 409, 422),
                params=("flowId", "moduleId"),
                body={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"condition": {"type": ["string", "null"]}},
                },
                body_required=False,
            ),
            "delete": _op(
                "removeBreakPointAtModule",
                "Remove it",
                _json(
                    {
                        "type": "object",
                        "required": ["removed"],
                        "properties": {"removed": {"type": "boolean"}},
                    },
                    "whether there was one",
                ),
                flow_404,
                params=("flowId", "moduleId"),
            ),
        },
        "/flows/{flowId}/pause": {
            "post": _op(
                "pauseFlow",
                "Pause every part",
                _json(any_object, "a part's debugger state"),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/continue": {
            "post": _op(
                "continueFlow",
                "Resume every part until the next breakpoint",
                _json(any_object, "a part's debugger state"),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/step": {
            "post": _op(
                "singleStepFlow",
                "One tick on every part; the answers merged by flowModuleId",
                _json(
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "inputStates": any_object,
                                "outputStates": any_object,
                                "errors": {"type": "array"},
                            },
                        },
                    },
                    "per flowModuleId: inputStates, outputStates, errors",
                ),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/debug": {
            "get": _op(
                "getDebugState",
                "Every part's debugger state",
                _json(
                    {"type": "object", "additionalProperties": any_object},
                    "runner id -> its part's debugger state",
                ),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/queues": {
            "get": _op(
                "getQueues",
                "What waits at each module, across runners",
                _json(
                    {"type": "object", "additionalProperties": {"type": "array"}},
                    "module id -> queued messages",
                ),
                flow_404,
                params=("flowId",),
            )
        },
        "/flows/{flowId}/logs": {
            "get": _op(
                "getFlowLogs",
                "Log lines from every runner holding a part of the flow",
                _json({"type": "array", "items": _ref("LogEntry")}, "oldest first"),
                (404,),
                params=("flowId",),
            )
        },
        "/backend": {
            "get": _op(
                "getBackend",
                "The container backend: image, pull policy, containers and their runners",
                _json(any_object, '{"backend": null} when the dispatcher has none'),
            )
        },
        "/backend/image": {
            "post": _op(
                "updateImage",
                "Move every runner to a new image: new containers, flows moved with their "
                "state and waiting messages, old containers stopped",
                _json(
                    {
                        "type": "object",
                        "required": ["image", "moved", "seconds"],
                        "properties": {
                            "image": {"type": "string"},
                            "moved": {"type": "array", "items": {"type": "string"}},
                            "seconds": {"type": "number"},
                            "containers": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "the update is done",
                ),
                (400, 409, 413, 422),
                body={
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": False,
                    "properties": {
                        "image": {"type": "string", "minLength": 1},
                        "pull": {"type": "string", "enum": ["always", "if-not-present", "never"]},
                    },
                },
            )
        },
        "/client/": {
            "get": {
                "operationId": "clientPage",
                "summary": "The client runner's page (public)",
                "security": [],
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}
                },
            }
        },
        "/client/{name}": {
            "get": {
                "operationId": "clientFile",
                "summary": "A file of the client runner: index.html, fifoflow.js, core.mjs (public)",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {"text/javascript": {"schema": {}}, "text/html": {"schema": {}}},
                    },
                    "404": _json(_ref("Error"), "no such file"),
                },
            }
        },
        "/client-token": {
            "get": _op(
                "getClientToken",
                "The token web pages' client runners connect with (not the operator token)",
                _json(
                    {
                        "type": "object",
                        "required": ["token"],
                        "properties": {"token": {"type": "string"}},
                    },
                    "the client token",
                ),
            )
        },
        "/client/ws": {
            "get": {
                "operationId": "clientControl",
                "summary": "WebSocket of a page's client runner (?token=&page=): hosts to "
                "open, injections, bye",
                "security": [],
                "responses": {"101": {"description": "switching protocols"}},
            }
        },
        "/client/host": {
            "get": {
                "operationId": "clientHost",
                "summary": "WebSocket of one runtime host in a page (?token=&page=&host=): "
                "the frames of runtimes/PROTOCOL.md",
                "security": [],
                "responses": {"101": {"description": "switching protocols"}},
            }
        },
        "/openapi.json": {"get": _op("openapi", "This document", _json(any_object, "OpenAPI 3.1"))},
        "/link": {
            "get": {
                "operationId": "runnerLink",
                "summary": "WebSocket control link for runners (JSON-RPC 2.0; runners "
                "authenticate inside it with their id and secret, not the operator token)",
                "security": [],
                "responses": {"101": {"description": "switching protocols"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fifoflow dispatcher API",
            "version": version,
            "description": "Runners, placement of flows across them, and the Runner API "
            "for deployed flows, forwarded to the runners that hold their parts.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "parameters": parameters,
        },
    }
