"""The dispatcher's OpenAPI 3.1 document (``GET /openapi.json`` on the dispatcher), built
from its route table (``routes.py``) by the one builder (``api/common/openapi.py``); the
pages' files and the WebSockets, which are not JSON routes, are described here.

``tests/dispatcher/test_openapi.py`` checks that every route of the app is in it (and
nothing else) and runs schemathesis against a live dispatcher.
"""

from __future__ import annotations

from typing import Any

from fifoflow.api.common.models import flow_schemas
from fifoflow.api.common.openapi import build_document, json_content
from fifoflow.api.common.runs import RUN_ROUTES
from fifoflow.api.common.schema import ref
from fifoflow.api.common.ui import UI_PATHS
from fifoflow.flows.limits import MAX_DISPATCHER_BODY
from fifoflow.runtimes.registry import discover

from .routes import ROUTES, client_token_route

__all__ = ["ERRORS", "dispatcher_openapi"]

ERRORS = {
    400: "the body is not JSON, or a parameter is malformed",
    401: "no bearer token, or the wrong one",
    404: "no such flow, runner, runtime or run",
    409: "the flow has no runner right now (pending, or its runner is not connected), "
    "or the runner holding it refused the call; the call does not fit the run's state",
    413: f"the body is larger than {MAX_DISPATCHER_BODY // 1024 // 1024} MiB",
    422: "a field has the wrong type or value; the flow document is invalid",
    504: "the runner holding the flow did not answer within the dispatcher's call timeout "
    "(--call-timeout); the message names it",
}


def _socket(op_id: str, summary: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "security": [],
            "responses": {"101": {"description": "switching protocols"}},
        }
    }


NOT_JSON = {
    "/client/": {
        "get": {
            "operationId": "clientPage",
            "summary": "The client runner's page (public)",
            "security": [],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {}}}}},
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
                "404": json_content(ref("Error"), "no such file"),
            },
        }
    },
    "/client/ws": _socket(
        "clientControl",
        "WebSocket of a page's client runner (?token=&page=): hosts to open, injections, bye",
    ),
    "/client/host": _socket(
        "clientHost",
        "WebSocket of one runtime host in a page (?token=&page=&host=): the frames of "
        "runtimes/PROTOCOL.md",
    ),
    "/ws": {
        "get": {
            "operationId": "websocket",
            "summary": "JSON-RPC 2.0 over WebSocket: the run methods (submitRun, getRun, "
            "listRuns, cancelRun, getRunResult, getRunLogs) and subscribe {kinds} to the "
            "run and run-progress events",
            "description": "Upgrade to a WebSocket with the operator token (Authorization, "
            "or ?access_token=).",
            "responses": {
                "101": {"description": "switching protocols"},
                "400": json_content(ref("Error"), "not a WebSocket upgrade request"),
                "401": json_content(ref("Error"), ERRORS[401]),
            },
        }
    },
    "/link": _socket(
        "runnerLink",
        "WebSocket control link for runners (JSON-RPC 2.0; runners authenticate inside it "
        "with their id and secret, not the operator token)",
    ),
}


def dispatcher_openapi(version: str, runtimes: list[str] | None = None) -> dict[str, Any]:
    known = runtimes if runtimes is not None else sorted(discover(attached=True))
    return build_document(
        title="fifoflow dispatcher API",
        version=version,
        description="Runners, placement of flows across them, and the Runner API for "
        "deployed flows, forwarded to the runners that hold their parts.",
        routes=[*ROUTES, *RUN_ROUTES, client_token_route(None)],
        errors=ERRORS,
        extra_paths={**NOT_JSON, **UI_PATHS},
        tweak=lambda components: flow_schemas(components, known),
    )
