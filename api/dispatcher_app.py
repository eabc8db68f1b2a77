"""The dispatcher's API: operators over HTTP (bearer token), runners over ``/link``.

Operators (``Authorization: Bearer <token from the dispatcher's state dir>``)::

    GET  /health                 status, version, runners by status
    POST /tokens  {ttl?}         a one-time registration token for a new runner
    GET  /runners                every runner: status, last heartbeat, hardware
    GET  /events[?since=ID]      what happened (registered, connected, hardware, ready,
                                 lost, back, signed-off), oldest first
    GET  /openapi.json

Runners: ``GET /link`` is a WebSocket carrying JSON-RPC 2.0 calls from the runner:
``register {token, name}`` -> ``{runnerId, secret}``; ``hello {runnerId, secret,
version}`` -> ``{heartbeat, ttl}`` (every other call needs it first, on that
connection); ``hardware {full} | {changes}``; ``ready``; ``heartbeat``; ``signoff``.
A runner authenticates with its own credentials there, not the operator token.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import hypercorn.config
import hypercorn.trio
import orjson
import trio
import trio.lowlevel
from quart import Blueprint, Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..dispatcher.service import Dispatcher, DispatcherConfig, DispatcherError
from .auth import check_token, load_or_create_token
from .errors import ApiError, InvalidParams, Unauthorized
from .http import json_response, read_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_DISPATCHER_PORT",
    "DispatcherServeOptions",
    "create_dispatcher_app",
    "serve_dispatcher",
]

log = logging.getLogger("fifoflow.dispatcher")
DEFAULT_DISPATCHER_PORT = 8480


def _error_response(exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return json_response(exc.body(), exc.status)
    if isinstance(exc, DispatcherError):
        status = 404 if exc.code == "unknown_runner" else 409
        error = ApiError(str(exc), status=status, code=exc.code, field=exc.field)
        return json_response(error.body(), status)
    raise TypeError(exc) from exc


def create_dispatcher_app(dispatcher: Dispatcher, token: str) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    @app.before_request
    async def _auth() -> Response | None:
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
        return None

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
            if ttl is not None and (
                isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0
            ):
                raise InvalidParams("ttl must be a positive number of seconds", field="ttl")
        return json_response(dispatcher.issue_token(ttl), 201)

    @bp.get("/runners")
    async def runners() -> Response:
        return json_response(dispatcher.runners())

    @bp.get("/events")
    async def events() -> Response:
        try:
            since = int(request.args.get("since", "0"))
        except ValueError:
            raise InvalidParams("since must be an integer event id", field="since") from None
        return json_response(dispatcher.events(since))

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(_openapi(dispatcher.version))

    @bp.websocket("/link")
    async def link() -> None:
        await RunnerLink(dispatcher).serve()

    app.register_blueprint(bp)

    @app.before_websocket
    async def _no_operator_auth_on_link() -> None:
        return None  # runners authenticate inside the link (hello)

    return app


class RunnerLink:
    """One runner's control link: JSON-RPC calls from the runner, in order."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.runner_id: str | None = None

    async def serve(self) -> None:
        await websocket.accept()
        while True:
            raw = await websocket.receive()
            try:
                message = orjson.loads(raw)
                method, params, request_id = (
                    message["method"],
                    message.get("params") or {},
                    message.get("id"),
                )
                if not isinstance(method, str) or not isinstance(params, dict):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await websocket.send(
                    orjson.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": None,
                            "error": {"code": -32600, "message": "not a JSON-RPC call"},
                        }
                    ).decode()
                )
                continue
            try:
                result = self.call(method, params)
                reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
            except DispatcherError as exc:
                reply = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {
                        "code": -32000,
                        "message": str(exc),
                        "data": {"code": exc.code, "field": exc.field},
                    },
                }
            except (KeyError, TypeError, ValueError) as exc:
                reply = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "error": {"code": -32602, "message": f"bad params for {method}: {exc}"},
                }
            if request_id is not None:
                await websocket.send(orjson.dumps(reply).decode())

    def call(self, method: str, params: dict[str, Any]) -> Any:
        d = self.dispatcher
        if method == "register":
            return d.register(str(params["token"]), str(params.get("name") or "runner"))
        if method == "hello":
            answer = d.hello(str(params["runnerId"]), str(params["secret"]), params.get("version"))
            self.runner_id = str(params["runnerId"])
            return answer
        if self.runner_id is None:
            raise DispatcherError("say hello first (runnerId and secret)")
        if method == "hardware":
            full, changes = params.get("full"), params.get("changes")
            if (full is not None and not isinstance(full, dict)) or (
                changes is not None and not isinstance(changes, dict)
            ):
                raise ValueError("full and changes must be objects")
            d.report_hardware(self.runner_id, full, changes)
            return True
        if method == "ready":
            d.ready(self.runner_id)
            return True
        if method == "heartbeat":
            d.heartbeat(self.runner_id)
            return True
        if method == "signoff":
            d.sign_off(self.runner_id)
            return True
        raise DispatcherError(f"unknown method {method!r}")


def _openapi(version: str) -> dict[str, Any]:
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }

    def op(op_id: str, summary: str, ok: str = "200") -> dict[str, Any]:
        return {
            "operationId": op_id,
            "summary": summary,
            "responses": {ok: {"description": "ok"}, "401": error},
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "fifoflow dispatcher API", "version": version},
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/health": {"get": op("health", "The dispatcher's health")},
            "/tokens": {"post": op("issueToken", "A one-time registration token", "201")},
            "/runners": {"get": op("listRunners", "Every runner and its status")},
            "/events": {"get": op("listEvents", "What happened, oldest first")},
            "/openapi.json": {"get": op("openapi", "This document")},
            "/link": {
                "get": {
                    "operationId": "runnerLink",
                    "summary": "WebSocket control link for runners (JSON-RPC)",
                    "responses": {"101": {"description": "switching protocols"}},
                }
            },
        },
    }


@attrs.frozen
class DispatcherServeOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_DISPATCHER_PORT
    heartbeat: float = 5.0
    ttl: float | None = None


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def serve_dispatcher(
    options: DispatcherServeOptions,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ready: Callable[[list[str]], Awaitable[None]] | None = None,
) -> None:
    token_path = options.state_dir / "token"
    token, created = load_or_create_token(token_path)
    _say(f"token: {token_path}" + (" (created)" if created else ""))
    config = DispatcherConfig(
        state_dir=options.state_dir, heartbeat=options.heartbeat, ttl=options.ttl
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            dispatcher: Dispatcher = await nursery.start(Dispatcher(config).run)
            app = create_dispatcher_app(dispatcher, token)
            hc = hypercorn.config.Config()
            hc.bind = [f"{options.host}:{options.port}"]
            hc.graceful_timeout = 1.0
            hc.accesslog = None
            hc.errorlog = None
            stop = trio.Event()
            urls = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    app, hc, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            _say(f"fifoflow dispatcher {dispatcher.version} listening on {' '.join(urls)}")
            _say(f"state dir: {options.state_dir}")
            task_status.started(urls)
            async for signum in signals:
                _say(f"{signal.Signals(signum).name}: stopping")
                stop.set()
                break
            with trio.move_on_after(3):
                await trio.lowlevel.checkpoint()  # let hypercorn finish its graceful shutdown
            nursery.cancel_scope.cancel()
    _say("stopped")


def default_dispatcher_state_dir() -> Path:
    import os

    if env := os.environ.get("FIFOFLOW_DISPATCHER_STATE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fifoflow" / "dispatcher"
