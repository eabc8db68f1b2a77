"""Helpers for runner tests: build flows from dicts, collect outputs, wait on counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.flows import Flow, parse_flow
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fifoflow.runner import Runner

RUNTIMES = discover()
#: a deliberately broken runtime host (its breakages: its docstring)
BROKEN = Path(__file__).parents[1] / "runtimes" / "broken_host.py"


def make_flow(doc: Mapping[str, Any], runtimes: Mapping[str, Any] | None = None) -> Flow:
    known = (runtimes or RUNTIMES).keys()
    return parse_flow({"fifoflow": 1, **doc}, base_dir=None, runtimes=known)


class Collector:
    """An output sink that records (module, port, msg) and lets a test wait for a count."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, Any]] = []
        self._waiters: list[tuple[int, trio.Event]] = []

    async def __call__(self, module: str, port: str, msgs: list[Any]) -> None:
        self.items.extend((module, port, m) for m in msgs)
        for count, event in self._waiters:
            if len(self.items) >= count:
                event.set()

    def msgs(self, port: str | None = None) -> list[Any]:
        return [m for (mod, p, m) in self.items if port is None or f"{mod}.{p}" == port]

    async def wait_for(self, count: int, seconds: float = 20) -> None:
        if len(self.items) >= count:
            return
        event = trio.Event()
        self._waiters.append((count, event))
        with trio.fail_after(seconds):
            await event.wait()


async def start(
    runner: Runner, doc: Mapping[str, Any], runtimes: Mapping[str, Any] | None = None
) -> Collector:
    """Add and start the flow of ``doc`` (its runtimes: ``runtimes``, default the
    built-in ones); its outputs go to the returned collector."""
    flow = make_flow(doc, runtimes)
    await runner.add_or_update_flow(flow)
    sink = Collector()
    runner.set_output_sink(flow.id, sink)
    await runner.start_flow(flow.id)
    return sink


async def next_event(sub: Any, kind: str, seconds: float = 20, **match: Any) -> dict[str, Any]:
    """The next event of ``kind`` (with matching fields) from a subscription, or fail."""
    with trio.fail_after(seconds):
        async for event in sub:
            if event["kind"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event
    raise AssertionError(f"subscription closed before a {kind!r} event")


def broken_runtime(tmp_path: Path, breakage: str) -> dict[str, Any]:
    """The built-in runtimes plus ``broken-<breakage>``: :data:`BROKEN` with that
    breakage (an unknown one: a correct plain protocol 1 echo host)."""
    folder = tmp_path / f"broken-{breakage}"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(
        orjson.dumps(
            {
                "id": f"broken-{breakage}",
                "name": "test host",
                "version": "0",
                "protocol": 1,
                "command": ["{python}", "-u", str(BROKEN), breakage],
            }
        )
    )
    return discover(tmp_path)
