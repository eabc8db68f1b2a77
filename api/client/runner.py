"""A small typed client of the Runner API, for scripts, the CLI and the tests.

::

    async with RunnerClient("http://127.0.0.1:8470", token) as client:
        await client.add_or_update_flow(document)
        await client.start_flow("hello")
        async with client.rpc() as rpc:                     # JSON-RPC over /ws
            await rpc.subscribe(flows=["hello"], kinds=["output"])
            await client.inject("hello", "greet", "in", [{"name": "Ada"}])
            event = await rpc.next_event()

Runs (the same routes on a runner served alone and on a dispatcher, so this client
drives both)::

        run = await client.submit_run({"flow": "hello", "inputs": [{"msg": {"n": 1}}]})
        view = await client.wait_run(run["id"], timeout=60)   # events on /ws, else polling
        result = await client.run_result(run["id"])

Failures raise :class:`~fifoflow.api.common.errors.ApiError` with the server's ``status``,
``code``, ``message`` and ``field``; an unreachable server raises
:class:`~fifoflow.api.client.errors.ConnectError`.

Resource handling: the client owns one ``httpx.AsyncClient`` (closed by ``aclose`` or
leaving ``async with``); each :meth:`RunnerClient.rpc` session owns one WebSocket and
its reader task, closed when its ``async with`` ends.
"""

from __future__ import annotations

import itertools
import math
import urllib.parse
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

import httpx
import orjson
import trio
import trio_websocket

from fifoflow.api.client.errors import (
    ApiError,
    ConnectError,
    api_error,
    leaves,
    transport_reason,
)
from fifoflow.runner.tls import client_context

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable, Iterable
    from pathlib import Path

__all__ = [
    "ENDED",
    "FlowSummary",
    "RpcSession",
    "RunnerClient",
    "Runtime",
    "open_websocket",
]

#: the states a run ends in (runner/runs/model.py TERMINAL, as strings)
ENDED = frozenset({"succeeded", "failed", "timed_out", "canceled"})
#: seconds between two looks at a run while waiting without events
POLL = 0.5


class Runtime(TypedDict):
    id: str
    name: str
    version: str


class FlowSummary(TypedDict, total=False):
    id: str
    revision: int
    status: str
    error: str | None
    pending: int
    outputs: int
    errors: int
    restarts: int
    runtimes: dict[str, Any]
    wantRunning: bool


class RunnerClient:
    def __init__(
        self, url: str, token: str, *, timeout: float = 60.0, ca: Path | None = None
    ) -> None:
        """``ca``: verify an ``https://`` runner with this CA file (or its self-signed
        certificate) instead of the system's CAs."""
        self.url = url.rstrip("/")
        self.token = token
        self._ssl = client_context(ca=ca)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=self._ssl,
        )

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        content = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method, path, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            raise ConnectError(
                f"cannot reach the runner at {self.url}: {transport_reason(exc)}"
            ) from None
        if response.status_code >= 400:
            raise api_error(response)
        return orjson.loads(response.content)

    # ------------------------------------------------------------------ the seed's methods

    async def list_runtimes(self) -> list[Runtime]:
        return await self.request("GET", "/runtimes")

    async def list_flows_for_runtime(self, runtime_id: str, *, ids: bool = False) -> list[Any]:
        """The flows with a module in the runtime (their summaries; ``ids``: their ids)."""
        query = "?ids=true" if ids else ""
        return await self.request("GET", f"/runtimes/{runtime_id}/flows{query}")

    async def add_or_update_flow(
        self, flow: dict[str, Any], *, revision: int | None = None
    ) -> bool:
        """Add (``True``) or update (``False``) a flow; ``flow`` is a standalone document."""
        return (await self.apply_flow(flow, revision=revision))["created"]

    async def apply_flow(
        self, flow: dict[str, Any], *, revision: int | None = None
    ) -> dict[str, Any]:
        """Add or update a flow: ``{created, flow, swap}`` (``swap``: the hot swap's
        report when the flow was running)."""
        params = {"revision": revision} if revision is not None else None
        return await self.request("PUT", f"/flows/{flow['id']}", json=flow, params=params)

    async def remove_flow(self, flow_id: str) -> None:
        await self.request("DELETE", f"/flows/{flow_id}")

    async def start_flow(self, flow_id: str) -> FlowSummary:
        return await self.request("POST", f"/flows/{flow_id}/start")

    async def stop_flow(self, flow_id: str) -> FlowSummary:
        return await self.request("POST", f"/flows/{flow_id}/stop")

    async def set_breakpoint_at_module(
        self, flow_module_id: str, condition: str | None = None
    ) -> dict[str, Any]:
        flow_id, _, module_id = flow_module_id.partition("/")
        body = {"condition": condition} if condition is not None else None
        return await self.request(
            "PUT", f"/flows/{flow_id}/modules/{module_id}/breakpoint", json=body
        )

    async def remove_breakpoint_at_module(self, flow_module_id: str) -> bool:
        flow_id, _, module_id = flow_module_id.partition("/")
        path = f"/flows/{flow_id}/modules/{module_id}/breakpoint"
        return (await self.request("DELETE", path))["removed"]

    async def single_step_flow(self, flow_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/flows/{flow_id}/step")

    # ------------------------------------------------------------------ the debugger

    async def pause_flow(self, flow_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/flows/{flow_id}/pause")

    async def continue_flow(self, flow_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/flows/{flow_id}/continue")

    async def debug_state(self, flow_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/flows/{flow_id}/debug")

    async def queues(self, flow_id: str) -> dict[str, list[dict[str, Any]]]:
        return await self.request("GET", f"/flows/{flow_id}/queues")

    async def edit_queued_message(self, flow_id: str, module_id: str, index: int, msg: Any) -> Any:
        path = f"/flows/{flow_id}/modules/{module_id}/queue/{index}"
        return (await self.request("PUT", path, json={"msg": msg}))["old"]

    async def drop_queued_message(self, flow_id: str, module_id: str, index: int) -> Any:
        path = f"/flows/{flow_id}/modules/{module_id}/queue/{index}"
        return (await self.request("DELETE", path))["old"]

    # ------------------------------------------------------------------ environments

    async def list_environments(self, runtime: str | None = None) -> list[dict[str, Any]]:
        params = {"runtime": runtime} if runtime is not None else None
        return await self.request("GET", "/environments", params=params)

    async def change_environment(
        self, env_id: str, install: list[str] | None = None, remove: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"install": install or [], "remove": remove or []}
        return await self.request("POST", f"/environments/{env_id}/packages", json=body)

    async def rebuild_environment(self, env_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/environments/{env_id}/rebuild")

    async def gc_environments(self, max_idle: int | None = None) -> list[str]:
        params = {"maxIdle": max_idle} if max_idle is not None else None
        return (await self.request("POST", "/environments/gc", params=params))["removed"]

    # ------------------------------------------------------------------ around them

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/health")

    async def list_flows(self) -> list[FlowSummary]:
        return await self.request("GET", "/flows")

    async def get_flow(self, flow_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/flows/{flow_id}")

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> int:
        path = f"/flows/{flow_id}/modules/{module_id}/inputs/{port}"
        return (await self.request("POST", path, json={"msgs": msgs}))["accepted"]

    async def module_state(self, flow_id: str, module_id: str) -> Any:
        return (await self.request("GET", f"/flows/{flow_id}/modules/{module_id}/state"))["state"]

    async def module_errors(self, flow_id: str, module_id: str) -> list[dict[str, Any]]:
        return await self.request("GET", f"/flows/{flow_id}/modules/{module_id}/errors")

    async def logs(self, flow_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit is not None else None
        return await self.request("GET", f"/flows/{flow_id}/logs", params=params)

    # ------------------------------------------------------------------ runs

    async def submit_run(self, submission: dict[str, Any]) -> dict[str, Any]:
        """Submit a run (``RunSubmission``'s fields: flow or document, inputs, timeout,
        maxAttempts, lease, labels, priority, failOn, key); the run's view, queued."""
        return await self.request("POST", "/runs", json=submission)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/runs/{run_id}")

    async def list_runs(
        self, *, state: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = {"state": state, "flow": flow, "limit": limit}
        return await self.request(
            "GET", "/runs", params={k: v for k, v in query.items() if v is not None}
        )

    async def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason else None
        return await self.request("POST", f"/runs/{run_id}/cancel", json=body)

    async def run_result(self, run_id: str) -> dict[str, Any]:
        """How the run ended (an ApiError 409 ``run_state`` until it has)."""
        return await self.request("GET", f"/runs/{run_id}/result")

    async def run_outputs(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every output of an ended run, ``{from, msg}``, as the server streams them."""
        try:
            async with self._http.stream("GET", f"/runs/{run_id}/outputs") as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise api_error(response)
                buffer = b""
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield orjson.loads(line)
                if buffer.strip():
                    yield orjson.loads(buffer)
        except httpx.TransportError as exc:
            raise ConnectError(
                f"cannot reach the runner at {self.url}: {transport_reason(exc)}"
            ) from None

    async def run_logs(self, run_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit is not None else None
        return await self.request("GET", f"/runs/{run_id}/logs", params=params)

    async def wait_run(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a deadline, like the book's wait)
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The run's view once it ended; ``TimeoutError`` after ``timeout`` seconds.
        ``on_update`` gets the view first, then every ``run``/``run-progress`` event of
        the run (from ``/ws`` when the server has one) and the view at each look (every
        :data:`POLL` seconds without events, so that a lost event only delays)."""
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            try:
                async with self.rpc() as rpc:
                    await rpc.subscribe(kinds=["run", "run-progress"])
                    return await self._wait_run(run_id, rpc, on_update)
            except (ConnectError, ApiError, OSError, trio_websocket.HandshakeError):
                return await self._wait_run(run_id, None, on_update)
        assert scope.cancelled_caught
        raise TimeoutError(f"run {run_id} did not end within {timeout} s")

    async def _wait_run(
        self,
        run_id: str,
        rpc: RpcSession | None,
        on_update: Callable[[dict[str, Any]], None] | None,
    ) -> dict[str, Any]:
        while True:
            view = await self.get_run(run_id)
            if on_update is not None:
                on_update(view)
            if view["state"] in ENDED:
                return view
            with trio.move_on_after(POLL):
                if rpc is None:
                    await trio.sleep_forever()
                while True:  # events until the run ends; after POLL s, look again
                    event = (await rpc.next_event())["event"]
                    if event.get("run") != run_id:
                        continue
                    if on_update is not None:
                        on_update(event)
                    if event.get("kind") == "run" and event.get("state") in ENDED:
                        break

    @asynccontextmanager
    async def rpc(self) -> AsyncIterator[RpcSession]:
        """A JSON-RPC session over ``/ws`` (calls, and the events of its subscriptions)."""
        ws_url = "ws" + self.url.removeprefix("http") + "/ws"
        headers = [(b"Authorization", f"Bearer {self.token}".encode())]
        async with open_websocket(ws_url, headers=headers, ssl_context=self._ssl) as ws:
            try:
                async with trio.open_nursery() as nursery:
                    session = RpcSession(ws)
                    nursery.start_soon(session._reader)
                    try:
                        yield session
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                _raise_single(group)


def _raise_single(group: BaseExceptionGroup) -> NoReturn:
    """Raise the one exception a nursery wrapped (what the caller's code raised)."""
    raised = [exc for exc in leaves(group) if not isinstance(exc, trio.Cancelled)]
    if len(raised) == 1:
        raise raised[0] from None
    raise group


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 64 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client WebSocket whose TCP stream this function owns and always closes (also
    when the server refuses the handshake: that becomes an :class:`ApiError`). A
    ``wss://`` URL is reached over TLS, verified with ``ssl_context`` (default: the
    system's CAs)."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ConnectError(f"cannot reach the runner at {url}: {exc}") from None
    if secure:
        stream = trio.SSLStream(
            stream,
            ssl_context or client_context(),
            server_hostname=host,
            https_compatible=True,
        )
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"{host}:{port}",
                resource,
                extra_headers=headers,
                max_message_size=max_message_size,
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        for exc in leaves(group):
            if isinstance(exc, trio_websocket.ConnectionRejected):
                raise _rejected(exc) from None
        _raise_single(group)
    except trio_websocket.ConnectionRejected as exc:
        raise _rejected(exc) from None
    finally:
        await trio.aclose_forcefully(stream)


def _rejected(exc: trio_websocket.ConnectionRejected) -> ApiError:
    return api_error(httpx.Response(exc.status_code, content=exc.body or b""))


class RpcSession:
    """Calls may be made from several tasks at once; replies are matched by id. Events of
    subscriptions queue up (without bound) until :meth:`next_event` takes them."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._events_in, self._events = trio.open_memory_channel[dict[str, Any]](math.inf)

    async def _reader(self) -> None:
        try:
            while True:
                message = orjson.loads(await self._ws.get_message())
                for item in message if isinstance(message, list) else [message]:
                    if item.get("method") == "event":
                        self._events_in.send_nowait(item["params"])
                    elif (reply_to := self._waiting.pop(item.get("id"), None)) is not None:
                        reply_to.send_nowait(item)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self._events_in.close()
            for channel in self._waiting.values():
                channel.close()

    async def call(self, method: str, /, *args: Any, **params: Any) -> Any:
        """``call("startFlow", flowId="x")`` by name, or ``call("startFlow", "x")`` by
        position (in the order of the method's params)."""
        if args and params:
            raise TypeError("give params by position or by name, not both")
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[request_id] = send
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": method,
            "params": list(args) if args else params,
        }
        await self._ws.send_message(orjson.dumps(message).decode())
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ConnectError("the runner closed the WebSocket") from None
        if "error" in reply:
            error = reply["error"]
            data = error.get("data") or {}
            raise ApiError(
                error["message"],
                status=data.get("status", 400),
                code=data.get("code", str(error["code"])),
                field=data.get("field"),
                problems=data.get("problems"),
            )
        return reply["result"]

    async def subscribe(
        self,
        *,
        flows: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> str:
        params = {
            name: list(value)
            for name, value in (("flows", flows), ("kinds", kinds), ("outputs", outputs))
            if value is not None
        }
        return (await self.call("subscribe", **params))["subscription"]

    async def next_event(self) -> dict[str, Any]:
        """The next event of any subscription: ``{"subscription": id, "event": {...}}``."""
        try:
            return await self._events.receive()
        except trio.EndOfChannel:
            raise ConnectError("the runner closed the WebSocket") from None
