"""One builder for both OpenAPI 3.1 documents (runner, dispatcher): the route table and
its models in, the document out. Nothing about a route's shape is written here or twice:
paths, parameters, bodies and answers come from :class:`~.routes.Route` entries and
their attrs models (JSON Schema by msgspec, ``api/common/schema.py``); what is not HTTP
(WebSockets) is passed in as extra path items.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import attrs

from .routes import Route, query_names
from .schema import JSON, collect_schemas, not_null, ref

__all__ = ["ERROR_SCHEMA", "build_document", "json_content"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the parameter at fault"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {
                            "path": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def json_content(schema: dict[str, Any], description: str, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _closed(schema: Any, components: dict[str, Any], seen: set[str]) -> None:
    """Request bodies are structured with unknown keys refused: say so in their schemas
    (and in every component they use)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name not in seen and name in components:
                seen.add(name)
                _closed(components[name], components, seen)
            return
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _closed(value, components, seen)
    elif isinstance(schema, list):
        for value in schema:
            _closed(value, components, seen)


def build_document(
    *,
    title: str,
    version: str,
    description: str,
    routes: list[Route],
    errors: dict[int, str],
    extra_paths: dict[str, Any] | None = None,
    extra_schemas: dict[str, Any] | None = None,
    tweak: Any = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``. ``errors`` describes each error status;
    ``tweak(components)`` may adjust generated component schemas that depend on the
    server (the runtimes it knows)."""
    types: list[Any] = []
    for route in routes:
        types.append(route.result)
        if route.body is not None:
            types.append(route.body)
        if route.query is not None:
            types.append(route.query)
    generated, components = collect_schemas(types)
    schema_of = iter(generated)
    components = {"Error": ERROR_SCHEMA, **components, **(extra_schemas or {})}
    if tweak is not None:
        tweak(components)
    bodies: list[Any] = []
    paths: dict[str, Any] = {}
    for route in routes:
        result = next(schema_of)
        body = next(schema_of) if route.body is not None else None
        query = next(schema_of) if route.query is not None else None
        responses: dict[str, Any] = {
            str(route.status): json_content(result, route.result_doc, route.media)
        }
        for status, text in route.also.items():
            responses[str(status)] = json_content(result, text)
        for status in sorted({*route.errors, *(() if route.public else (401,))}):
            responses[str(status)] = json_content(ref("Error"), errors[status])
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "responses": responses,
        }
        if route.description:
            operation["description"] = route.description
        if route.public:
            operation["security"] = []
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": route.params.get(name, (str, name))[1],
                "schema": {"type": "integer", "minimum": 0}
                if route.params.get(name, (str, ""))[0] is int
                else {"type": "string"},
            }
            for name in re.findall(r"\{(\w+)\}", route.path)
        ]
        if query is not None:
            model = components[query["$ref"].rsplit("/", 1)[1]]
            fields = {f.name: f for f in attrs.fields(typing.cast("type", route.query))}
            for name in query_names(route.query):
                prop = dict(model["properties"][name])
                doc = prop.pop("description", None) or fields[name].metadata.get("doc", name)
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in model.get("required", ()),
                        "description": doc,
                        "schema": not_null(prop),
                    }
                )
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            bodies.append(body)
            operation["requestBody"] = {
                "required": route.body_required,
                "content": {JSON: {"schema": body}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    for path, items in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(items)
    seen: set[str] = set()
    for body in bodies:
        _closed(body, components, seen)
    for name in [n for n in components if n.endswith("Query")]:
        del components[name]  # query models are documented as parameters
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
