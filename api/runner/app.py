"""The Runner API app: a quart-trio app over one :class:`~fifoflow.runner.Runner`.

``create_app(runner, settings)`` builds the app; it holds no state of its own. The REST
routes come from the route table (``routes.py``), ``/ws`` is JSON-RPC over WebSocket
(``ws.py``). Every route and the WebSocket need the bearer token; every error is JSON
(``api/common/errors.py``), including quart's own 404/405/413.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from quart import Blueprint, Response, request, websocket

from fifoflow.api.common.auth import check_token
from fifoflow.api.common.errors import ApiError
from fifoflow.api.common.http import bearer, create_json_app, json_response, unauthorized
from fifoflow.api.common.routes import add_routes
from fifoflow.api.common.runs import RUN_ROUTES, RunnerRuns
from fifoflow.api.common.ui import is_public, ui_blueprint
from fifoflow.flows.limits import MAX_BODY

from .routes import ROUTES
from .ws import ws_blueprint

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from fifoflow.runner import Runner

__all__ = ["ApiSettings", "create_app"]

TOKEN_WHERE = "the runner's token file"


@attrs.frozen
class ApiSettings:
    token: str
    #: largest request body (and WebSocket message) accepted, in bytes
    max_body: int = MAX_BODY
    #: events buffered per WebSocket subscription before the subscriber misses some
    subscription_buffer: int = 10_000
    #: the dispatcher this runner is linked to (its /runs answer 409 naming it)
    dispatcher: str | None = None


def create_app(runner: Runner, settings: ApiSettings) -> QuartTrio:
    app = create_json_app(
        __name__,
        token=settings.token,
        token_where=TOKEN_WHERE,
        max_body=settings.max_body,
        public=is_public,  # the page's files; the page sends the token to the API
    )

    @app.before_websocket
    async def _auth_ws() -> Response | None:
        provided = bearer(websocket.headers.get("Authorization"))
        if provided is None:
            provided = websocket.args.get("access_token")
        if not check_token(provided, settings.token):
            return unauthorized(provided, TOKEN_WHERE)
        return None

    @app.errorhandler(400)
    async def _not_upgraded(exc: Exception) -> Response:
        message = getattr(exc, "description", None) or "bad request"
        if request.path == "/ws":
            message = "GET /ws is a WebSocket: send an Upgrade request (JSON-RPC 2.0 inside)"
        error = ApiError(message, status=400, code="http_error")
        return json_response(error.body(), 400)

    bp = Blueprint("runner", __name__)
    add_routes(bp, runner, ROUTES)
    add_routes(bp, RunnerRuns(runner, settings.dispatcher), RUN_ROUTES)
    app.register_blueprint(bp)
    app.register_blueprint(ws_blueprint(runner, settings))
    app.register_blueprint(ui_blueprint())
    return app
