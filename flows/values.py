"""What a JSON value from outside must be so that every later stage can handle it.

orjson parses JSON nested up to 1024 levels but encodes only up to 254, and every answer,
event, queue view and checkpoint wraps a message in a few more levels: a message nested
~250 deep was accepted at a door and then broke every place that had to encode it (the
runner's ``/debug``, ``/queues``, ``/step`` answered 500, subscribers were disconnected,
the checkpoint killed the runner). So every door checks values against one rule,
:func:`value_problem`, with the limit of ``flows/limits.py``:

- nested at most :data:`~.limits.MAX_DEPTH` levels (``[]`` and ``{}`` are one level);
- numbers finite (orjson refuses ``NaN``/``Infinity`` when parsing, writes them as
  ``null`` when encoding: Python values from elsewhere must not carry them in);
- integers within 64 bits, object keys strings, strings valid UTF-8 (no lone surrogates),
  and nothing but dict, list, str, int, float, bool and None.

Values parsed by orjson already satisfy all but the depth; :func:`shallow` is the
cheap test on raw bytes that lets a door skip the walk for them (no more brackets than
the limit: no value inside can be nested deeper).
"""

from __future__ import annotations

import enum
import math
import re
from typing import Any

from .limits import MAX_DEPTH

__all__ = ["BadValue", "check_value", "shallow", "value_problem"]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class BadValue(ValueError):
    """A value no later stage could encode; ``path`` is where inside it (``""``: itself)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class _Found(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.parts: list[str] = []


def _walk(value: Any, room: int) -> None:
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _Found("a string that is not valid UTF-8 (a lone surrogate)") from None
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Found("an integer out of the 64-bit range")
        return
    if kind is float:
        if not math.isfinite(value):
            raise _Found(f"not a finite number ({value})")
        return
    if value is None or kind is bool:
        return
    if kind is dict:
        if room == 0:
            raise _Found(f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if type(key) is not str:
                raise _Found(f"an object key that is not a string ({key!r})")
            try:
                _walk(item, room - 1)
            except _Found as found:
                found.parts.append(f".{key}")
                raise
        return
    if kind is list:
        if room == 0:
            raise _Found(f"nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            try:
                _walk(item, room - 1)
            except _Found as found:
                found.parts.append(f"[{index}]")
                raise
        return
    # subclasses (enums of str or int among them) as what they are; orjson writes them
    for base in (str, int, float, dict, list):
        if isinstance(value, base):
            _walk(base(value), room)
            return
    if isinstance(value, enum.Enum):
        _walk(value.value, room)
        return
    raise _Found(f"not a JSON value ({kind.__name__})")


def value_problem(value: Any, depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """``(path inside the value, what is wrong)`` for the first problem, or None.

    The walk never goes deeper than ``depth`` + 1 levels, so a value nested thousands of
    levels deep costs no more than one at the limit (and no Python recursion error)."""
    try:
        _walk(value, depth)
    except _Found as found:
        path = "".join(reversed(found.parts))
        if found.message.startswith("nested deeper"):
            # where the nesting starts to matter is noise: say it of the value itself
            path = ""
        return path.lstrip("."), found.message
    return None


def check_value(value: Any, depth: int = MAX_DEPTH) -> None:
    """Raise :class:`BadValue` if ``value`` breaks the rule of this module."""
    problem = value_problem(value, depth)
    if problem is not None:
        raise BadValue(*problem)


def shallow(raw: bytes | str, depth: int = MAX_DEPTH) -> bool:
    """True if JSON text ``raw`` cannot hold a value nested deeper than ``depth``.

    First the count of opening brackets (no more than ``depth``: nothing can be nested
    deeper); else the nesting itself, measured without parsing: strings are cut out, the
    brackets left are paired up innermost first, one level per pass, ``depth`` passes at
    most (a batch of thousands of small messages has thousands of brackets but a nesting
    of three). Text that is not well-formed JSON gives False, which only means "walk
    it"."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    # Brackets and quotes only: a batch of small messages shrinks to a third, and every
    # later pass runs in C over that (no bytes object per string).
    kept = data.translate(None, _NOT_BRACKETS_OR_QUOTES)
    if kept.count(b"[") + kept.count(b"{") <= depth:
        return True
    if b"\\" in data:
        rest = _STRING.sub(b"", data).translate(_PAIRS, _NOT_BRACKETS)
    elif kept.count(b'""') * 2 == kept.count(b'"'):
        # Without backslashes every quote opens or closes a string. If every quote is
        # in an empty pair ("") of ``kept``, no string held a bracket: the first string
        # that holds one keeps its opening quote unpaired (a bracket follows it, and
        # the left-to-right count is in step there). What is left is the nesting.
        rest = kept.translate(_PAIRS, b'"')
    else:
        rest = b"".join(data.split(b'"')[::2]).translate(_PAIRS, _NOT_BRACKETS)
    for _ in range(depth):
        if not rest:
            return True
        shorter = rest.replace(b"()", b"")
        if len(shorter) == len(rest):
            return False  # unpaired brackets: not JSON
        rest = shorter
    return not rest


#: a JSON string (quotes included; escapes skipped whole)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: both kinds of brackets as one pair of parentheses; every other byte deleted
_PAIRS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
