"""``fifoflow dev FLOW``: run a flow and hot-swap every saved change into it.

Watches the flow file and every module file it names (their folders, so that editors
that save by renaming are seen too). Each save is parsed, validated and applied as a
hot swap (``runner/swap.py``), and reported in one line on stderr::

    [dev] 12:01:02 revision 3 in 4.1 ms (paused 1.2 ms): code: shout

A save that does not parse, or whose code does not load, is reported and the flow keeps
running its last good version. Outputs go to stdout as in ``fifoflow run``; with
``--stdin`` each JSON line read from stdin is sent to the entry port. Ctrl-C or SIGTERM
ends it, stopping every runtime.

Resource handling: the runner (and every runtime) lives in :func:`dev`'s
``open_runner``; the watcher, the stdin reader and the event printer are tasks of one
nursery inside it. exec modules' scripts are not watched (only the flow file names them).
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import trio
import watchfiles

from fifoflow.api.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    parse_json,
    parse_port,
    run_until_interrupted,
    stdin_lines,
)
from fifoflow.api.cli.local import add_local_run_options, output_sink, print_events
from fifoflow.flows import Flow, FlowError, load_flow
from fifoflow.runner import RunnerConfig, RunnerError, open_runner
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    import argparse

    from fifoflow.runner import Runner

__all__ = ["add_dev_parser", "cmd_dev"]


def _say(text: str) -> None:
    sys.stderr.write(f"[dev] {time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()


def _watched(flow_file: Path, flow: Flow | None) -> set[Path]:
    files = {flow_file}
    if flow is not None:
        for module in flow.modules:
            if module.file is not None and module.filename:
                files.add(Path(module.filename).resolve())
    return files


def _resolved(paths: Any) -> set[Path]:
    return {Path(p).resolve() for p in paths}


class DevSession:
    def __init__(
        self, runner: Runner, flow_file: Path, runtimes: Any, args: argparse.Namespace
    ) -> None:
        self.runner = runner
        self.flow_file = flow_file
        self.runtimes = runtimes
        self.args = args
        self.flow: Flow | None = None
        self.files: set[Path] = {flow_file}

    def load(self) -> Flow | None:
        try:
            return load_flow(self.flow_file, runtimes=self.runtimes.keys())
        except FlowError as exc:
            lines = "\n".join(f"  {line}" for line in str(exc).splitlines())
            _say(f"{self.flow_file}: invalid, still running the last good version\n{lines}")
            return None

    async def apply(self, flow: Flow) -> None:
        running = self.flow is not None and self.runner.flow(flow.id).status.value == "running"
        if self.flow is not None and flow.id != self.flow.id:
            _say(
                f"the flow's id changed from {self.flow.id!r} to {flow.id!r}; restart fifoflow dev to rename it"
            )
            return
        try:
            result = await self.runner.apply_flow(flow)
            if not running:
                await self.runner.start_flow(flow.id)
        except RunnerError as exc:
            if running:
                _say(f"not applied, still running the last good version: {exc}")
            else:
                _say(f"cannot start flow {flow.id!r}: {exc}; fix it and save again")
            self.files = _watched(self.flow_file, flow) | self.files
            return
        self.flow = flow
        self.files = _watched(self.flow_file, flow)
        report = result.report
        if report is None:
            _say(
                f"running flow {flow.id!r} (revision {result.revision}); watching {len(self.files)} file(s)"
            )
        else:
            extra = ""
            if report["rehomed"]:
                extra += f"; {report['rehomed']} message(s) followed their module"
            dropped = sum(len(e["msgs"]) for entries in report["dropped"].values() for e in entries)
            if dropped:
                extra += f"; {dropped} message(s) waiting for removed modules were dropped"
            _say(
                f"revision {result.revision} in {report['durationMs']:.1f} ms "
                f"(paused {report['pausedMs']:.1f} ms): {report['summary']}{extra}"
            )

    async def watch(self) -> None:
        """Re-apply on every save; re-arm when the set of watched folders changes."""
        while True:
            folders = {p.parent for p in self.files}
            stop = anyio.Event()
            async for changes in watchfiles.awatch(
                *folders, debounce=150, step=25, recursive=False, stop_event=stop, rust_timeout=250
            ):
                touched = _resolved(path for _, path in changes)
                if not touched & self.files:
                    continue
                flow = self.load()
                if flow is not None:
                    await self.apply(flow)
                if {p.parent for p in self.files} != folders:
                    stop.set()

    async def read_stdin(self, target: tuple[str, str]) -> None:
        async with aclosing(stdin_lines()) as lines:
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    _say(f"stdin: not JSON, skipped: {exc}")
                    continue
                if self.flow is None:
                    _say("stdin: the flow is not running, message skipped")
                    continue
                try:
                    await self.runner.inject(self.flow.id, target[0], target[1], [msg])
                except RunnerError as exc:
                    _say(f"stdin: {exc}")


async def dev(args: argparse.Namespace) -> int:
    runtimes = discover()
    flow_file: Path = args.flow_file
    config = RunnerConfig(default_module_timeout=args.timeout) if args.timeout else RunnerConfig()
    async with open_runner(config, runtimes) as runner:
        session = DevSession(runner, flow_file, runtimes, args)
        flow = session.load()
        if flow is None:
            return EXIT_USAGE
        async with trio.open_nursery() as nursery:
            nursery.start_soon(print_events, runner, flow.id, args.quiet)
            await runner.add_or_update_flow(flow)
            runner.set_output_sink(flow.id, output_sink(raw=False))
            try:
                await runner.start_flow(flow.id)
                session.flow = flow
                session.files = _watched(flow_file, flow)
                _say(
                    f"running flow {flow.id!r}; watching {len(session.files)} file(s); Ctrl-C ends"
                )
            except RunnerError as exc:
                session.files = _watched(flow_file, flow)
                _say(f"cannot start flow {flow.id!r}: {exc}; fix it and save again")
            target = parse_port(args.to) if args.to else None
            if target is None:
                entries = flow.entry_ports()
                target = entries[0] if len(entries) == 1 else None
            inputs = [parse_json(text, "--input") for text in args.input]
            if (inputs or args.stdin) and target is None:
                _say("the flow has several entry ports: say which with --to MODULE.PORT")
                return EXIT_USAGE
            if inputs and session.flow is not None and target is not None:
                await runner.inject(flow.id, target[0], target[1], inputs)
            nursery.start_soon(session.watch)
            if args.stdin and target is not None:
                nursery.start_soon(session.read_stdin, target)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()
    _say("stopped (SIGTERM); every runtime ended")
    return EXIT_OK


def cmd_dev(args: argparse.Namespace) -> int:
    args.flow_file = Path(args.flow).resolve()
    return run_until_interrupted(
        dev, args, on_interrupt=lambda: _say("stopped; every runtime ended")
    )


def add_dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev", help="run a flow and hot-swap every change saved to its files (Ctrl-C ends)"
    )
    dev.add_argument("flow", help="path of a flow file (flow.json)")
    dev.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="JSON",
        help="a message sent at start (repeatable)",
    )
    dev.add_argument(
        "--stdin", action="store_true", help="send each JSON line read on stdin to the entry port"
    )
    dev.add_argument(
        "--to",
        metavar="MODULE.PORT",
        help="where messages go (default: the flow's only entry port)",
    )
    add_local_run_options(dev)
    dev.set_defaults(func=cmd_dev)
