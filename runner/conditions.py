"""Breakpoint conditions: a tiny comparison language, parsed here, never ``eval``-ed.

::

    condition  := operand OP literal
    operand    := "msg" accessor* | "port"
    accessor   := "." name | "[" integer "]" | "[" json-string "]"
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="
    literal    := any JSON value (42, "a", true, null, [1, 2], {"k": 1})

Examples: ``msg.n == 3``, ``msg.user["first name"] != "Ada"``, ``msg.items[0].price >= 9.5``,
``port == "left"``. A path that does not exist in the message makes the condition false
(no error); ``<``-family comparisons between values of different kinds are false.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import attrs
import orjson

__all__ = ["Condition", "ConditionError"]

_MISSING = object()
_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


class ConditionError(ValueError):
    """The condition's text does not parse; the message says where."""


@attrs.frozen
class Condition:
    text: str
    root: str  # "msg" or "port"
    path: tuple[str | int, ...]
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        source = text.strip()
        pos = 0

        def fail(why: str) -> ConditionError:
            return ConditionError(
                f"condition {text!r}: {why} at character {pos + 1} "
                '(write e.g. msg.n == 3, msg.user["name"] != "Ada", port == "in")'
            )

        match = _NAME.match(source, pos)
        if match is None or match.group() not in ("msg", "port"):
            raise fail("expected 'msg' or 'port'")
        root = match.group()
        pos = match.end()
        path: list[str | int] = []
        while pos < len(source) and root == "msg":
            ch = source[pos]
            if ch == ".":
                match = _NAME.match(source, pos + 1)
                if match is None:
                    raise fail("expected a field name after '.'")
                path.append(match.group())
                pos = match.end()
            elif ch == "[":
                end = source.find("]", pos)
                if end < 0:
                    raise fail("'[' without ']'")
                inner = source[pos + 1 : end].strip()
                try:
                    key = orjson.loads(inner)
                except orjson.JSONDecodeError:
                    raise fail("expected an integer or a quoted string in [...]") from None
                if isinstance(key, bool) or not isinstance(key, (int, str)):
                    raise fail("expected an integer or a quoted string in [...]")
                path.append(key)
                pos = end + 1
            else:
                break
        while pos < len(source) and source[pos].isspace():
            pos += 1
        op = next((o for o in _OPS if source.startswith(o, pos)), None)
        if op is None:
            raise fail("expected one of == != < <= > >=")
        pos += len(op)
        literal = source[pos:].strip()
        if not literal:
            raise fail("expected a JSON value after the operator")
        try:
            value = orjson.loads(literal)
        except orjson.JSONDecodeError as exc:
            raise fail(f"the value is not JSON ({exc})") from None
        return cls(text=source, root=root, path=tuple(path), op=op, value=value)

    def matches(self, msg: Any, port: str) -> bool:
        current: Any = port if self.root == "port" else msg
        for key in self.path:
            if (
                isinstance(key, int)
                and isinstance(current, list)
                and -len(current) <= key < len(current)
            ):
                current = current[key]
            elif isinstance(key, str) and isinstance(current, dict) and key in current:
                current = current[key]
            else:
                return False
        try:
            return bool(_OPS[self.op](current, self.value))
        except TypeError:
            return False
