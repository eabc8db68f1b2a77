"""What both apps share over HTTP: JSON in and out, the bearer token, JSON errors."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import orjson
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from .auth import check_token
from .errors import ApiError, BadRequest, InvalidParams, Unauthorized, from_exception

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "bearer",
    "create_json_app",
    "json_response",
    "read_json",
    "refuse_unknown_query",
    "unauthorized",
]

log = logging.getLogger("fifoflow.api")

#: how long an early answer waits for the rest of a request body before closing
BODY_DRAIN_SECONDS = 10.0


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


async def read_json() -> Any:
    """The request body as JSON; a :class:`BadRequest` that says where the syntax breaks."""
    data = await request.get_data(cache=False)
    if not data:
        raise BadRequest("the request needs a JSON body", field="body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from None


def refuse_unknown_query(allowed: set[str]) -> Response | None:
    """A 422 naming the query parameters this route does not take, or None."""
    unknown = sorted(set(request.args) - allowed)
    if not unknown:
        return None
    error = InvalidParams(
        f"unknown query parameter(s): {', '.join(unknown)} "
        f"(allowed here: {', '.join(sorted(allowed)) or 'none'})",
        field=unknown[0],
    )
    return json_response(error.body(), error.status)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None if there is none)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def unauthorized(provided: str | None, where: str) -> Response:
    """The 401 for a missing or wrong token; ``where`` says where the right one is."""
    reason = "missing bearer token" if provided is None else "wrong token"
    error = Unauthorized(
        f"{reason}: send 'Authorization: Bearer <token>' (the token is in {where})",
        field="Authorization",
    )
    return json_response(error.body(), 401, {"WWW-Authenticate": 'Bearer realm="fifoflow"'})


def create_json_app(
    name: str,
    *,
    token: str,
    token_where: str,
    max_body: int,
    public: Callable[[str | None], bool] = lambda endpoint: False,
) -> QuartTrio:
    """A quart-trio app whose every route needs the bearer token (but the ``public``
    endpoints) and whose every error is the JSON error body of :mod:`.errors`, quart's
    own 404/405/413 included. WebSockets authenticate themselves (each knows how)."""
    app = QuartTrio(name, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.before_request
    async def _auth() -> Response | None:
        if public(request.endpoint):
            return None
        provided = bearer(request.headers.get("Authorization"))
        if not check_token(provided, token):
            return unauthorized(provided, token_where)
        return None

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            status, "http_error"
        )
        message, field = exc.description or exc.name, None
        headers = None
        if status == 413:
            message = f"the request body is larger than the limit of {max_body} bytes"
            field = "body"
            headers = {"Connection": "close"}  # what is left of the body is not wanted
        error = ApiError(message, status=status, code=code, field=field)
        return json_response(error.body(), status, headers)

    @app.errorhandler(Exception)
    async def _error(exc: Exception) -> Response:
        try:
            error = from_exception(exc)
        except TypeError:
            log.exception("unexpected error in %s %s", request.method, request.path)
            error = ApiError(
                f"internal error: {type(exc).__name__}: {exc}", status=500, code="internal"
            )
        return json_response(error.body(), error.status)

    app.asgi_app = _FinishBody(app.asgi_app, max_body)  # type: ignore[method-assign]
    return app


class _FinishBody:
    """ASGI wrapper: the rest of a request body the app did not read is read and
    dropped before its answer ends (at most ``max_body`` bytes and
    :data:`BODY_DRAIN_SECONDS`: a client that sends more loses its connection).

    Why: an answer sent before the body was read (401, 404, 405, 413, 422 on a query)
    leaves the body's chunks in hypercorn's queue to the app; once the queue is full,
    hypercorn waits on it forever and the next request on that keep-alive connection
    never gets an answer."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        finished = trio.Event()

        async def tracked() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                finished.set()
            return message

        async def pull(budget: float) -> None:
            read = 0
            while read <= budget and not finished.is_set():
                read += len((await tracked()).get("body", b""))

        async def until_finished(budget: float) -> None:
            # quart may be reading too, and take the last message: wait for the flag, not
            # only for a message
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    await finished.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait)
                await pull(budget)
                nursery.cancel_scope.cancel()

        async def finishing_send(message: Any) -> None:
            if message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            # The answer's last chunk. Before it: read what is left of the body, so the
            # connection can serve the next request.
            with trio.move_on_after(BODY_DRAIN_SECONDS):
                await until_finished(self.max_body)
            async with trio.open_nursery() as nursery:
                if not finished.is_set():
                    # Given up (too much, or too slow): sending it ends the stream, and
                    # hypercorn then puts a disconnect in the full queue; take from the
                    # queue until it is in, and hypercorn closes the connection.
                    nursery.start_soon(until_finished, math.inf)
                await send(message)
                nursery.cancel_scope.cancel()

        await self.app(scope, tracked, finishing_send)
