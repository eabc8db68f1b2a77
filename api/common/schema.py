"""JSON Schema of the API's models, for the OpenAPI documents.

The models are attrs classes (``api/*/models.py``) whose constraints are written once, as
``Annotated[T, msgspec.Meta(...)]``: the one converter (``flows/converter.py``) enforces
them and msgspec's schema generator describes them. msgspec reads attrs classes, enums,
``Literal``, unions and ``Annotated`` and writes JSON Schema 2020-12, which is what
OpenAPI 3.1 uses; we only tidy its output (no titles, no defaults: a default is the
server's business, and ``null`` defaults of optional fields would read as examples).

The cores do not import msgspec: their models (``runner/runs/model.py``) write constraints
as ``Annotated[T, Limit(...)]`` (``flows/converter.py``), which msgspec does not read.
:func:`collect_schemas` adds them to the generated schemas itself (:func:`_limits`), so a
core model's limits are documented as well as enforced.
"""

from __future__ import annotations

import types as pytypes
import typing
from typing import Annotated, Any

import attrs
import msgspec

from fifoflow.flows.converter import Limit

__all__ = ["JSON", "Message", "NonEmpty", "collect_schemas", "not_null", "ref"]

JSON = "application/json"
REF = "#/components/schemas/{name}"

#: any JSON value but null (null means "send nothing" to a module)
Message = Annotated[
    Any,
    msgspec.Meta(
        extra_json_schema={"not": {"type": "null"}}, description="any JSON value but null"
    ),
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
    for cls in _attrs_classes(types):
        component = components.get(cls.__name__)
        if component is None or "properties" not in component:
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        for field in attrs.fields(cls):
            prop = component["properties"].get(field.name)
            if prop is not None and field.name in hints:
                _limits(prop, hints[field.name])
    return [_tidy(s) for s in schemas], _tidy(components)


def _attrs_classes(types: list[Any]) -> list[type]:
    """Every attrs class reachable from ``types`` (through fields, lists, unions...)."""
    found: dict[type, None] = {}

    def walk(t: Any) -> None:
        if isinstance(t, type) and attrs.has(t):
            if t in found:
                return
            found[t] = None
            for hint in typing.get_type_hints(t, include_extras=True).values():
                walk(hint)
            return
        for arg in typing.get_args(t):
            walk(arg)

    for t in types:
        walk(t)
    return list(found)


#: Limit's names -> JSON Schema's (lengths depend on the schema's type)
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
_LENGTHS = {
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}


def _limits(schema: dict[str, Any], hint: Any) -> None:
    """Add the ``Limit`` constraints found in ``hint`` to ``schema`` (msgspec's schema of
    the same type), following ``Annotated``, optional unions, lists and dicts."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *metas = typing.get_args(hint)
        _limits(schema, base)
        for meta in metas:
            if isinstance(meta, Limit):
                _apply(schema, meta)
        return
    if origin in (typing.Union, pytypes.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        schemas = [s for s in schema.get("anyOf", [schema]) if s != {"type": "null"}]
        for option, sub in zip(options, schemas, strict=False):
            _limits(sub, option)
        return
    if origin is list and "items" in schema:
        _limits(schema["items"], typing.get_args(hint)[0])
    elif origin is dict and isinstance(schema.get("additionalProperties"), dict):
        _limits(schema["additionalProperties"], typing.get_args(hint)[1])


def _apply(schema: dict[str, Any], limit: Limit) -> None:
    for name, key in _BOUNDS.items():
        value = getattr(limit, name)
        if value is not None:
            schema[key] = value
    low, high = _LENGTHS.get(schema.get("type", ""), (None, None))
    if low and limit.min_length is not None:
        schema[low] = limit.min_length
    if high and limit.max_length is not None:
        schema[high] = limit.max_length
    if limit.pattern is not None:
        schema["pattern"] = limit.pattern
    if limit.description is not None:
        schema.setdefault("description", limit.description)


def not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | None`` as just ``T``: a field that may be left out but is never null."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        return rest[0] if len(rest) == 1 else {"anyOf": rest}
    return schema
