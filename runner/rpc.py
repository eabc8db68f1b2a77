"""A JSON-RPC 2.0 peer over any message transport: both ends of a control link call
each other (the runner calls the dispatcher, the dispatcher calls the runner).

Sans-IO-ish: the owner reads messages and hands each to :meth:`RpcPeer.feed`; the peer
sends through the ``send`` callable it was given. Incoming calls run as tasks in the
owner's nursery, so a slow handler never holds up replies to our own calls.

Error handling: a handler's :class:`RunnerError` (or ``ValueError``/``KeyError``/
``TypeError`` for bad params) becomes an error reply; :meth:`call` raises
:class:`RemoteError` with the other side's message; a closed link fails pending calls
with :class:`LinkClosed`. :meth:`call` has no deadline of its own: a caller that
cannot wait forever cancels it (``trio.fail_after``), and the call forgets its id.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from .errors import RunnerError

__all__ = ["LinkClosed", "RemoteError", "RpcPeer"]

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


#: calls from the other side of a link handled at once (see RpcPeer.feed)
MAX_INFLIGHT = 64


class RemoteError(RunnerError):
    code = "remote_error"

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}
        self.remote_code = self.data.get("code")


class LinkClosed(RunnerError):
    code = "link_closed"


class RpcPeer:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        handler: Handler,
        nursery: trio.Nursery,
        *,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self._send = send
        self._handler = handler
        self._nursery = nursery
        # Calls from the other side being handled at once: past it, feed() waits, so the
        # reader stops reading and the sender is slowed (no task or memory per frame).
        self._inflight = trio.Semaphore(max_inflight)
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._lock = trio.Lock()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self._send(orjson.dumps(message).decode())

    async def call(self, method: str, **params: Any) -> Any:
        if self.closed:
            raise LinkClosed("the link is closed")
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._pending[request_id] = send
        try:
            await self.send(
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            )
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise LinkClosed(f"the link closed before {method} was answered") from None
        finally:
            # A call given up (its caller's deadline, a cancel) forgets its id: a late
            # answer is dropped, and nothing is kept for answers that never come.
            self._pending.pop(request_id, None)
        if "error" in reply:
            error = reply["error"]
            raise RemoteError(str(error.get("message")), error.get("data"))
        return reply.get("result")

    async def notify(self, method: str, **params: Any) -> None:
        await self.send({"jsonrpc": "2.0", "method": method, "params": params})

    async def feed(self, raw: str | bytes, *, inline: bool = False) -> None:
        """Take one frame from the other side: a reply to one of our calls, or a call to
        handle (in a task, at most ``max_inflight`` at once; ``inline``: here, before
        returning, as a link does before its peer has said who it is)."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            # an id is echoed in the reply: only one the reply can carry (else no reply)
            message["id"] = request_id = None
        if "method" in message:
            if inline:
                await self._answer(message)
                return
            await self._inflight.acquire()
            self._nursery.start_soon(self._answer_and_release, message)
        elif (channel := self._pending.pop(request_id, None)) is not None:  # type: ignore[arg-type]
            channel.send_nowait(message)

    async def _answer_and_release(self, message: dict[str, Any]) -> None:
        try:
            await self._answer(message)
        finally:
            self._inflight.release()

    async def _answer(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        params = message.get("params") or {}
        try:
            if not isinstance(message["method"], str):
                raise TypeError("method must be a string")
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
            result = await self._handler(message["method"], params)
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except RunnerError as exc:
            reply = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": -32000, "message": str(exc), "data": {"code": exc.code}},
            }
        except (KeyError, TypeError, ValueError) as exc:
            reply = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {
                    "code": -32602,
                    "message": f"bad params for {_name(message.get('method'))}: {exc!r}",
                },
            }
        if request_id is not None and not self.closed:
            try:
                await self.send(reply)
            except Exception:  # the link went away while we answered: nothing to tell
                self.close()

    def close(self) -> None:
        self.closed = True
        for channel in self._pending.values():
            channel.close()
        self._pending.clear()


def _name(method: Any) -> str:
    """A method's name for a message (never the repr of a deep value someone sent)."""
    return method[:64] if isinstance(method, str) else f"(a {type(method).__name__})"
