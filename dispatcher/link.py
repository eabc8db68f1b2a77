"""One runner's control link, the dispatcher's side: JSON-RPC both ways (``runner/rpc.py``).

The HTTP layer accepts the WebSocket (``GET /link``) and hands :meth:`RunnerLink.serve`
the socket's ``receive`` and ``send``; everything a runner may say is handled here,
against the :class:`~fifoflow.dispatcher.service.Dispatcher`. A runner authenticates
inside the link (``hello`` with its id and secret, after a one-time ``register``), never
with the operator token.

Resource handling: the peer and the tasks it starts live in :meth:`serve`'s nursery;
when the socket closes the runner is detached from the dispatcher and they end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from fifoflow.runner.rpc import RpcPeer

from .service import DispatcherError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .service import Dispatcher

__all__ = ["RunnerLink"]


class RunnerLink:
    """The calls a runner makes: register, hello, hardware, ready, heartbeat, signoff,
    relay (messages for another runner's part), paused, snapshot."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.runner_id: str | None = None
        self.peer: RpcPeer | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(
        self,
        receive: Callable[[], Awaitable[str | bytes]],
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            peer = self.peer = RpcPeer(send, self.handle, nursery)
            try:
                while True:
                    peer.feed(await receive())
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
