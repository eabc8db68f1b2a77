"""``GET /ws``: the Runner API as JSON-RPC 2.0 over a WebSocket, and event streams.

Every method of :mod:`.methods` is callable by its name with named ``params`` (its
params model); calls on
one connection are handled one after another, in the order they arrive, so injects sent
in order are delivered in order. Batches (a JSON array of calls) are answered with an
array. Two more methods manage event streams:

``subscribe {flows?, kinds?, outputs?}`` -> ``{"subscription": "s1"}``
    From then on the server sends notifications
    ``{"jsonrpc": "2.0", "method": "event", "params": {"subscription": "s1", "event": {...}}}``
    for events of the given flows (all if absent), kinds (``output``, ``error``, ``log``,
    ``flow``, ``checkpoint``, ``swap``; all if absent) and output ports (``"module.port"``; all if absent).
``unsubscribe {subscription}`` -> ``true``

Runs (``api/common/runs.py``): ``submitRun``, ``getRun``, ``listRuns``, ``cancelRun``,
``getRunResult``, ``getRunLogs``; their events are the kinds ``run`` (every transition)
and ``run-progress`` (every lease renewal). The dispatcher's ``/ws`` is this connection
with the run methods only and the events of its run book (:func:`rpc_socket`).

A subscriber that reads slowly never slows a flow: each subscription buffers a bounded
number of events, drops the rest, and then sends ``{"kind": "missed", "count": n}``.

Error codes: -32700 parse error, -32600 invalid request, -32601 unknown method, -32602
invalid params (a 400/422 of the REST API), -32000 any other API error. ``error.data``
carries the REST error body (``status``, ``code``, ``message``, ``field``, ``problems``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
from quart import Blueprint, websocket

from fifoflow.api.common.errors import ApiError, InvalidParams, from_exception
from fifoflow.api.common.routes import Method, structure, unstructure
from fifoflow.api.common.runs import RUN_METHODS, RunnerRuns
from fifoflow.api.runner.methods import METHODS
from fifoflow.api.runner.models import Subscribe, Unsubscribe
from fifoflow.flows import FlowError
from fifoflow.runner import RunnerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from fifoflow.api.runner.app import ApiSettings
    from fifoflow.runner import Runner, Subscription

__all__ = ["RpcConnection", "runner_methods", "ws_blueprint"]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
API_ERROR = -32000


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _by_name(method: str, params: dict[str, Any] | list[Any], model: type) -> dict[str, Any]:
    """Params given by position (JSON-RPC 2.0 allows both), named in the order of the
    method's params model: ``startFlow(["chain"])`` is ``startFlow({"flowId": "chain"})``."""
    if isinstance(params, dict):
        return params
    names = [field.name for field in attrs.fields(model)]
    if len(params) > len(names):
        raise InvalidParams(
            f"{method} takes at most {len(names)} params by position"
            f" ({', '.join(names) or 'none'}), got {len(params)}",
            field="params",
        )
    return dict(zip(names, params, strict=False))


def runner_methods(runner: Runner, settings: ApiSettings) -> dict[str, tuple[Method, Any]]:
    """Every method a runner's ``/ws`` answers, each with what it is called on."""
    runs = RunnerRuns(runner, settings.dispatcher)
    return {
        **{name: (method, runner) for name, method in METHODS.items()},
        **{name: (method, runs) for name, method in RUN_METHODS.items()},
    }


class RpcConnection:
    """One WebSocket client: ``methods`` (name -> (method, what it is called on)) and
    ``subscribe`` (an :meth:`EventHub.subscribe`) are what it serves.

    Resource handling: the subscriptions and their forwarding tasks live in the nursery
    of :meth:`serve`; when the client goes away, they are closed with it."""

    def __init__(
        self,
        methods: dict[str, tuple[Method, Any]],
        subscribe: Callable[..., Subscription],
        subscription_buffer: int,
    ) -> None:
        self.methods = methods
        self.subscribe = subscribe
        self.subscription_buffer = subscription_buffer
        self._send_lock = trio.Lock()
        self._subs: dict[str, tuple[Subscription, trio.CancelScope]] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None

    async def send(self, message: Any) -> None:
        data = orjson.dumps(message).decode()
        async with self._send_lock:
            await websocket.send(data)

    async def serve(self) -> None:
        await websocket.accept()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                while True:
                    raw = await websocket.receive()
                    reply = await self.handle(raw)
                    if reply is not None:
                        await self.send(reply)
        finally:
            for sub, scope in self._subs.values():
                sub.close()
                scope.cancel()

    async def handle(self, raw: str | bytes) -> Any:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(None, PARSE_ERROR, f"not valid JSON: {exc}")
        if isinstance(message, list):
            if not message:
                return _error(None, INVALID_REQUEST, "an empty batch")
            replies = [await self.handle_one(item) for item in message]
            return [r for r in replies if r is not None] or None
        return await self.handle_one(message)

    async def handle_one(self, message: Any) -> dict[str, Any] | None:
        request_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            request_id = None  # echoed: only an id the reply can carry (_parse says why)
        try:
            method, params, notification = self._parse(message)
            result = await self._call(method, params)
        except _RpcError as exc:
            return _error(request_id, exc.code, exc.message, exc.data)
        except (ApiError, RunnerError, FlowError) as exc:
            error = from_exception(exc)
            code = (
                INVALID_PARAMS
                if isinstance(error, InvalidParams) or error.status == 400
                else API_ERROR
            )
            return _error(request_id, code, error.message, error.body()["error"])
        if notification:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _parse(self, message: Any) -> tuple[str, dict[str, Any], bool]:
        if not isinstance(message, dict):
            raise _RpcError(INVALID_REQUEST, "a call must be a JSON object")
        if message.get("jsonrpc") != "2.0":
            raise _RpcError(INVALID_REQUEST, 'a call must say "jsonrpc": "2.0"')
        request_id = message.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, (str, int))
        ):
            raise _RpcError(INVALID_REQUEST, "id must be a string or an integer")
        method = message.get("method")
        if not isinstance(method, str):
            raise _RpcError(INVALID_REQUEST, "method must be a string")
        params = message.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, (dict, list)):
            raise _RpcError(
                INVALID_PARAMS, "params must be an object (by name) or an array (by position)"
            )
        return method, params, "id" not in message

    async def _call(self, method: str, params: dict[str, Any] | list[Any]) -> Any:
        if method == "subscribe":
            return self._subscribe(_by_name(method, params, Subscribe))
        if method == "unsubscribe":
            return self._unsubscribe(_by_name(method, params, Unsubscribe))
        entry = self.methods.get(method)
        if entry is None:
            known = ", ".join([*self.methods, "subscribe", "unsubscribe"])
            raise _RpcError(METHOD_NOT_FOUND, f"unknown method {method!r} (methods: {known})")
        found, target = entry
        named = _by_name(method, params, found.params)
        return unstructure(await found.call(target, structure(named, found.params)))

    def _subscribe(self, params: dict[str, Any]) -> dict[str, str]:
        p = structure(params, Subscribe)
        sub = self.subscribe(
            flows=p.flows,
            kinds=[str(kind) for kind in p.kinds] if p.kinds is not None else None,
            outputs=p.outputs,
            capacity=self.subscription_buffer,
        )
        sid = f"s{next(self._ids)}"
        scope = trio.CancelScope()
        self._subs[sid] = (sub, scope)
        assert self._nursery is not None
        self._nursery.start_soon(self._forward, sid, sub, scope)
        return {"subscription": sid}

    def _unsubscribe(self, params: dict[str, Any]) -> bool:
        sid = structure(params, Unsubscribe).subscription
        if sid not in self._subs:
            known = ", ".join(self._subs) or "none"
            raise InvalidParams(
                f"no subscription {sid!r} on this connection (subscriptions: {known})",
                field="subscription",
            )
        sub, scope = self._subs.pop(sid)
        sub.close()
        scope.cancel()
        return True

    async def _forward(self, sid: str, sub: Subscription, scope: trio.CancelScope) -> None:
        with scope:
            async for event in sub:
                note = {"jsonrpc": "2.0", "method": "event", "params": {"subscription": sid}}
                try:
                    data = orjson.dumps({**note, "params": {**note["params"], "event": event}})
                except TypeError as exc:  # orjson's JSONEncodeError: say so, stay connected
                    kind, flow = event.get("kind"), event.get("flow")
                    unsent = {"kind": "unencodable", "of": kind, "flow": flow, "error": str(exc)}
                    data = orjson.dumps({**note, "params": {**note["params"], "event": unsent}})
                async with self._send_lock:
                    await websocket.send(data.decode())


def ws_blueprint(runner: Runner, settings: ApiSettings) -> Blueprint:
    bp = Blueprint("ws", __name__)

    @bp.websocket("/ws")
    async def ws() -> None:
        await RpcConnection(
            runner_methods(runner, settings), runner.subscribe, settings.subscription_buffer
        ).serve()

    return bp
