"""The debugger, on a flow that runs on a runner: ``fifoflow break FLOW/MODULE``
(``--if COND``, ``--remove``), ``pause``, ``continue``, ``step [N]`` and ``queues``.
The interactive debugger of a local flow is ``fifoflow debug`` (:mod:`.debug`); both
print the runner's answers with :mod:`.debugview`. Options, client and exit status:
:mod:`.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fifoflow.api.cli.common import (
    EXIT_OK,
    Usage,
    add_client_options,
    out,
    print_json,
    run_client,
    runner_client,
)
from fifoflow.api.cli.debugview import format_pause, format_queues, format_step

if TYPE_CHECKING:
    import argparse

__all__ = ["add_debugger_parsers"]


def cmd_break(args: argparse.Namespace) -> int:
    async def main() -> int:
        if "/" not in args.target:
            raise Usage(f"write the module as FLOW/MODULE, got {args.target!r}")
        async with runner_client(args) as client:
            if args.remove:
                removed = await client.remove_breakpoint_at_module(args.target)
                out(
                    f"removed the breakpoint at {args.target}"
                    if removed
                    else f"no breakpoint at {args.target}"
                )
            else:
                await client.set_breakpoint_at_module(args.target, args.condition)
                when = f" when {args.condition}" if args.condition else ""
                out(f"breakpoint at {args.target}{when}")
        return EXIT_OK

    return run_client(main)


def cmd_debug_action(args: argparse.Namespace) -> int:
    """``pause``, ``continue``, ``step`` and ``queues``."""

    async def main() -> int:
        async with runner_client(args) as client:
            if args.command == "pause":
                state = await client.pause_flow(args.flow)
                out(f"flow {args.flow!r} is paused")
            elif args.command == "continue":
                state = await client.continue_flow(args.flow)
                out(f"flow {args.flow!r} is running")
            elif args.command == "step":
                for n in range(args.count):
                    step = await client.single_step_flow(args.flow)
                    if args.json:
                        print_json(step)
                    else:
                        out(f"step {n + 1}:")
                        for line in format_step(step):
                            out(line)
                return EXIT_OK
            else:  # queues
                queues = await client.queues(args.flow)
                state = await client.debug_state(args.flow)
                if args.json:
                    print_json({"queues": queues, **state})
                    return EXIT_OK
                pause = state["pause"]
                out(
                    format_pause(pause)
                    if state["paused"] and pause
                    else "running"
                    if not state["paused"]
                    else "paused"
                )
                for line in format_queues(queues):
                    out(line)
                return EXIT_OK
            for bp in state["breakpoints"]:
                cond = f" when {bp['condition']}" if bp["condition"] else ""
                out(f"  breakpoint {bp['module']}{cond} (hits: {bp['hits']})")
        return EXIT_OK

    return run_client(main)


def add_debugger_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    brk = sub.add_parser("break", help="set (or --remove) a breakpoint at FLOW/MODULE")
    brk.add_argument("target", metavar="FLOW/MODULE")
    brk.add_argument(
        "--if", dest="condition", metavar="COND", help="only when it holds, e.g. 'msg.n == 3'"
    )
    brk.add_argument("--remove", action="store_true", help="remove the breakpoint")
    add_client_options(brk)
    brk.set_defaults(func=cmd_break)
    for name, help_text in (
        ("pause", "pause a flow (nothing in flight when it returns)"),
        ("continue", "resume a paused flow until the next breakpoint"),
        ("step", "advance a paused flow: each module with a waiting message handles one"),
        ("queues", "show a flow's waiting messages and why it is paused"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("flow", metavar="FLOW_ID")
        if name == "step":
            p.add_argument(
                "count", nargs="?", type=int, default=1, help="how many steps (default 1)"
            )
        if name in ("step", "queues"):
            p.add_argument("--json", action="store_true")
        add_client_options(p)
        p.set_defaults(func=cmd_debug_action)
