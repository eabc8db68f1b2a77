"""Small helpers shared by the routes: JSON in, JSON out."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

from fifoflow.api.common.errors import BadRequest, InvalidParams

__all__ = ["json_response", "read_json"]


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
