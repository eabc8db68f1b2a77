"""Flows on a runner, over its API: ``fifoflow flow add|update|remove|start|stop|show|list``,
``inject`` (send messages to a module's input port), ``logs`` (``--follow``: as they come)
and ``state`` (a module's state). Options, client and exit status: :mod:`.common`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fifoflow.api.cli.common import (
    EXIT_OK,
    Usage,
    add_client_options,
    flow_problems,
    out,
    parse_port,
    print_json,
    print_table,
    run_client,
    runner_client,
)
from fifoflow.api.client import ApiError, RunnerClient
from fifoflow.flows import FlowError, bundle_files, dump_flow, load_flow

if TYPE_CHECKING:
    import argparse

__all__ = ["add_flow_parser", "add_inject_parser", "add_logs_parser", "add_state_parser"]

INJECT_BATCH = 1000


async def _document(client: RunnerClient, path: str) -> dict[str, Any]:
    """The flow file as a document that stands alone: module code inline, and the files
    exec modules' commands name carried in their ``files`` (``flows/bundle.py``)."""
    runtimes = [r["id"] for r in await client.list_runtimes()]
    try:
        flow = bundle_files(load_flow(Path(path), runtimes=runtimes))
    except FlowError as exc:
        raise Usage(flow_problems(path, exc)) from None
    return orjson.loads(dump_flow(flow, inline=True))


async def _apply(client: RunnerClient, args: argparse.Namespace) -> None:
    """``flow add`` / ``flow update``: send the flow file's document (and start it)."""
    document = await _document(client, args.target)
    flow_id = document["id"]
    if args.action == "add":
        revision = 0
    else:
        try:
            revision = (await client.get_flow(flow_id))["revision"]
        except ApiError as exc:
            if exc.status == 404:
                raise Usage(f"no flow {flow_id!r} on the runner: use 'fifoflow flow add'") from None
            raise
    answer = await client.apply_flow(document, revision=revision)
    verb = "added" if args.action == "add" else "updated"
    line = f"{verb} flow {flow_id!r} (revision {answer['flow']['revision']})"
    swap = answer.get("swap")
    if swap is not None:
        line += f": hot-swapped in {swap['durationMs']:.1f} ms: {swap['summary']}"
        dropped = sum(len(e["msgs"]) for entries in swap["dropped"].values() for e in entries)
        if dropped:
            line += f"; {dropped} message(s) that waited for removed modules were dropped"
    out(line)
    if args.start:
        summary = await client.start_flow(flow_id)
        out(f"flow {flow_id!r} is {summary['status']}")


def cmd_flow(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with runner_client(args) as client:
            action = args.action
            if action in ("add", "update"):
                await _apply(client, args)
            elif action == "remove":
                await client.remove_flow(args.target)
                out(f"removed flow {args.target!r}")
            elif action in ("start", "stop"):
                call = client.start_flow if action == "start" else client.stop_flow
                summary = await call(args.target)
                out(f"flow {args.target!r} is {summary['status']}")
            elif action == "show":
                print_json(await client.get_flow(args.target))
            elif action == "list":
                flows = await client.list_flows()
                if args.json:
                    print_json(flows)
                else:
                    _print_flows(flows)
            return EXIT_OK

    return run_client(main)


def _print_flows(flows: list[Any]) -> None:
    rows = [("FLOW", "STATUS", "REV", "PENDING", "OUTPUTS", "ERRORS", "RESTARTS")]
    rows += [
        (
            f["id"],
            f["status"],
            str(f["revision"]),
            str(f["pending"]),
            str(f["outputs"]),
            str(f["errors"]),
            str(f.get("restarts", 0)),
        )
        for f in flows
    ]
    print_table(rows)
    if len(rows) == 1:
        out("(no flows)")
    for f in flows:
        if f["status"] == "failed" and f.get("error"):
            out(f"{f['id']} failed: {f['error']}")


def _messages(args: argparse.Namespace) -> list[Any]:
    msgs: list[Any] = []
    for text in args.messages:
        try:
            msgs.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise Usage(f"message {text!r} is not valid JSON: {exc}") from None
    if args.file:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
        with stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        msgs.append(orjson.loads(line))
                    except orjson.JSONDecodeError as exc:
                        raise Usage(f"{args.file}:{number}: not valid JSON: {exc}") from None
    if not msgs:
        raise Usage("no messages: give JSON arguments or --file (one JSON message per line)")
    return msgs


def cmd_inject(args: argparse.Namespace) -> int:
    async def main() -> int:
        module, port = parse_port(args.target)
        msgs = _messages(args)
        async with runner_client(args) as client:
            sent = 0
            for start in range(0, len(msgs), INJECT_BATCH):
                sent += await client.inject(
                    args.flow, module, port, msgs[start : start + INJECT_BATCH]
                )
        out(f"sent {sent} message(s) to {args.flow}/{module}.{port}")
        return EXIT_OK

    return run_client(main)


def cmd_state(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with runner_client(args) as client:
            print_json(await client.module_state(args.flow, args.module))
        return EXIT_OK

    return run_client(main)


def _log_line(flow_id: str, entry: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
    where = (
        f"{flow_id}/{entry['module']}" if entry.get("module") else f"{flow_id}/{entry['runtime']}"
    )
    return f"{stamp} [{where}] {entry['level']}: {entry['text']}"


def cmd_logs(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with runner_client(args) as client:
            if not args.follow:
                for entry in await client.logs(args.flow, limit=args.limit):
                    out(_log_line(args.flow, entry))
                return EXIT_OK
            async with client.rpc() as rpc:
                # Subscribe first, then print the backlog: no line falls between the two.
                await rpc.subscribe(flows=[args.flow], kinds=["log", "error", "flow"])
                last = 0.0
                for entry in await client.logs(args.flow, limit=args.limit):
                    out(_log_line(args.flow, entry))
                    last = entry["time"]
                while True:
                    event = (await rpc.next_event())["event"]
                    kind = event["kind"]
                    if kind == "log" and event["time"] > last:
                        out(_log_line(args.flow, event))
                    elif kind == "error":
                        err = event["error"]
                        out(
                            f"[{args.flow}/{event['module']}] error: {err.get('type')}: {err.get('message')}"
                        )
                    elif kind == "flow":
                        out(
                            f"[{args.flow}] flow is {event['status']}"
                            + (f": {event['error']}" if event.get("error") else "")
                        )
                    elif kind == "missed":
                        out(
                            f"[{args.flow}] ... {event['count']} events not shown (reading too slowly)"
                        )

    return run_client(main)


# ---------------------------------------------------------------------- argparse


def add_flow_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    flow = sub.add_parser(
        "flow", help="add, update, remove, start, stop, list and show flows on a runner"
    )
    flow_sub = flow.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("add", "add a flow from a flow file"),
        ("update", "update a flow from a flow file (a running flow is hot-swapped)"),
    ):
        p = flow_sub.add_parser(action, help=help_text)
        p.add_argument("target", metavar="FLOW_FILE")
        p.add_argument("--start", action="store_true", help="start the flow afterwards")
        add_client_options(p)
    for action, help_text in (
        ("remove", "stop and remove a flow"),
        ("start", "start a flow"),
        ("stop", "stop a flow (its module state is kept)"),
        ("show", "print a flow's status and document"),
    ):
        p = flow_sub.add_parser(action, help=help_text)
        p.add_argument("target", metavar="FLOW_ID")
        add_client_options(p)
    p = flow_sub.add_parser("list", help="list flows and their status")
    p.add_argument("--json", action="store_true")
    add_client_options(p)
    flow.set_defaults(func=cmd_flow)


def add_inject_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inject = sub.add_parser("inject", help="send messages to a module's input port on a runner")
    inject.add_argument("flow", metavar="FLOW_ID")
    inject.add_argument("target", metavar="MODULE[.PORT]", help="port defaults to 'in'")
    inject.add_argument("messages", nargs="*", metavar="JSON", help="messages, in order")
    inject.add_argument("--file", metavar="PATH", help="one JSON message per line ('-': stdin)")
    add_client_options(inject)
    inject.set_defaults(func=cmd_inject)


def add_logs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser("logs", help="print a flow's recent log lines")
    logs.add_argument("flow", metavar="FLOW_ID")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new lines, errors and status changes",
    )
    logs.add_argument(
        "--limit", type=int, default=100, help="recent lines to print first (default: %(default)s)"
    )
    add_client_options(logs)
    logs.set_defaults(func=cmd_logs)


def add_state_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = sub.add_parser("state", help="print a module's state")
    state.add_argument("flow", metavar="FLOW_ID")
    state.add_argument("module", metavar="MODULE_ID")
    add_client_options(state)
    state.set_defaults(func=cmd_state)
