"""Text views of the debugger's answers, shared by ``fifoflow step``/``queues`` and the
interactive ``fifoflow debug``."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["format_pause", "format_queues", "format_step", "short_json"]


def short_json(value: Any, limit: int = 120) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_step(step: dict[str, Any]) -> list[str]:
    """One line per module: what it consumed and emitted, what waits, what it raised."""
    width = max((len(k.split("/", 1)[1]) for k in step), default=1)
    lines = []
    for qid, entry in step.items():
        module = qid.split("/", 1)[1]
        inputs, outputs = entry["inputStates"], entry["outputStates"]
        consumed = inputs["consumed"]
        waiting = sum(len(v) for v in inputs["queued"].values())
        if consumed is None:
            what = "-"
        else:
            what = f"{consumed['port']} {short_json(consumed['msg'], 60)}"
            emitted = "; ".join(
                f"{port} {short_json(msgs, 60)}" for port, msgs in outputs.items() if msgs
            )
            what += f"  ->  {emitted or 'nothing'}"
        lines.append(f"  {module:<{width}}  {what}   (waiting: {waiting})")
        for error in entry["errors"]:
            err = error["error"]
            lines.append(
                f"  {'':<{width}}  !! {err.get('type', 'Error')}: {err.get('message', '')}"
            )
        for edit in entry.get("edits", ()):
            change = f"-> {short_json(edit['new'], 40)}" if edit["action"] == "edit" else "dropped"
            lines.append(
                f"  {'':<{width}}  (edited #{edit['index']}: {short_json(edit['old'], 40)} {change})"
            )
    return lines


def format_queues(queues: dict[str, list[dict[str, Any]]]) -> list[str]:
    width = max((len(m) for m in queues), default=1)
    lines = []
    for module, entries in queues.items():
        if not entries:
            lines.append(f"  {module:<{width}}  (empty)")
        for entry in entries:
            lines.append(
                f"  {module:<{width}}  #{entry['index']} {entry['port']} {short_json(entry['msg'])}"
            )
            module = ""
    return lines


def format_pause(event: dict[str, Any]) -> str:
    if event.get("reason") == "breakpoint":
        return (
            f"paused at breakpoint {event['module']} ({event['port']}): {short_json(event['msg'])}"
        )
    return "paused"
