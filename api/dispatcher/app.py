"""The dispatcher's API: operators over HTTP (bearer token), runners over ``/link``.

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
    GET  /openapi.json

Runners: ``GET /link`` is a WebSocket carrying JSON-RPC 2.0 calls from the runner:
``register {token, name}`` -> ``{runnerId, secret}``; ``hello {runnerId, secret,
version}`` -> ``{heartbeat, ttl}`` (every other call needs it first, on that
connection); ``hardware {full} | {changes}``; ``ready``; ``heartbeat``; ``signoff``.
A runner authenticates with its own credentials there, not the operator token.
"""

from __future__ import annotations

import logging

from quart import Blueprint, Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from fifoflow.api.common.auth import check_token
from fifoflow.api.common.errors import ApiError, InvalidParams, Unauthorized, error_body
from fifoflow.api.common.http import json_response, read_json, refuse_unknown_query
from fifoflow.api.dispatcher import pages
from fifoflow.api.dispatcher.openapi import dispatcher_openapi
from fifoflow.dispatcher.link import RunnerLink
from fifoflow.dispatcher.service import Dispatcher, DispatcherError, flow_summary
from fifoflow.flows import FlowError
from fifoflow.runner.errors import RunnerError
from fifoflow.runner.rpc import RemoteError
from fifoflow.runtimes.registry import discover

__all__ = ["create_dispatcher_app"]

log = logging.getLogger("fifoflow.dispatcher")



def _error_response(exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return json_response(exc.body(), exc.status)
    if isinstance(exc, DispatcherError):
        status = (
            404 if exc.code in ("unknown_runner", "flow_not_found", "runtime_not_found") else 409
        )
        error = ApiError(str(exc), status=status, code=exc.code, field=exc.field)
        return json_response(error.body(), status)
    if isinstance(exc, RemoteError):
        # what the runner said about a forwarded call
        status = 404 if (exc.remote_code or "").endswith("not_found") else 409
        error = ApiError(str(exc), status=status, code=exc.remote_code or exc.code)
        return json_response(error.body(), status)
    if isinstance(exc, (FlowError, RunnerError)):
        body, status = error_body(exc)
        return json_response(body, status)
    raise TypeError(exc) from exc


def create_dispatcher_app(
    dispatcher: Dispatcher, token: str, client_token: str | None = None
) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    @app.before_request
    async def _auth() -> Response | None:
        if request.endpoint == "dispatcher.client_file":
            return None  # the client runner's code is public; its socket needs a token
        header = request.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        provided = value.strip() if scheme.lower() == "bearer" else None
        if not check_token(provided, token):
            error = Unauthorized(
                ("missing bearer token" if provided is None else "wrong token")
                + ": send 'Authorization: Bearer <token>' (the token is in the dispatcher's state dir)",
                field="Authorization",
            )
            return json_response(error.body(), 401, {"WWW-Authenticate": 'Bearer realm="fifoflow"'})
        allowed = {"dispatcher.events": {"since"}}.get(request.endpoint or "", set())
        return refuse_unknown_query(allowed)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        error = ApiError(exc.description or exc.name, status=status, code="http_error")
        return json_response(error.body(), status)

    @app.errorhandler(Exception)
    async def _error(exc: Exception) -> Response:
        try:
            return _error_response(exc)
        except TypeError:
            log.exception("unexpected error in %s %s", request.method, request.path)
            error = ApiError(
                f"internal error: {type(exc).__name__}: {exc}", status=500, code="internal"
            )
            return json_response(error.body(), 500)

    bp = Blueprint("dispatcher", __name__)

    @bp.get("/health")
    async def health() -> Response:
        return json_response(dispatcher.health())

    @bp.post("/tokens")
    async def tokens() -> Response:
        ttl = None
        if await request.get_data(cache=True):
            body = await read_json()
            if not isinstance(body, dict) or set(body) - {"ttl"}:
                raise InvalidParams('the body must be {"ttl": seconds} or empty', field="body")
            ttl = body.get("ttl")
            if "ttl" in body and (
                isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0
            ):
                raise InvalidParams("ttl must be a positive number of seconds", field="ttl")
        return json_response(dispatcher.issue_token(ttl), 201)

    @bp.get("/runners")
    async def runners() -> Response:
        return json_response(dispatcher.runners())

    @bp.post("/runners/<runnerId>/drain")
    async def drain(runnerId: str) -> Response:
        return json_response({"moved": await dispatcher.drain(runnerId)})

    @bp.get("/events")
    async def events() -> Response:
        try:
            since = int(request.args.get("since", "0"))
        except ValueError:
            raise InvalidParams("since must be an integer event id", field="since") from None
        if not 0 <= since < 2**53:
            raise InvalidParams("since must be an event id (0 or more)", field="since")
        return json_response(dispatcher.events(since))

    @bp.get("/flows")
    async def flows() -> Response:
        return json_response(dispatcher.flows())

    @bp.post("/flows")
    async def deploy() -> Response:
        body = await read_json()
        if not isinstance(body, dict):
            raise InvalidParams("the body must be a flow document (a JSON object)", field="body")
        return json_response(await dispatcher.deploy(body), 201)

    @bp.put("/flows/<flowId>")
    async def update_flow(flowId: str) -> Response:
        body = await read_json()
        if not isinstance(body, dict):
            raise InvalidParams("the body must be a flow document (a JSON object)", field="body")
        if body.get("id", flowId) != flowId:
            raise InvalidParams(
                f"the document's id {body.get('id')!r} is not the path's {flowId!r}", field="id"
            )
        return json_response(await dispatcher.deploy({**body, "id": flowId}))

    @bp.get("/runtimes")
    async def runtimes() -> Response:
        return json_response(dispatcher.runtimes())

    @bp.get("/runtimes/<runtimeId>/flows")
    async def runtime_flows(runtimeId: str) -> Response:
        return json_response(dispatcher.flows_for_runtime(runtimeId))

    @bp.get("/flows/<flowId>/<any(debug, queues):what>")
    async def debug_view(flowId: str, what: str) -> Response:
        return json_response(await dispatcher.debug(flowId, what))

    @bp.get("/flows/<flowId>")
    async def get_flow(flowId: str) -> Response:
        record = dispatcher.flow(flowId)
        return json_response(
            {**flow_summary(record), "states": record["states"], "flow": record["document"]}
        )

    @bp.delete("/flows/<flowId>")
    async def remove_flow(flowId: str) -> Response:
        await dispatcher.remove(flowId)
        return json_response({"removed": flowId})

    @bp.post("/flows/<flowId>/<any(start, stop):action>")
    async def start_stop(flowId: str, action: str) -> Response:
        return json_response(await dispatcher.forward(flowId, action))

    @bp.post("/flows/<flowId>/modules/<moduleId>/inputs/<port>")
    async def inject(flowId: str, moduleId: str, port: str) -> Response:
        body = await read_json()
        if not isinstance(body, dict) or not isinstance(body.get("msgs"), list):
            raise InvalidParams('the body must be {"msgs": [...]}', field="msgs")
        return json_response(
            await dispatcher.forward(
                flowId, "inject", moduleId=moduleId, port=port, msgs=body["msgs"]
            )
        )

    @bp.get("/flows/<flowId>/modules/<moduleId>/state")
    async def module_state(flowId: str, moduleId: str) -> Response:
        return json_response(await dispatcher.forward(flowId, "state", moduleId=moduleId))

    @bp.put("/flows/<flowId>/modules/<moduleId>/breakpoint")
    async def set_breakpoint(flowId: str, moduleId: str) -> Response:
        condition = None
        if await request.get_data(cache=True):
            body = await read_json()
            if not isinstance(body, dict) or set(body) - {"condition"}:
                raise InvalidParams('the body must be {"condition": "..."} or empty', field="body")
            condition = body.get("condition")
        return json_response(
            await dispatcher.debug(flowId, "break", moduleId=moduleId, condition=condition)
        )

    @bp.delete("/flows/<flowId>/modules/<moduleId>/breakpoint")
    async def remove_breakpoint(flowId: str, moduleId: str) -> Response:
        return json_response(
            {"removed": await dispatcher.debug(flowId, "unbreak", moduleId=moduleId)}
        )

    @bp.post("/flows/<flowId>/<any(pause, continue, step):action>")
    async def debug_action(flowId: str, action: str) -> Response:
        return json_response(await dispatcher.debug(flowId, action))

    @bp.get("/flows/<flowId>/logs")
    async def flow_logs(flowId: str) -> Response:
        return json_response(await dispatcher.logs(flow_id=flowId))

    @bp.get("/runners/<runnerId>/logs")
    async def runner_logs(runnerId: str) -> Response:
        return json_response(await dispatcher.logs(runner_id=runnerId))

    @bp.get("/backend")
    async def backend() -> Response:
        if dispatcher.backend is None:
            return json_response({"backend": None})
        return json_response(dispatcher.backend.describe())

    @bp.post("/backend/image")
    async def update_image() -> Response:
        body = await read_json()
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("image"), str)
            or set(body)
            - {
                "image",
                "pull",
            }
        ):
            raise InvalidParams('the body must be {"image": "...", "pull"?: policy}', field="image")
        if dispatcher.backend is None:
            raise DispatcherError("this dispatcher has no container backend (serve --docker IMAGE)")
        try:
            return json_response(
                await dispatcher.backend.update_image(body["image"], body.get("pull"))
            )
        except ValueError as exc:
            raise InvalidParams(str(exc), field="pull") from None
        except RuntimeError as exc:
            raise DispatcherError(f"update to {body['image']} failed: {exc}") from None

    @bp.get("/client/", defaults={"name": "index.html"})
    @bp.get("/client/<name>")
    async def client_file(name: str) -> Response:
        return pages.client_file(name)

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(
            dispatcher_openapi(sorted(discover(attached=True)), dispatcher.version)
        )

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

    @bp.get("/client-token")
    async def get_client_token() -> Response:
        return json_response({"token": client_token})

    app.register_blueprint(bp)

    @app.before_websocket
    async def _no_operator_auth_on_link() -> None:
        return None  # runners authenticate inside the link (hello)

    return app


