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

from ..flows.limits import MAX_DEPTH
from ..flows.values import shallow, value_problem
from .errors import ProtocolError

__all__ = [
    "COUNTS",
    "MAX_LINE",
    "RAW",
    "LineSplitter",
    "decode_frame",
    "encode_frame",
    "parse_messages",
    "require",
    "screen_frame",
    "split_emit",
    "split_emit_head",
]

MAX_LINE = 64 * 1024 * 1024

#: the ``hello.features`` entry of a host that writes ``emit`` frames the raw way
#: (PROTOCOL.md section 10): the runner routes their messages without parsing them
RAW = "raw"
#: the ``hello.features`` entry of a host that reports in ``done`` (``local``) the
#: messages it delivered inside itself (PROTOCOL.md section 12)
COUNTS = "counts"
#: how a raw ``emit`` line starts, and what separates its header from its body
RAW_EMIT = b'{"op":"emit",'
_MSGS = b',"msgs":'

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
        # Split ``data`` itself and join only the held partial line to the first piece:
        # each byte is copied once here (into its line), not three times (buffer +
        # data, the slice up to the last newline, the split).
        if b"\n" not in data:
            buffer = self._buffer + data
            if len(buffer) > self._max_line:
                raise ProtocolError(f"line longer than {self._max_line} bytes without a newline")
            self._buffer = buffer
            return []
        lines = data.split(b"\n")
        if self._buffer:
            lines[0] = self._buffer + lines[0]
        self._buffer = lines.pop()
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


def split_emit(line: bytes) -> tuple[str, str, int, bytes]:
    """An ``emit`` line of a host with the ``raw`` feature: (module, port, n, body);
    see :func:`split_emit_head`."""
    head, body = split_emit_head(line)
    return head["module"], head["port"], head["n"], body


def split_emit_head(line: bytes) -> tuple[dict[str, Any], bytes]:
    """An ``emit`` line of a host with the ``raw`` feature: (its header fields, body).

    The line is ``{"op":"emit",<header fields>,"msgs":<body>}`` with ``msgs`` last and
    no space around its colon (PROTOCOL.md section 10). Only the header is parsed: the
    first ``,"msgs":`` of the line cannot be inside a string (a quote there would be
    escaped), so everything before it is the header. ``body`` is returned as bytes,
    unparsed; it is checked only for its brackets and against ``n``. Raises
    :class:`ProtocolError`."""
    at = line.find(_MSGS)
    if at < 0 or line[-1:] != b"}":
        raise ProtocolError(f"raw 'emit' frame without a last 'msgs' field: {_excerpt(line)}")
    try:
        head = orjson.loads(line[:at] + b"}")
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            f"raw 'emit' frame header is not JSON ({exc}): {_excerpt(line)}"
        ) from None
    module, port, n = head.get("module"), head.get("port"), head.get("n")
    if not isinstance(module, str) or not isinstance(port, str):
        raise ProtocolError(
            f"raw 'emit' frame without string 'module' and 'port' before 'msgs' "
            f"(msgs must be the last field): {_excerpt(line)}"
        )
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProtocolError(f"raw 'emit' frame field 'n' is not a count: {_excerpt(line)}")
    body = line[at + len(_MSGS) : -1]
    if body[:1] != b"[" or body[-1:] != b"]" or (n == 0) != (body == b"[]"):
        raise ProtocolError(f"raw 'emit' frame field 'msgs' is not an array of n: {_excerpt(line)}")
    return head, body


def parse_messages(body: bytes, port: str) -> tuple[list[Any], list[str]]:
    """The messages of a raw body, parsed where the runner must look at them (a flow's
    exit, the debugger), with what :func:`screen_frame` would have taken out of them
    (one line each, as it says them). Raises :class:`ProtocolError` if ``body`` is not
    a JSON array."""
    try:
        msgs = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"raw message body is not JSON ({exc}): {_excerpt(body)}") from None
    if not isinstance(msgs, list):
        raise ProtocolError(f"raw message body is not an array: {_excerpt(body)}")
    if shallow(body):
        return msgs, []
    frame = {"op": "emit", "port": port, "msgs": msgs}
    found = screen_frame(frame, b"[" * (MAX_DEPTH + 1))
    return frame["msgs"], found


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
