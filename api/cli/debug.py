"""``fifoflow debug FLOW``: run a flow locally under an interactive debugger.

The flow starts paused, so breakpoints can be set before the first message moves::

    (fifoflow) break shout if msg == "Hello, Ada!"
    (fifoflow) send {"name": "Ada"}
    (fifoflow) continue
    paused at breakpoint shout (in): "Hello, Ada!"
    (fifoflow) step
    (fifoflow) queues
    (fifoflow) state frame

Commands: ``send JSON [to MODULE.PORT]``, ``break MODULE [if COND]``, ``delete MODULE``,
``step [N]``, ``continue``, ``pause``, ``queues``, ``state MODULE``, ``help``, ``quit``.
Events (breakpoint hits, outputs, module errors, log lines) are printed as they happen.

Resource handling: the runner and every runtime live in :func:`debug`'s ``open_runner``;
``quit``, end of input, Ctrl-C or SIGTERM end them.
"""

from __future__ import annotations

import shlex
import signal
import sys
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import trio

from fifoflow.api.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    flow_problems,
    parse_port,
    run_until_interrupted,
    stdin_lines,
)
from fifoflow.api.cli.debugview import format_pause, format_queues, format_step, short_json
from fifoflow.flows import FlowError, load_flow
from fifoflow.runner import RunnerConfig, RunnerError, open_runner
from fifoflow.runner.conditions import ConditionError
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    import argparse

    from fifoflow.flows import Flow
    from fifoflow.runner import Runner

__all__ = ["add_debug_parser", "cmd_debug"]

PROMPT = "(fifoflow) "
HELP = """\
  send JSON [to MODULE.PORT]   send a message (default: the flow's entry port)
  break MODULE [if COND]       pause when a message (matching COND, e.g. msg.n == 3) reaches MODULE
  delete MODULE                remove MODULE's breakpoint
  step [N]                     each module with a waiting message handles one (N times)
  continue                     run until the next breakpoint
  pause                        pause now
  queues                       the waiting messages, per module
  state MODULE                 a module's state
  quit                         stop everything"""


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _say(text: str) -> None:
    """A line printed while the prompt may be showing: start on a fresh line, re-prompt."""
    _write(f"\r{text}\n{PROMPT}")


class Repl:
    def __init__(self, runner: Runner, flow: Flow) -> None:
        self.runner = runner
        self.flow = flow
        entries = flow.entry_ports()
        self.entry = entries[0] if len(entries) == 1 else None

    async def command(self, line: str) -> bool:
        """Run one command line; False to quit."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            _write(f"  cannot read that line: {exc}\n")
            return True
        if not words:
            return True
        verb, rest = words[0], line.strip()[len(words[0]) :].strip()
        fid = self.flow.id
        try:
            if verb in ("quit", "exit", "q"):
                return False
            if verb == "help":
                _write(HELP + "\n")
            elif verb == "send":
                await self.send(rest)
            elif verb == "break" and len(words) >= 2:
                condition = None
                if len(words) > 2:
                    if words[2] != "if":
                        raise ValueError("write: break MODULE [if CONDITION]")
                    condition = rest.split(None, 2)[2] if len(rest.split(None, 2)) > 2 else ""
                await self.runner.set_breakpoint_at_module(f"{fid}/{words[1]}", condition)
                _write(
                    f"  breakpoint at {words[1]}"
                    + (f" when {condition}" if condition else "")
                    + "\n"
                )
            elif verb == "delete" and len(words) == 2:
                removed = await self.runner.remove_breakpoint_at_module(f"{fid}/{words[1]}")
                _write(f"  {'removed' if removed else 'there was no'} breakpoint at {words[1]}\n")
            elif verb in ("step", "s"):
                count = int(words[1]) if len(words) > 1 else 1
                for n in range(count):
                    step = await self.runner.single_step_flow(fid)
                    _write(
                        f"  step {n + 1}:\n" + "".join(f"  {line}\n" for line in format_step(step))
                    )
            elif verb in ("continue", "c"):
                await self.runner.continue_flow(fid)
                _write("  running\n")
            elif verb == "pause":
                await self.runner.pause_flow(fid)
                _write("  paused\n")
            elif verb == "queues":
                _write("".join(f"{line}\n" for line in format_queues(self.runner.queues(fid))))
            elif verb == "state" and len(words) == 2:
                _write(f"  {short_json(self.runner.module_state(fid, words[1]), 2000)}\n")
            else:
                _write(f"  unknown command {line.strip()!r}; type help\n")
        except (RunnerError, ConditionError, ValueError) as exc:
            _write(f"  {exc}\n")
        return True

    async def send(self, rest: str) -> None:
        target = self.entry
        text = rest
        if " to " in rest:
            text, _, where = rest.rpartition(" to ")
            target = parse_port(where.strip())
        if target is None:
            raise ValueError("the flow has several entry ports: send JSON to MODULE.PORT")
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        await self.runner.inject(self.flow.id, target[0], target[1], [msg])
        _write(f"  sent to {target[0]}.{target[1]}\n")

    async def events(self) -> None:
        sub = self.runner.subscribe(
            flows=[self.flow.id], kinds=["paused", "error", "log", "output"], capacity=10_000
        )
        try:
            async for event in sub:
                kind = event["kind"]
                if kind == "paused" and event.get("reason") == "breakpoint":
                    _say(format_pause(event))
                elif kind == "output":
                    for msg in event["msgs"]:
                        _say(f"  out {event['module']}.{event['port']}: {short_json(msg)}")
                elif kind == "error":
                    err = event["error"]
                    _say(
                        f"  !! {event['module']}: {err.get('type', 'Error')}: {err.get('message', '')}"
                    )
                elif kind == "log":
                    _say(f"  [{event.get('module') or event['runtime']}] {event['text']}")
                elif kind == "missed":
                    _say(f"  ... {event['count']} events not shown")
        finally:
            sub.close()


async def debug(args: argparse.Namespace) -> int:
    runtimes = discover()
    try:
        flow = load_flow(args.flow_file, runtimes=runtimes.keys())
    except FlowError as exc:
        err(flow_problems(args.flow, exc))
        return EXIT_USAGE
    async with open_runner(RunnerConfig(), runtimes) as runner:
        await runner.add_or_update_flow(flow)
        try:
            await runner.start_flow(flow.id)
        except RunnerError as exc:
            err(f"fifoflow: cannot start flow {flow.id!r}: {exc}")
            return EXIT_FAILED
        await runner.pause_flow(flow.id)
        repl = Repl(runner, flow)
        _write(f"flow {flow.id!r} is running, paused before its first message; type help\n{PROMPT}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(repl.events)
            nursery.start_soon(_quit_on_sigterm, nursery.cancel_scope)
            async with aclosing(stdin_lines()) as lines:
                async for line in lines:
                    if not await repl.command(line.decode(errors="replace")):
                        break
                    _write(PROMPT)
            nursery.cancel_scope.cancel()
    _write("\nstopped\n")
    return EXIT_OK


async def _quit_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def cmd_debug(args: argparse.Namespace) -> int:
    args.flow_file = Path(args.flow).resolve()
    return run_until_interrupted(debug, args, on_interrupt=lambda: _write("\nstopped\n"))


def add_debug_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dbg = sub.add_parser("debug", help="run a flow locally under an interactive debugger")
    dbg.add_argument("flow", help="path of a flow file (flow.json)")
    dbg.set_defaults(func=cmd_debug)
