"""The Runner API's OpenAPI 3.1 document (``GET /openapi.json``), built from the route
table (``routes.py``) and its models by the one builder (``api/common/openapi.py``).

Flow documents are described with the runtimes of the runner that serves the document,
so ``runtime`` is an enum of what it can run. ``tests/api/test_openapi.py`` checks that
every route is documented and runs schemathesis against a live runner.
"""

from __future__ import annotations

from typing import Any

from fifoflow.api.common.models import flow_schemas
from fifoflow.api.common.openapi import build_document, json_content
from fifoflow.api.common.runs import RUN_ROUTES
from fifoflow.api.common.schema import ref
from fifoflow.api.common.ui import UI_PATHS

from .routes import ROUTES

__all__ = ["ERRORS", "runner_openapi"]

ERRORS = {
    400: "the body is not JSON, or a parameter is malformed",
    401: "no bearer token, or the wrong one",
    404: "no such flow, module, port, runtime or run",
    409: "the call does not fit the flow's or the run's state (or its revision); a run "
    "refused; runs asked of a runner linked to a dispatcher (runs_at_dispatcher)",
    413: "the body is larger than the configured limit",
    422: "a field has the wrong type or value; the flow document is invalid; "
    "new module code did not load (the running version is unchanged)",
    503: "a runtime could not be started",
    507: "the runner's state dir could not be written (storage_full: the disk is full; "
    "storage_error: read-only, not a folder, no permission); nothing was changed",
}

WEBSOCKET = {
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
                "401": json_content(ref("Error"), ERRORS[401]),
            },
        }
    }
}


def runner_openapi(runtimes: list[str], version: str) -> dict[str, Any]:
    return build_document(
        title="fifoflow Runner API",
        version=version,
        description="Drive a fifoflow runner: flows, runtimes, messages, state, logs, runs.",
        routes=[*ROUTES, *RUN_ROUTES],
        errors=ERRORS,
        extra_paths={**WEBSOCKET, **UI_PATHS},
        tweak=lambda components: flow_schemas(components, runtimes),
    )
