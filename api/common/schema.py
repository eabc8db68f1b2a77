"""JSON Schema of the API's models, for the OpenAPI documents.

The models are attrs classes (``api/*/models.py``) whose constraints are written once, as
``Annotated[T, msgspec.Meta(...)]``: the one converter (``flows/converter.py``) enforces
them and msgspec's schema generator describes them. msgspec reads attrs classes, enums,
``Literal``, unions and ``Annotated`` and writes JSON Schema 2020-12, which is what
OpenAPI 3.1 uses; we only tidy its output (no titles, no defaults: a default is the
server's business, and ``null`` defaults of optional fields would read as examples).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["JSON", "Message", "NonEmpty", "collect_schemas", "not_null", "ref"]

JSON = "application/json"
REF = "#/components/schemas/{name}"

#: any JSON value but null (null means "send nothing" to a module)
Message = Annotated[
    Any,
    msgspec.Meta(extra_json_schema={"not": {"type": "null"}}, description="any JSON value but null"),
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _tidy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _tidy(v) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def collect_schemas(types: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The schema of each of ``types`` (``$ref`` for named ones) and the components they
    need, named by class name."""
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    return [_tidy(s) for s in schemas], _tidy(components)


def not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | None`` as just ``T``: a field that may be left out but is never null."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        return rest[0] if len(rest) == 1 else {"anyOf": rest}
    return schema
