"""What the clients raise, and how a server's error answer becomes one::

    ApiError        the server answered with an error: its status, code, message, field
                    and problems (the class is api/common/errors.py's, as the server's)
    ConnectError    nothing answered at the URL, or the server closed a WebSocket under a call

Trio nurseries wrap what their tasks raise in exception groups; ``leaves`` (the runner's
one walk over them, re-exported here) flattens one into the exceptions it holds, so a
caller can raise or report the one that matters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from fifoflow.api.common.errors import ApiError
from fifoflow.runner.errors import leaves

if TYPE_CHECKING:
    import httpx

__all__ = ["ApiError", "ConnectError", "api_error", "leaves", "transport_reason"]


class ConnectError(Exception):
    """The server could not be reached at its URL."""


def api_error(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` an error answer (``{"error": {...}}``) stands for."""
    try:
        error = orjson.loads(response.content)["error"]
        return ApiError(
            error["message"],
            status=response.status_code,
            code=error.get("code"),
            field=error.get("field"),
            problems=error.get("problems"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = response.text[:200]
        return ApiError(f"HTTP {response.status_code}: {text}", status=response.status_code)


def transport_reason(exc: BaseException) -> str:
    """Why a request did not get through: the first cause with a message (httpx's async
    transport errors may have none of their own, e.g. a failed certificate check)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if str(current):
            return str(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return type(exc).__name__
