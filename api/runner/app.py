"""The Runner API app: a quart-trio app over one :class:`~fifoflow.runner.Runner`.

``create_app(runner, settings)`` builds the app; it holds no state of its own (the
blueprints close over the runner). Every route and the WebSocket need the bearer token;
every error is JSON (see :mod:`.errors`), including quart's own 404/405/413.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from fifoflow.api.common.auth import check_token
from fifoflow.api.common.errors import ApiError, Unauthorized, error_body
from fifoflow.api.common.http import json_response, refuse_unknown_query
from fifoflow.api.runner.openapi import openapi_blueprint
from fifoflow.api.runner.routes import flows_blueprint, runtimes_blueprint
from fifoflow.api.runner.ws import ws_blueprint

if TYPE_CHECKING:
    from fifoflow.runner import Runner

__all__ = ["ApiSettings", "create_app"]

log = logging.getLogger("fifoflow.api")

MiB = 1024 * 1024

#: the query parameters each route takes (any other is a 422, not silently ignored)
QUERY_PARAMETERS: dict[str, set[str]] = {
    "flows.put_flow": {"revision"},
    "flows.logs": {"limit"},
    "runtimes.list_environments": {"runtime"},
    "runtimes.gc_environments": {"maxIdle"},
}


@attrs.frozen
class ApiSettings:
    token: str
    #: largest request body (and WebSocket message) accepted, in bytes
    max_body: int = 16 * MiB
    #: events buffered per WebSocket subscription before the subscriber misses some
    subscription_buffer: int = 10_000


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _unauthorized(provided: str | None) -> Response:
    reason = "missing bearer token" if provided is None else "wrong token"
    error = Unauthorized(
        f"{reason}: send 'Authorization: Bearer <token>' (the token is in the runner's token file)",
        field="Authorization",
    )
    return json_response(error.body(), 401, {"WWW-Authenticate": 'Bearer realm="fifoflow"'})


def create_app(runner: Runner, settings: ApiSettings) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.before_request
    async def _auth_http() -> Response | None:
        provided = _bearer(request.headers.get("Authorization"))
        if not check_token(provided, settings.token):
            return _unauthorized(provided)
        return refuse_unknown_query(QUERY_PARAMETERS.get(request.endpoint or "", set()))

    @app.before_websocket
    async def _auth_ws() -> Response | None:
        provided = _bearer(websocket.headers.get("Authorization"))
        if provided is None:
            provided = websocket.args.get("access_token")
        if not check_token(provided, settings.token):
            return _unauthorized(provided)
        return None

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            status, "http_error"
        )
        message = exc.description or exc.name
        if status == 413:
            message = f"the request body is larger than the limit of {settings.max_body} bytes"
        field = "body" if status == 413 else None
        if status == 400 and request.path == "/ws":
            message = "GET /ws is a WebSocket: send an Upgrade request (JSON-RPC 2.0 inside)"
        error = ApiError(message, status=status, code=code, field=field)
        return json_response(error.body(), status)

    @app.errorhandler(Exception)
    async def _error(exc: Exception) -> Response:
        try:
            body, status = error_body(exc)
        except TypeError:
            log.exception("unexpected error in %s %s", request.method, request.path)
            error = ApiError(
                f"internal error: {type(exc).__name__}: {exc}", status=500, code="internal"
            )
            body, status = error.body(), 500
        return json_response(body, status)

    app.register_blueprint(runtimes_blueprint(runner))
    app.register_blueprint(flows_blueprint(runner))
    app.register_blueprint(ws_blueprint(runner, settings))
    app.register_blueprint(openapi_blueprint(runner))
    return app
