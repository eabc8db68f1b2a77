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

import contextlib
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

from fifoflow.api.common.auth import check_token, load_or_create_token
from fifoflow.api.common.errors import ApiError, InvalidParams, Unauthorized, error_body
from fifoflow.api.common.http import json_response, read_json, refuse_unknown_query
from fifoflow.api.dispatcher.openapi import dispatcher_openapi
from fifoflow.dispatcher.backends import LocalBackend
from fifoflow.dispatcher.clients import PAGE_ID, ClientRunners
from fifoflow.dispatcher.docker_backend import DockerBackend, DockerOptions, SwarmBackend
from fifoflow.dispatcher.service import Dispatcher, DispatcherConfig, DispatcherError, flow_summary
from fifoflow.flows import FlowError
from fifoflow.runner.attached import AttachedProcess
from fifoflow.runner.errors import RunnerError
from fifoflow.runner.rpc import RemoteError, RpcPeer
from fifoflow.runtimes.registry import BUILTIN_DIR, discover

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_DISPATCHER_PORT",
    "DispatcherServeOptions",
    "create_dispatcher_app",
    "serve_dispatcher",
]

log = logging.getLogger("fifoflow.dispatcher")

#: what the dispatcher serves under /client/ (no token: it is code for web pages)
CLIENT_FILES = {
    "index.html": (BUILTIN_DIR / "browser" / "index.html", "text/html; charset=utf-8"),
    "core.mjs": (BUILTIN_DIR / "node" / "core.mjs", "text/javascript; charset=utf-8"),
    "fifoflow.js": (BUILTIN_DIR / "browser" / "fifoflow.js", "text/javascript; charset=utf-8"),
    "demo.html": (BUILTIN_DIR / "browser" / "demo.html", "text/html; charset=utf-8"),
}
DEFAULT_DISPATCHER_PORT = 8480


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
        found = CLIENT_FILES.get(name)
        if found is None:
            raise ApiError(
                f"no client file {name!r} (files: {', '.join(sorted(CLIENT_FILES))})",
                status=404,
                code="not_found",
            )
        path, media_type = found
        return Response(path.read_bytes(), 200, {"Content-Type": media_type})

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return json_response(
            dispatcher_openapi(sorted(discover(attached=True)), dispatcher.version)
        )

    @bp.websocket("/link")
    async def link() -> None:
        await RunnerLink(dispatcher).serve()

    @bp.websocket("/client/ws")
    async def client_control() -> None:
        await ClientSocket(dispatcher, client_token).control()

    @bp.websocket("/client/host")
    async def client_host() -> None:
        await ClientSocket(dispatcher, client_token).host()

    @bp.get("/client-token")
    async def get_client_token() -> Response:
        return json_response({"token": client_token})

    app.register_blueprint(bp)

    @app.before_websocket
    async def _no_operator_auth_on_link() -> None:
        return None  # runners authenticate inside the link (hello)

    return app


class ClientSocket:
    """A web page's sockets: ``/client/ws`` (its control: hosts to open, injections,
    bye) and ``/client/host`` (one runtime host's frames). Both need the client token
    (``?token=``), refused with close code 4401 and the reason."""

    def __init__(self, dispatcher: Dispatcher, client_token: str | None) -> None:
        self.dispatcher = dispatcher
        self.client_token = client_token

    async def _admit(self) -> tuple[Any, str] | None:
        ws = websocket._get_current_object()
        await ws.accept()
        page = websocket.args.get("page", "")
        why = None
        if self.client_token is None or not check_token(
            websocket.args.get("token"), self.client_token
        ):
            why = (
                "wrong or missing client token (ask the operator: fifoflow dispatcher client-token)"
            )
        elif not PAGE_ID.match(page):
            why = "page must be 1 to 64 letters, digits, '-' or '_'"
        elif self.dispatcher.clients is None:
            why = "this dispatcher serves no client runners"
        if why is not None:
            await ws.send(orjson.dumps({"op": "refused", "message": why}).decode())
            await ws.close(4401, why[:120])
            return None
        return ws, page

    async def control(self) -> None:
        admitted = await self._admit()
        if admitted is None:
            return
        ws, page = admitted
        clients = self.dispatcher.clients

        async def request_host(name: str) -> None:
            await ws.send(orjson.dumps({"op": "spawn", "host": name}).decode())

        client, generation = await clients.page(page, request_host)
        try:
            await ws.send(
                orjson.dumps({"op": "welcome", "page": page, "runner": client.runner_id}).decode()
            )
            while True:
                raw = await ws.receive()
                try:
                    message = orjson.loads(raw)
                    op = message["op"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    await ws.send(
                        orjson.dumps({"op": "error", "message": "not a control message"}).decode()
                    )
                    continue
                if op == "bye":
                    client.stop.set()
                    break
                if op == "inject":
                    answer: dict[str, Any] = {"op": "injected", "id": message.get("id")}
                    try:
                        await self.dispatcher.forward(
                            str(message["flow"]),
                            "inject",
                            moduleId=str(message["module"]),
                            port=str(message.get("port") or "in"),
                            msgs=list(message["msgs"]),
                        )
                    except (RunnerError, KeyError, TypeError) as exc:
                        answer = {"op": "error", "id": message.get("id"), "message": str(exc)}
                    await ws.send(orjson.dumps(answer).decode())
                    continue
                unknown = {
                    "op": "error",
                    "id": message.get("id"),
                    "message": f"unknown op {op!r} (known: inject, bye)",
                }
                await ws.send(orjson.dumps(unknown).decode())
        finally:
            clients.disconnected(client, generation)

    async def host(self) -> None:
        admitted = await self._admit()
        if admitted is None:
            return
        ws, page = admitted
        client = self.dispatcher.clients.get(page)
        name = websocket.args.get("host", "")
        proc = AttachedProcess(name, ws.send)
        if client is None or not client.hosts.offer(proc):
            why = f"nobody asked for host {name!r} of page {page!r}"
            await ws.send(orjson.dumps({"op": "refused", "message": why}).decode())
            await ws.close(4404, why[:120])
            return
        try:
            async with trio.open_nursery() as nursery:

                async def closer() -> None:
                    await proc.close_requested.wait()
                    with contextlib.suppress(Exception):
                        await ws.close(1000)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(closer)
                while True:
                    data = await ws.receive()
                    await proc.feed(data.encode() if isinstance(data, str) else data)
        finally:
            proc.ended()


class RunnerLink:
    """One runner's control link: JSON-RPC both ways (``runner/rpc.py``)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.runner_id: str | None = None
        self.peer: RpcPeer | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        await websocket.accept()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            peer = self.peer = RpcPeer(websocket.send, self.handle, nursery)
            try:
                while True:
                    peer.feed(await websocket.receive())
            finally:
                peer.close()
                if self.runner_id is not None:
                    self.dispatcher.detach(self.runner_id, peer)
                nursery.cancel_scope.cancel()

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        d = self.dispatcher
        if method == "register":
            return d.register(str(params["token"]), str(params.get("name") or "runner"))
        if method == "hello":
            answer = d.hello(str(params["runnerId"]), str(params["secret"]), params.get("version"))
            self.runner_id = str(params["runnerId"])
            assert self.peer is not None
            d.attach(self.runner_id, self.peer)
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
            flows = params.get("flows") or []
            assert self.nursery is not None
            self.nursery.start_soon(d.runner_ready, self.runner_id, flows)
            return True
        if method == "heartbeat":
            d.heartbeat(self.runner_id)
            return True
        if method == "signoff":
            d.sign_off(self.runner_id)
            return True
        if method == "relay":
            msgs = params["msgs"]
            if not isinstance(msgs, list):
                raise TypeError("msgs must be an array")
            await d.relay(
                self.runner_id,
                str(params["flowId"]),
                str(params["moduleId"]),
                str(params["port"]),
                msgs,
            )
            return True
        if method == "paused":
            info = {k: params.get(k) for k in ("reason", "module", "port", "msg")}
            assert self.nursery is not None
            self.nursery.start_soon(d.paused, self.runner_id, str(params["flowId"]), info)
            return None
        if method == "snapshot":
            d.snapshot(self.runner_id, str(params["flowId"]), dict(params["states"]))
            return None
        raise DispatcherError(f"unknown method {method!r}")


@attrs.frozen
class DispatcherServeOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_DISPATCHER_PORT
    heartbeat: float = 5.0
    ttl: float | None = None
    #: runner processes the dispatcher starts on this machine (the local backend)
    local_runners: int = 0
    #: the Docker backend: runner containers from this image (None: no Docker backend)
    docker_image: str | None = None
    docker_runners: int = 1
    pull: str = "if-not-present"
    docker_cpus: float = 1.0
    docker_memory: int = 1024**3
    docker_network: str = "host"
    #: run the runner containers as Docker Swarm services (one per runner)
    swarm: bool = False
    #: the dispatcher's URL as containers reach it (default: the one it listens on)
    public_url: str | None = None


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
            client_token, _ = load_or_create_token(options.state_dir / "client-token")
            app = create_dispatcher_app(dispatcher, token, client_token)
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
            dispatcher.clients = await nursery.start(
                ClientRunners(dispatcher, urls[0], options.state_dir).run
            )
            _say(
                f"client runners: {urls[0]}/client/ (client token: {options.state_dir / 'client-token'})"
            )
            backend = None
            if options.local_runners:
                root = options.state_dir / "local-runners"
                backend = await nursery.start(LocalBackend(root, urls[0]).run)
                for i in range(options.local_runners):
                    name = f"local-{i + 1}"
                    token = None if backend.registered(name) else dispatcher.issue_token()["token"]
                    await backend.start_runner(name, token)
                _say(f"started {options.local_runners} local runner(s) in {root}")
            if options.docker_image:
                kind = SwarmBackend if options.swarm else DockerBackend
                docker_backend = kind(
                    dispatcher,
                    DockerOptions(
                        image=options.docker_image,
                        dispatcher_url=options.public_url or urls[0],
                        pull=options.pull,
                        runners=options.docker_runners,
                        cpus=options.docker_cpus,
                        memory=options.docker_memory,
                        network=options.docker_network,
                        interval=min(1.0, options.heartbeat),
                    ),
                    say=_say,
                )
                dispatcher.backend = docker_backend
                await nursery.start(docker_backend.run)
                _say(
                    f"{docker_backend.name} backend: {options.docker_runners} runner"
                    f" container(s) from {docker_backend.image} (pull: {options.pull})"
                )
            task_status.started(urls)
            async for signum in signals:
                _say(f"{signal.Signals(signum).name}: stopping")
                if backend is not None:
                    await backend.stop_all()  # they sign off while the dispatcher still listens
                await dispatcher.clients.stop_all()
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
