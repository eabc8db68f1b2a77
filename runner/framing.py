"""Sans-IO framing of the runtime protocol: JSON objects, one per line.

Nothing here touches a file descriptor, so the rules of PROTOCOL.md section 2 are
testable with plain bytes. :class:`LineSplitter` turns whatever a ``read`` returned into
complete lines; :func:`decode_frame` checks one line; :func:`screen_frame` takes out of
it the values no later stage could encode (``flows/values.py``); :func:`encode_frame`
writes one.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..flows.values import shallow, value_problem
from .errors import ProtocolError

__all__ = ["MAX_LINE", "LineSplitter", "decode_frame", "encode_frame", "require", "screen_frame"]

MAX_LINE = 64 * 1024 * 1024

# Required fields per op sent by a host (PROTOCOL.md section 5).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "hello": ("protocol",),
    "loaded": ("module",),
    "unloaded": ("module",),
    "emit": ("module", "port", "msgs"),
    "state": ("module", "state"),
    "error": ("module", "error"),
    "hung": ("module",),
    "log": ("text",),
    "done": ("seq",),
    "pong": (),
    "unsupported": (),
    "fatal": (),
    "bye": (),
}


class LineSplitter:
    """Accumulates bytes and hands out complete lines (without the newline).

    A partial line is kept until its newline arrives; a line longer than ``max_line``
    raises :class:`ProtocolError` (the peer is not speaking the protocol).
    """

    __slots__ = ("_buffer", "_max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buffer = b""
        self._max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        end = buffer.rfind(b"\n")
        if end < 0:
            if len(buffer) > self._max_line:
                raise ProtocolError(f"line longer than {self._max_line} bytes without a newline")
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        lines = buffer[:end].split(b"\n")
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._buffer)


def decode_frame(line: bytes) -> dict[str, Any]:
    """Parse and check one frame from a host. Raises :class:`ProtocolError`."""
    try:
        frame = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc}): {_excerpt(line)}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"frame is not a JSON object: {_excerpt(line)}")
    op = frame.get("op")
    if not isinstance(op, str):
        raise ProtocolError(f"frame has no string 'op': {_excerpt(line)}")
    required = _REQUIRED.get(op)
    if required:
        for field in required:
            if field not in frame:
                raise ProtocolError(f"'{op}' frame lacks field '{field}': {_excerpt(line)}")
        for field in ("module", "port"):
            if field in required and not isinstance(frame[field], str):
                raise ProtocolError(
                    f"'{op}' frame field '{field}' is not a string: {_excerpt(line)}"
                )
        if op == "emit" and not isinstance(frame["msgs"], list):
            raise ProtocolError(f"'emit' frame field 'msgs' is not an array: {_excerpt(line)}")
        if op == "done" and not isinstance(frame["seq"], int):
            raise ProtocolError(f"'done' frame field 'seq' is not an integer: {_excerpt(line)}")
    return frame


def _problem(value: Any) -> str | None:
    found = value_problem(value)
    if found is None:
        return None
    inside, message = found
    return f"{inside}: {message}" if inside else message


def screen_frame(frame: dict[str, Any], line: bytes) -> list[str]:
    """Take out of a decoded ``frame`` the values no later stage could encode (nested
    deeper than ``MAX_DEPTH``: orjson parses 1024 levels but writes only 254); say what
    was taken, one line each (none: the frame is as it came, the usual case, decided
    by counting brackets in ``line``).

    An ``emit`` keeps its good messages, a ``state`` or ``unloaded`` loses its state
    (the last good one stays), an ``error`` gets a description in place of its ``msg``
    or ``error``. The caller reports each line as an error of the frame's module: the
    host and the flow go on."""
    if shallow(line):
        return []
    op = frame["op"]
    found: list[str] = []
    if op == "emit":
        good = []
        for index, msg in enumerate(frame["msgs"]):
            problem = _problem(msg)
            if problem is None:
                good.append(msg)
            else:
                found.append(
                    f"emitted message {index} on port {frame['port']!r} was dropped: {problem}"
                )
        frame["msgs"] = good
    elif op in ("state", "unloaded"):
        problem = _problem(frame.get("state"))
        if problem is not None:
            frame["state"] = None
            found.append(f"ctx.state was not kept (the last good state stays): {problem}")
    elif op == "error":
        for field in ("msg", "error"):
            problem = _problem(frame.get(field))
            if problem is not None:
                frame[field] = (
                    {"type": "Error", "message": f"(not shown: {problem})", "traceback": ""}
                    if field == "error"
                    else f"(not shown: {problem})"
                )
    elif value_problem(frame) is not None:
        found.append(f"a {op!r} frame was ignored: {_problem(frame)}")
        frame.clear()
        frame["op"] = "ignored"
    return found


def require(frame: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    value = frame.get(field)
    if not isinstance(value, kind):
        raise ProtocolError(f"'{frame.get('op')}' frame field '{field}' has the wrong type")
    return value


def encode_frame(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame) + b"\n"


def _excerpt(line: bytes, limit: int = 200) -> str:
    text = line[:limit].decode("utf-8", "replace")
    return repr(text) + ("..." if len(line) > limit else "")
