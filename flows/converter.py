"""The one cattrs converter of fifoflow: strict JSON in, attrs models out.

Everything that comes from outside (flow documents, Runner API and dispatcher API
bodies, query parameters) is structured by :func:`make_converter` and nothing else, so
every door is equally strict and every failure names its path (see :func:`problems`):

- no coercion: a string is not a number, ``true`` is not an integer, ``{}`` or ``"ab"``
  is not an array, an array is not an object;
- unknown keys are errors (``forbid_extra_keys``);
- ``T | None`` takes ``null`` or a ``T``, and says which ``T`` it wanted;
- ``Annotated[T, Meta(ge=0, min_length=1, pattern=..., ...)]`` checks the constraints
  after structuring ``T``. The same ``Meta`` (``msgspec.Meta``, read by duck typing: the
  cores do not import msgspec) is what the OpenAPI documents are generated from, so a
  limit is written once and both documented and enforced.
- enums take one of their values and list them otherwise.
- a free-form JSON value (``Any``, ``list[Any]`` items, ``dict[str, Any]``: messages,
  module state and config) must be one every later stage can encode: nested at most
  ``MAX_DEPTH`` levels, finite numbers, valid strings (``flows/values.py``); a failure
  names the field and, where it helps, the place inside it
  (``msgs[0]: nested deeper than 100 levels``).
"""

from __future__ import annotations

import enum
import math
import re
import typing
from typing import Any

import attrs
import cattrs
from cattrs._compat import is_annotated
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.v import format_exception

from .errors import Problem
from .limits import MAX_DEPTH
from .values import value_problem

__all__ = ["Invalid", "Limit", "json_type", "make_converter", "problems"]

_NONE = type(None)
_DEPTH = MAX_DEPTH


def json_type(value: Any) -> str:
    """How a JSON value's type reads in a message: 'an object', 'a string', 'null', ..."""
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        _NONE: "null",
    }.get(type(value), type(value).__name__)


@attrs.frozen
class Limit:
    """A constraint for ``Annotated[T, Limit(...)]`` in the cores, read like
    ``msgspec.Meta`` (same names) by :func:`make_converter`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str | None = None


class Invalid(ValueError):
    """A value that does not fit its type; the message is meant for the user as it is."""


# Separates the place inside a free-form value from the message (see problems()).
_INSIDE = "\x1f"


def _check_json(value: Any) -> Any:
    """``value`` if every stage can encode it (flows/values.py), else :class:`Invalid`."""
    problem = value_problem(value)
    if problem is not None:
        inside, message = problem
        raise Invalid(f"{inside}{_INSIDE}{message}" if inside else message)
    return value


def _check_items(value: list[Any], t: Any) -> list[Any]:
    """Each item of a ``list[Any]`` checked as a value of its own, failures by index."""
    if value_problem(value, _DEPTH + 1) is None:  # the usual case: one walk, no copies
        return value
    errors = []
    for index, item in enumerate(value):
        try:
            _check_json(item)
        except Invalid as exc:
            exc.__notes__ = [IterableValidationNote(f"item @ index {index}", index, Any)]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {t!r}", errors, t)
    return value


def _check(value: Any, meta: Any) -> None:
    """The constraints of one ``msgspec.Meta``-like object (attributes left None are unset)."""

    def limit(name: str) -> Any:
        return getattr(meta, name, None)

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {value}")
        for name, ok, words in (
            ("ge", lambda v, b: v >= b, "at least"),
            ("gt", lambda v, b: v > b, "more than"),
            ("le", lambda v, b: v <= b, "at most"),
            ("lt", lambda v, b: v < b, "less than"),
        ):
            bound = limit(name)
            if bound is not None and not ok(value, bound):
                raise Invalid(f"must be {words} {bound}, got {value}")
    if isinstance(value, (str, list, dict)):
        unit = "characters" if isinstance(value, str) else "items"
        low, high = limit("min_length"), limit("max_length")
        if low is not None and len(value) < low:
            raise Invalid("must not be empty" if low == 1 else f"must have at least {low} {unit}")
        if high is not None and len(value) > high:
            raise Invalid(f"must have at most {high} {unit}, got {len(value)}")
    pattern = limit("pattern")
    if pattern is not None and isinstance(value, str) and not _matches(pattern, value):
        what = limit("description")
        raise Invalid(
            f"{value!r} is not {what} ({pattern})"
            if what
            else f"{value!r} does not match {pattern}"
        )


def _matches(pattern: str, value: str) -> bool:
    """JSON Schema's pattern (a search), except that a closing ``$`` is the end of the
    string: in Python's ``re`` it also matches before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, value) is not None


def make_converter() -> cattrs.Converter:
    """A new converter with fifoflow's strict rules (see the module docstring)."""
    converter = _make_orjson_converter(forbid_extra_keys=True)

    def structure_float(value: Any, _: type) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"expected a number, got {json_type(value)}")
        if not math.isfinite(value):
            raise Invalid(f"expected a finite number, got {value}")
        return float(value)

    def structure_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {json_type(value)}")
        return value

    def structure_int(value: Any, _: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {json_type(value)}")
        return value

    def structure_bool(value: Any, _: type) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected a boolean, got {json_type(value)}")
        return value

    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(str, structure_str)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(bool, structure_bool)

    def attrs_hook(t: Any) -> Any:
        base = make_dict_structure_fn(t, converter, _cattrs_forbid_extra_keys=True)

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"expected an object, got {json_type(value)}")
            return base(value, t)

        return structure

    def is_list(t: Any) -> bool:
        return typing.get_origin(t) in (list, tuple) and not is_annotated(t)

    def list_hook(t: Any) -> Any:
        # Arrays must be arrays: cattrs alone would take any iterable ({} or "ab").
        base = list_structure_factory(t, converter) if typing.get_origin(t) is list else None
        item = typing.get_args(t)[0] if typing.get_args(t) else Any

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, list):
                raise Invalid(f"expected an array, got {json_type(value)}")
            if item is Any:
                value = _check_items(value, t)
            if base is not None:
                return base(value, t)
            return tuple(converter.structure(v, item) for v in value)

        return structure

    def is_dict(t: Any) -> bool:
        return t is dict or typing.get_origin(t) is dict

    def dict_hook(t: Any) -> Any:
        args = typing.get_args(t)
        base = mapping_structure_factory(t, converter) if args and args[1] is not Any else None

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(f"expected an object, got {json_type(value)}")
            return base(value, t) if base is not None else _check_json(value)

        return structure

    def is_any(t: Any) -> bool:
        return t is Any

    def any_hook(t: Any) -> Any:
        return lambda value, _: _check_json(value)

    def is_optional(t: Any) -> bool:
        args = typing.get_args(t)
        return typing.get_origin(t) in (typing.Union, _union_type()) and _NONE in args

    def optional_hook(t: Any) -> Any:
        rest = [a for a in typing.get_args(t) if a is not _NONE]
        inner = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007

        def structure(value: Any, _: Any) -> Any:
            return None if value is None else converter.structure(value, inner)

        return structure

    def annotated_hook(t: Any) -> Any:
        base, *metas = typing.get_args(t)

        def structure(value: Any, _: Any) -> Any:
            result = converter.structure(value, base)
            for meta in metas:
                _check(result, meta)
            return result

        return structure

    def structure_enum(value: Any, t: type[enum.Enum]) -> Any:
        try:
            return t(value)
        except ValueError:
            known = ", ".join(repr(m.value) for m in t)
            raise Invalid(f"expected one of {known}, got {value!r}") from None

    # By class, like the scalars; StrEnum and IntEnum by name, or str/int would take them.
    for kind in (enum.Enum, enum.StrEnum, enum.IntEnum):
        converter.register_structure_hook(kind, structure_enum)

    converter.register_structure_hook_factory(attrs.has, attrs_hook)
    converter.register_structure_hook_factory(is_annotated, annotated_hook)
    converter.register_structure_hook_factory(is_optional, optional_hook)
    converter.register_structure_hook_factory(is_list, list_hook)
    converter.register_structure_hook_factory(is_dict, dict_hook)
    converter.register_structure_hook_factory(is_any, any_hook)
    return converter


def _union_type() -> Any:
    import types

    return types.UnionType


def _format(exc: BaseException, t: type | None) -> str:
    if isinstance(exc, Invalid):
        return str(exc)
    return format_exception(exc, t)


def _path(raw: str) -> str:
    # "$.modules[0].runtime" -> "modules[0].runtime"
    return raw[2:] if raw.startswith("$.") else raw.lstrip("$")


def problems(exc: Exception) -> list[Problem]:
    """Every failure inside a cattrs structuring error, each with the path of its field."""
    found = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format):
        message, _, path = line.rpartition(" @ ")
        inside, _, rest = message.rpartition(_INSIDE)
        if inside:
            # a place inside a free-form value: "config" + "a.b[2]"
            message = rest
            path = path + inside if inside.startswith("[") else f"{path}.{inside}"
        message = message.replace("required field missing", "missing required field")
        message = re.sub(r"invalid value for type, expected (\w+)", r"expected \1", message)
        message = re.sub(r"^invalid (?:value|type) \((.*)\)$", r"\1", message)
        if message.startswith("extra fields found"):
            message = "unknown field(s): " + message.split("(", 1)[-1].rstrip(")")
        found.append(Problem(_path(path), message))
    return found
