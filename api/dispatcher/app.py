"""The dispatcher's API: operators over HTTP (bearer token), runners over ``/link``,
web pages over ``/client/``. The operators' routes are a table (``routes.py``).

Operators (``Authorization: Bearer <token from the dispatcher's state dir>``)::

    GET  /health                 status, version, runners by status
    POST /tokens  {ttl?}         a one-time registration token for a new runner
    GET  /runners                every runner: status, last heartbeat, hardware
    POST /runners/{id}/drain     move its flows elsewhere (state and queued messages too)
    GET  /events[?since=ID]      what happened (registered, connected, hardware, ready,
                                 lost, back, signed-off, placed, pending, displaced), oldest first
    GET  /runtimes               every runtime some runner has, and which ready runners
    GET  /runtimes/{id}/flows    deployed flows with a module in that runtime
    POST /flows {flow}           deploy: place the flow on a runner (201)
    PUT  /flows/{id} {flow}      deploy or update (each part hot-swapped where it runs)
    GET  /flows[/{id}]           where each flow runs (status placed|pending, reason)
    DELETE /flows/{id}
    POST /flows/{id}/start|stop, POST /flows/{id}/modules/{m}/inputs/{port} {msgs},
    GET  /flows/{id}/modules/{m}/state      forwarded to the runner that holds the flow
    PUT|DELETE /flows/{id}/modules/{m}/breakpoint, POST /flows/{id}/pause|continue|step:
                                 the debugger across runners (a breakpoint hit on one
                                 runner pauses the flow's parts on the others)
    GET  /flows/{id}/debug|queues  every part's debugger state (per runner), queues (per module)
    GET  /flows/{id}/logs, GET /runners/{id}/logs
    GET  /backend                the container backend: image, pull policy, containers
    POST /backend/image {image, pull?}  move every runner to a new image (flows move
                                 with their state; no message lost)
    GET  /client/, /client/{name}  the client runner's files (no token: code for pages)
    POST /runs, GET /runs[/{id}[/result|outputs|logs]], POST /runs/{id}/cancel:
                                 runs (api/common/runs.py), placed on the linked runners
    GET  /ws                     JSON-RPC 2.0 over WebSocket: the run methods (submitRun,
                                 getRun, listRuns, cancelRun, getRunResult, getRunLogs) and
                                 subscribe {kinds: [run, run-progress]} to the run events
    GET  /openapi.json

Runners: ``GET /link`` is a WebSocket carrying JSON-RPC 2.0 calls from the runner:
``register {token, name}`` -> ``{runnerId, secret}``; ``hello {runnerId, secret,
version}`` -> ``{heartbeat, ttl}`` (every other call needs it first, on that
connection); ``hardware {full} | {changes}``; ``ready``; ``heartbeat``; ``signoff``.
A runner authenticates with its own credentials there, not the operator token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, websocket

from fifoflow.api.common.auth import check_token
from fifoflow.api.common.http import bearer, create_json_app, unauthorized
from fifoflow.api.common.routes import add_routes
from fifoflow.api.common.runs import RUN_METHODS, RUN_ROUTES, DispatcherRuns
from fifoflow.api.common.ui import is_public, ui_blueprint
from fifoflow.api.runner.ws import RpcConnection
from fifoflow.dispatcher.link import RunnerLink
from fifoflow.flows.limits import MAX_DISPATCHER_BODY

from . import pages
from .routes import ROUTES, client_token_route

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from fifoflow.dispatcher.service import Dispatcher

__all__ = ["create_dispatcher_app"]

#: events buffered per WebSocket subscription before the subscriber misses some
SUBSCRIPTION_BUFFER = 10_000


def create_dispatcher_app(
    dispatcher: Dispatcher, token: str, client_token: str | None = None
) -> QuartTrio:
    app = create_json_app(
        __name__,
        token=token,
        token_where="the dispatcher's state dir",
        max_body=MAX_DISPATCHER_BODY,
        # the client runner's code and the page's files are public; the client runner's
        # sockets need the client token, the page sends the operator token to the API
        public=lambda endpoint: endpoint == "dispatcher.client_file" or is_public(endpoint),
    )
    bp = Blueprint("dispatcher", __name__)
    add_routes(bp, dispatcher, [*ROUTES, client_token_route(client_token)])
    runs = DispatcherRuns(dispatcher)
    add_routes(bp, runs, RUN_ROUTES)

    @bp.websocket("/ws")
    async def ws() -> Response | None:
        provided = bearer(websocket.headers.get("Authorization"))
        if provided is None:
            provided = websocket.args.get("access_token")
        if not check_token(provided, token):
            return unauthorized(provided, "the dispatcher's state dir")
        methods = {name: (method, runs) for name, method in RUN_METHODS.items()}
        await RpcConnection(methods, runs.subscribe, SUBSCRIPTION_BUFFER).serve()
        return None

    @bp.get("/client/", defaults={"name": "index.html"})
    @bp.get("/client/<name>")
    async def client_file(name: str) -> Response:
        return pages.client_file(name)

    # WebSockets authenticate inside: runners with their id and secret (hello), pages
    # with the client token.
    @bp.websocket("/link")
    async def link() -> None:
        await websocket.accept()
        await RunnerLink(dispatcher).serve(websocket.receive, websocket.send)

    @bp.websocket("/client/ws")
    async def client_control() -> None:
        await pages.ClientSocket(dispatcher, client_token).control()

    @bp.websocket("/client/host")
    async def client_host() -> None:
        await pages.ClientSocket(dispatcher, client_token).host()

    app.register_blueprint(bp)
    app.register_blueprint(ui_blueprint())
    return app
