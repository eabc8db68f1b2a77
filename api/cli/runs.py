"""Runs, over the API of a dispatcher or of a runner served alone (the routes are the
same): ``fifoflow runs submit|list|show|cancel|logs|result``. Options and client:
:mod:`.common` (``--url``, ``--token-file``, ``--ca``; for a dispatcher, pass its URL
and its token file).

``runs submit FLOW`` sends a flow file's document inline (FLOW is a path that exists) or
names a stored flow (its id). With ``--wait`` it follows the run (one updating line on a
terminal, plain lines otherwise, on stderr), prints its outputs as JSON lines on stdout
and exits by how the run ended: 0 succeeded, 1 failed, 3 timed out, 4 canceled; 2 bad
usage or a submission the server refused (its message names the field).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.api.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Usage,
    add_client_options,
    err,
    flow_problems,
    out,
    parse_json,
    print_json,
    print_table,
    run_client,
    runner_client,
)
from fifoflow.api.client import ApiError, RunnerClient
from fifoflow.flows import FlowError, bundle_files, dump_flow, load_flow

if TYPE_CHECKING:
    import argparse

__all__ = ["EXIT_CANCELED", "EXIT_TIMED_OUT", "add_runs_parser", "exit_status"]

EXIT_TIMED_OUT = 3
EXIT_CANCELED = 4
STATES = ("queued", "running", "succeeded", "failed", "timed_out", "canceled")


def exit_status(state: str) -> int:
    """The exit status of ``runs submit --wait`` for a run that ended in ``state``."""
    return {
        "succeeded": EXIT_OK,
        "failed": EXIT_FAILED,
        "timed_out": EXIT_TIMED_OUT,
        "canceled": EXIT_CANCELED,
    }.get(state, EXIT_FAILED)


# ---------------------------------------------------------------------- submit


async def _submission(client: RunnerClient, args: argparse.Namespace) -> dict[str, Any]:
    sub: dict[str, Any] = {}
    path = Path(args.flow)
    if await trio.Path(path).is_file():
        runtimes = [r["id"] for r in await client.list_runtimes()]
        try:
            flow = bundle_files(load_flow(path, runtimes=runtimes))
        except FlowError as exc:
            raise Usage(flow_problems(path, exc)) from None
        sub["document"] = orjson.loads(dump_flow(flow, inline=True))
    else:
        sub["flow"] = args.flow
    msgs = [parse_json(text, "--input") for text in args.input]
    sub["inputs"] = [{"msg": msg, **({"to": args.to} if args.to else {})} for msg in msgs]
    labels = {}
    for text in args.label:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise Usage(f"--label takes KEY=VALUE, got {text!r}")
        labels[key] = value
    options = {
        "timeout": args.timeout,
        "maxAttempts": args.max_attempts,
        "lease": args.lease,
        "failOn": args.fail_on,
        "priority": args.priority,
        "key": args.key,
        "labels": labels or None,
    }
    sub.update({k: v for k, v in options.items() if v is not None})
    return sub


class Progress:
    """What ``--wait`` shows: one line rewritten in place on a terminal, else a line per
    change of state."""

    def __init__(self, run_id: str, tty: bool) -> None:
        self.run_id = run_id
        self.tty = tty
        self.started = time.monotonic()
        self.state = ""
        self.attempt = 0
        self.handled = 0
        self.errors = 0
        self.outputs = 0
        self._last = ""

    def update(self, item: dict[str, Any]) -> None:
        """``item``: a run's view, or a ``run`` / ``run-progress`` event."""
        progress = item.get("progress") if "progress" in item else item
        if item.get("kind") != "run-progress" and "state" in item:
            self.state = item["state"]
        self.attempt = item.get("attempt", self.attempt) or self.attempt
        if isinstance(progress, dict) and "handled" in progress:
            self.handled = sum(progress.get("handled", {}).values())
            self.errors = progress.get("errors", self.errors)
            self.outputs = progress.get("outputs", self.outputs)
        self._show(item.get("reason"))

    def _show(self, reason: str | None) -> None:
        attempt = f" (attempt {self.attempt})" if self.attempt else ""
        line = f"run {self.run_id} {self.state}{attempt}"
        if self.tty:
            elapsed = time.monotonic() - self.started
            line += (
                f": {self.handled} handled, {self.outputs} outputs, {self.errors} errors"
                f" [{elapsed:.1f} s]"
            )
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif line != self._last:
            self._last = line
            err(line + (f": {reason}" if reason else ""))

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


async def _submit(client: RunnerClient, args: argparse.Namespace) -> int:
    sub = await _submission(client, args)
    try:
        view = await client.submit_run(sub)
    except ApiError as exc:
        where = f" [{exc.field}]" if exc.field else ""
        err(f"fifoflow: run refused: {exc.message}{where} (HTTP {exc.status}, {exc.code})")
        for problem in exc.problems or ():
            err(f"  {problem['path'] or '(document)'}: {problem['message']}")
        return EXIT_USAGE
    run_id = view["id"]
    if not args.wait:
        out(run_id)
        return EXIT_OK
    progress = Progress(run_id, sys.stderr.isatty())
    try:
        view = await client.wait_run(run_id, on_update=progress.update)
    finally:
        progress.done()
    result = await client.run_result(run_id)
    async for output in (
        client.run_outputs(run_id) if result.get("outputsSpilled") else _each(result["outputs"])
    ):
        out(orjson.dumps(output).decode())
    _summary(view, result)
    return exit_status(view["state"])


async def _each(items: list[dict[str, Any]]) -> Any:
    for item in items:
        yield item


def _summary(view: dict[str, Any], result: dict[str, Any]) -> None:
    duration = max(0.0, result.get("finishedAt", 0.0) - result.get("startedAt", 0.0))
    line = (
        f"run {view['id']} {view['state']} after {duration:.2f} s (attempt {view['attempt']}):"
        f" {result.get('outputsTotal', 0)} outputs, {result.get('errorsTotal', 0)} errors"
    )
    err(line + (f": {view['reason']}" if view.get("reason") else ""))
    for error in result.get("errors", [])[:5]:
        detail = error.get("error") or {}
        err(f"  {error.get('module')}: {detail.get('type', 'Error')}: {detail.get('message', '')}")
    for module, exit_ in result.get("exits", {}).items():
        err(f"  {module} exited {exit_.get('code')}: {str(exit_.get('stderr', '')).strip()[-200:]}")


# ---------------------------------------------------------------------- the others


def _print_runs(runs: list[dict[str, Any]]) -> None:
    rows = [("RUN", "FLOW", "STATE", "ATTEMPT", "CREATED", "REASON")]
    rows += [
        (
            r["id"],
            str(r.get("flow")),
            r["state"],
            f"{r['attempt']}/{r['maxAttempts']}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("createdAt") or 0)),
            (r.get("reason") or "")[:60],
        )
        for r in runs
    ]
    print_table(rows)
    if len(rows) == 1:
        out("(no runs)")


async def _result(client: RunnerClient, args: argparse.Namespace) -> int:
    if args.outputs:
        async for output in client.run_outputs(args.id):
            out(orjson.dumps(output).decode())
    else:
        print_json(await client.run_result(args.id))
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with runner_client(args) as client:
            action = args.action
            if action == "submit":
                return await _submit(client, args)
            if action == "list":
                runs = await client.list_runs(state=args.state, flow=args.flow, limit=args.limit)
                print_json(runs) if args.json else _print_runs(runs)
            elif action == "show":
                print_json(await client.get_run(args.id))
            elif action == "cancel":
                view = await client.cancel_run(args.id, args.reason)
                out(f"run {args.id} {view['state']}")
            elif action == "logs":
                for line in await client.run_logs(args.id, limit=args.limit):
                    out(orjson.dumps(line).decode())
            elif action == "result":
                return await _result(client, args)
            return EXIT_OK

    return run_client(main)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def add_runs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = sub.add_parser(
        "runs", help="runs: flows executed as jobs (on a dispatcher or a runner served alone)"
    )
    actions = runs.add_subparsers(dest="action", required=True)
    p = actions.add_parser("submit", help="submit a run (--wait: follow it to its end)")
    p.add_argument("flow", metavar="FLOW", help="a flow file (sent inline) or a stored flow's id")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="JSON",
        help="a message for the run (repeatable; in order)",
    )
    p.add_argument("--to", metavar="MODULE.PORT", help="where the inputs go (default: the entry)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the run; exit 0 succeeded, 1 failed, 3 timed out, 4 canceled",
    )
    p.add_argument("--timeout", type=_positive(float), metavar="S", help="an attempt's time limit")
    p.add_argument("--max-attempts", type=_positive(int), metavar="N", help="attempts (default 3)")
    p.add_argument("--lease", type=_positive(float), metavar="S", help="lease (default 30 s)")
    p.add_argument(
        "--fail-on", choices=("error", "never"), help="a module error fails the run (error)"
    )
    p.add_argument("--priority", type=int, metavar="N", help="higher runs are offered first")
    p.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="the worker must carry it"
    )
    p.add_argument("--key", metavar="K", help="your name for the run (a second submit answers it)")
    p = actions.add_parser("list", help="runs, newest first")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--flow", metavar="F")
    p.add_argument("--limit", type=_positive(int), metavar="N")
    p.add_argument("--json", action="store_true", help="the views as JSON")
    p = actions.add_parser("show", help="a run: state, attempts, events, progress")
    p.add_argument("id", metavar="ID")
    p = actions.add_parser("cancel", help="cancel a run")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", help="recorded with the run")
    p = actions.add_parser("logs", help="a run's log lines (JSON lines)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--limit", type=_positive(int), metavar="N")
    p = actions.add_parser("result", help="how a run ended (409 until it has)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--outputs", action="store_true", help="every output, as JSON lines")
    for parser in actions.choices.values():
        add_client_options(parser)
        parser.set_defaults(func=cmd_runs)
