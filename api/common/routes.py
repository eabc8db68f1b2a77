"""The route table: each REST route and each JSON-RPC method written once, typed.

A :class:`Route` says where it is (method, path), what it takes (a query model, a body
model: attrs classes), what it answers (a type) and which errors it documents; its
``view`` gets the core object and a :class:`Call` with the structured inputs and calls
the core directly. :func:`add_routes` turns a table into quart rules, and
``api/common/openapi.py`` turns the same table into the OpenAPI document, so the shape
of the API is written once. A :class:`Method` is the same for JSON-RPC: a params model
and a function.

Inputs are structured by the one converter (``flows/converter.py``); a failure is an
:class:`~.errors.InvalidParams` naming the field (``problems`` lists every one).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import cattrs
from quart import Blueprint, Response, request

from fifoflow.flows.converter import make_converter, problems

from .errors import InvalidParams
from .http import json_response, read_json, refuse_unknown_query

__all__ = [
    "CONVERTER",
    "Answer",
    "Call",
    "Method",
    "Route",
    "add_routes",
    "query_names",
    "structure",
    "unstructure",
]

CONVERTER = make_converter()


@attrs.frozen
class Answer:
    """A view's answer when its status is not the route's usual one."""

    value: Any
    status: int


@attrs.frozen
class Call:
    """What a view gets: path parameters, the structured query and body."""

    path: dict[str, Any]
    query: Any = None
    body: Any = None


@attrs.frozen
class Route:
    method: str
    #: OpenAPI form: "/flows/{flowId}/modules/{moduleId}/queue/{index}"
    path: str
    #: the operationId (and, where the route has one, the JSON-RPC method's name)
    name: str
    summary: str
    view: Callable[[Any, Call], Awaitable[Any]]
    #: what a 2xx answer holds (an attrs class, list[...], dict[...], Any)
    result: Any = Any
    result_doc: str = "ok"
    status: int = 200
    #: other 2xx answers: status -> description (same type)
    also: dict[int, str] = attrs.field(factory=dict)
    query: type | None = None
    body: Any = None
    body_required: bool = True
    #: False: the view gets the body as a JSON object and checks it itself (flow
    #: documents: parse_flow names every problem the way flow files get them)
    parse_body: bool = True
    #: error statuses the route can answer (401 is added for every non-public route)
    errors: tuple[int, ...] = ()
    #: path parameters: name -> (type, description)
    params: dict[str, tuple[type, str]] = attrs.field(factory=dict)
    public: bool = False
    description: str | None = None
    #: the media type of a 2xx answer (a view answering another than JSON returns a
    #: quart Response itself: GET /runs/{runId}/outputs streams JSON lines)
    media: str = "application/json"


@attrs.frozen
class Method:
    """A JSON-RPC method: named params structured into ``params``, then ``call``."""

    name: str
    params: type
    call: Callable[[Any, Any], Awaitable[Any]]


def structure(data: Any, model: Any, prefix: str = "") -> Any:
    """``data`` as ``model``, or an :class:`InvalidParams` naming the first field at
    fault (an unknown key is named itself) and listing every problem."""
    try:
        return CONVERTER.structure(data, model)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        found = problems(exc) if isinstance(exc, cattrs.BaseValidationError) else []
        if not found:
            raise InvalidParams(f"{prefix or 'params'}: {exc}", field=prefix or None) from None
        first = found[0]
        field = first.path
        extra = re.match(r"unknown field\(s\): ([^,\s]+)", first.message)
        if extra:
            field = f"{field}.{extra.group(1)}" if field else extra.group(1)
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        message = "; ".join(
            f"{prefix + '.' if prefix and p.path else prefix}{p.path}: {p.message}"
            if (p.path or prefix)
            else p.message
            for p in found
        )
        raise InvalidParams(
            message,
            field=field or None,
            problems=[{"path": p.path, "message": p.message} for p in found],
        ) from None


def unstructure(result: Any) -> Any:
    """A model (or a list of them) as JSON-ready data; plain data is left as it is (a
    walk over a large answer that is JSON already would only cost time)."""
    if attrs.has(type(result)) or (
        isinstance(result, list) and result and attrs.has(type(result[0]))
    ):
        return CONVERTER.unstructure(result)
    return result


def query_names(model: type | None) -> list[str]:
    return [f.name for f in attrs.fields(model)] if model is not None else []


def _bare(t: Any) -> Any:
    """``Annotated[int, ...] | None`` -> ``int``."""
    while True:
        if typing.get_origin(t) is typing.Annotated:
            t = typing.get_args(t)[0]
            continue
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            t = args[0]
            continue
        return t


def _query(model: type) -> Any:
    hints = typing.get_type_hints(model, include_extras=True)
    values: dict[str, Any] = {}
    for name, text in request.args.items():
        kind = _bare(hints.get(name))
        if kind is int:
            try:
                values[name] = int(text)
            except ValueError:
                raise InvalidParams(
                    f"{name} must be an integer, got {text!r}", field=name
                ) from None
        elif kind is bool:
            if text not in ("true", "false"):
                raise InvalidParams(f"{name} must be true or false, got {text!r}", field=name)
            values[name] = text == "true"
        else:
            values[name] = text
    return structure(values, model)


async def _body(route: Route) -> Any:
    if route.body is None:
        return None
    if not route.body_required and not await request.get_data(cache=True):
        return None
    data = await read_json()
    if not isinstance(data, dict):
        raise InvalidParams("the body must be a JSON object", field="body")
    return structure(data, route.body) if route.parse_body else data


def _rule(route: Route) -> str:
    def converter(match: re.Match[str]) -> str:
        name = match.group(1)
        kind = route.params.get(name, (str, ""))[0]
        return f"<int:{name}>" if kind is int else f"<{name}>"

    return re.sub(r"\{(\w+)\}", converter, route.path)


def add_routes(bp: Blueprint, target: Any, routes: list[Route]) -> None:
    """Register every route of the table on ``bp``, each calling its view on ``target``."""
    for route in routes:

        async def view(route: Route = route, **path: Any) -> Response:
            refusal = refuse_unknown_query(set(query_names(route.query)))
            if refusal is not None:
                return refusal
            query = _query(route.query) if route.query is not None else None
            call = Call(path=path, query=query, body=await _body(route))
            result = await route.view(target, call)
            if isinstance(result, Response):
                return result
            status = route.status
            if isinstance(result, Answer):
                result, status = result.value, result.status
            return json_response(unstructure(result), status)

        bp.add_url_rule(_rule(route), route.name, view, methods=[route.method.upper()])
