"""The FBP protocol's WebSocket endpoint: ``ws://host:port/``, subprotocol ``noflo``.

Where flow-based IDEs (noflo-ui/Flowhub) and tools (fbp-test, fbp-spec, fbp-client)
connect. A thin layer: every text frame goes to :meth:`FbpRuntime.connection`, every
message it sends goes out as a text frame. The secret is checked per message by the
session (the protocol carries it in each message, not in the handshake). A plain GET
of ``/`` says what the port is for.

Resource handling: :func:`serve_fbp` owns its hypercorn server and the runtime's event
task, in one nursery; it returns when ``shutdown`` is set (or it is cancelled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hypercorn.config
import hypercorn.trio
import trio
from quart import Response, websocket
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from .session import FbpRuntime

__all__ = ["SUBPROTOCOL", "create_fbp_app", "serve_fbp"]

SUBPROTOCOL = "noflo"


def create_fbp_app(fbp: FbpRuntime) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.route("/")
    async def _about() -> Response:
        return Response(
            "fifoflow FBP protocol runtime: connect with a WebSocket to this URL, "
            f"subprotocol {SUBPROTOCOL!r}\n",
            content_type="text/plain",
        )

    @app.websocket("/")
    async def _endpoint() -> None:
        wanted = websocket.requested_subprotocols
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in wanted else None)
        await fbp.connection(websocket.receive, websocket.send)

    return app


async def serve_fbp(
    fbp: FbpRuntime,
    bind: str,
    *,
    shutdown: trio.Event,
    max_message: int,
    certfile: str | None = None,
    keyfile: str | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoint on ``bind`` (``host:port``); ``task_status`` gets its URLs."""
    hc = hypercorn.config.Config()
    hc.bind = [bind]
    hc.websocket_max_message_size = max_message
    hc.graceful_timeout = 1.0
    hc.accesslog = None
    hc.errorlog = None
    if certfile and keyfile:
        hc.certfile, hc.keyfile = certfile, keyfile
    async with trio.open_nursery() as nursery:
        await nursery.start(fbp.run)
        async with trio.open_nursery() as server:
            urls = await server.start(
                lambda task_status: hypercorn.trio.serve(
                    create_fbp_app(fbp), hc, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            )
            task_status.started([u.replace("http", "ws", 1) + "/" for u in urls])
        nursery.cancel_scope.cancel()
