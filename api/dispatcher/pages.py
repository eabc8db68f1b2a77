"""What the dispatcher serves to web pages that run a client runner (no operator token).

``GET /client/`` and ``/client/{name}``: the client runner's files (code for pages,
public). ``/client/ws``: a page's control socket (hosts to open, injections, bye; ``run`` events
about the browser parts of runs it takes, unless it connected with ``?runs=0``);
``/client/host``: one runtime host's frames (runtimes/PROTOCOL.md). Both sockets need
the client token (``?token=``) and, once a page id is known, its page secret
(``&secret=``, given in the first ``welcome``); anything else is refused with close
code 4401 and the reason (as is a new page beyond the dispatcher's maximum).
The pages' runners themselves are kept by ``dispatcher/clients.py``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import orjson
import trio
from quart import Response, websocket

from fifoflow.api.common.auth import check_token
from fifoflow.api.common.errors import ApiError, InvalidParams
from fifoflow.api.common.routes import structure
from fifoflow.api.dispatcher.models import PageInject
from fifoflow.dispatcher.clients import PAGE_ID
from fifoflow.dispatcher.errors import NotYourPart, PageRefused
from fifoflow.runner.attached import AttachedProcess
from fifoflow.runner.errors import RunnerError
from fifoflow.runtimes.registry import BUILTIN_DIR

if TYPE_CHECKING:
    from fifoflow.dispatcher.service import Dispatcher

__all__ = ["CLIENT_FILES", "ClientSocket", "client_file"]

#: what the dispatcher serves under /client/ (no token: it is code for web pages)
CLIENT_FILES = {
    "index.html": (BUILTIN_DIR / "browser" / "index.html", "text/html; charset=utf-8"),
    "core.mjs": (BUILTIN_DIR / "node" / "core.mjs", "text/javascript; charset=utf-8"),
    "fifoflow.js": (BUILTIN_DIR / "browser" / "fifoflow.js", "text/javascript; charset=utf-8"),
    "demo.html": (BUILTIN_DIR / "browser" / "demo.html", "text/html; charset=utf-8"),
}


def client_file(name: str) -> Response:
    found = CLIENT_FILES.get(name)
    if found is None:
        raise ApiError(
            f"no client file {name!r} (files: {', '.join(sorted(CLIENT_FILES))})",
            status=404,
            code="not_found",
        )
    path, media_type = found
    return Response(path.read_bytes(), 200, {"Content-Type": media_type})


class ClientSocket:
    """A web page's sockets: ``/client/ws`` (its control: hosts to open, injections,
    bye) and ``/client/host`` (one runtime host's frames). Both need the client token
    (``?token=``), refused with close code 4401 and the reason."""

    def __init__(self, dispatcher: Dispatcher, client_token: str | None) -> None:
        self.dispatcher = dispatcher
        self.client_token = client_token

    @staticmethod
    async def _refuse(ws: Any, why: str, code: int = 4401) -> None:
        await ws.send(orjson.dumps({"op": "refused", "message": why}).decode())
        await ws.close(code, why[:120])

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
            await self._refuse(ws, why)
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

        async def notify(message: dict[str, Any]) -> None:
            await ws.send(orjson.dumps(message).decode())

        try:
            client, generation, issued = await clients.page(
                page,
                websocket.args.get("secret"),
                request_host,
                notify=notify,
                runs=websocket.args.get("runs", "1") != "0",
            )
        except PageRefused as exc:
            await self._refuse(ws, str(exc))
            return
        try:
            # ttl: how long the page's runner may stay unheard after a dispatcher
            # restart before it is lost (the page caps its reconnect backoff with it)
            welcome = {
                "op": "welcome",
                "page": page,
                "runner": client.runner_id,
                "ttl": self.dispatcher.config.runner_ttl,
            }
            if issued is not None:
                welcome["secret"] = issued
            await ws.send(orjson.dumps(welcome).decode())
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
                # the id is echoed: only a string or an integer (anything else could be
                # a value the answer cannot carry)
                message_id = message.pop("id", None)
                if isinstance(message_id, bool) or not isinstance(message_id, (str, int)):
                    message_id = None
                if op == "bye":
                    client.stop.set()
                    break
                if op == "inject":
                    answer: dict[str, Any] = {"op": "injected", "id": message_id}
                    try:
                        message.pop("op")
                        p = structure(message, PageInject)
                        self.dispatcher.check_page_inject(client.runner_id, page, p.flow)
                        await self.dispatcher.inject(p.flow, p.module, p.port, p.msgs)
                    except (InvalidParams, NotYourPart) as exc:
                        answer = {
                            "op": "error",
                            "id": message_id,
                            "message": str(exc),
                            "field": exc.field,
                        }
                    except RunnerError as exc:
                        answer = {"op": "error", "id": message_id, "message": str(exc)}
                    await ws.send(orjson.dumps(answer).decode())
                    continue
                name = op[:64] if isinstance(op, str) else f"(a {type(op).__name__})"
                unknown = {
                    "op": "error",
                    "id": message_id,
                    "message": f"unknown op {name!r} (known: inject, bye)",
                }
                await ws.send(orjson.dumps(unknown).decode())
        finally:
            clients.disconnected(client, generation)

    async def host(self) -> None:
        admitted = await self._admit()
        if admitted is None:
            return
        ws, page = admitted
        clients = self.dispatcher.clients
        if not clients.check_secret(page, websocket.args.get("secret")):
            await self._refuse(ws, f"wrong or missing secret of page {page!r}")
            return
        client = clients.get(page)
        name = websocket.args.get("host", "")
        proc = AttachedProcess(name, ws.send)
        if client is None or not client.hosts.offer(proc):
            await self._refuse(ws, f"nobody asked for host {name!r} of page {page!r}", 4404)
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
