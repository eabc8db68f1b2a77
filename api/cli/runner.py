"""CLI commands that serve or talk to a runner: ``runner serve``, ``flow ...``, ``inject``,
``logs``, ``state``, and the debugger's ``break``, ``pause``, ``continue``, ``step``,
``queues``. Client commands take ``--url`` (``$FIFOFLOW_URL``) and
``--token-file`` (``$FIFOFLOW_TOKEN_FILE``, default: the default state dir's ``token``).

Exit status: 0 done, 1 the runner refused (its message is printed), 2 bad usage or
input, 3 the runner cannot be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.api.cli.debugview import format_pause, format_queues, format_step
from fifoflow.api.cli.dispatcher import add_dispatcher_commands
from fifoflow.api.cli.images import add_images_commands
from fifoflow.api.cli.service import add_service_commands
from fifoflow.api.client import ApiError, ConnectError, RunnerClient
from fifoflow.api.common.auth import TokenError, default_state_dir, read_token
from fifoflow.api.runner.server import DEFAULT_PORT, ServeOptions, serve
from fifoflow.flows import FlowError, dump_flow, load_flow
from fifoflow.flows.resources import parse_size
from fifoflow.runner import RunnerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["add_commands"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
INJECT_BATCH = 1000


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


class _Usage(Exception):
    pass


def _run(main: Callable[[], Awaitable[int]]) -> int:
    """Run a client command; turn the usual failures into a message and an exit status."""
    try:
        return trio.run(main)
    except ApiError as exc:
        where = f" [{exc.field}]" if exc.field else ""
        _err(f"fifoflow: {exc.message}{where} (HTTP {exc.status}, {exc.code})")
        for problem in exc.problems or ():
            _err(f"  {problem['path'] or '(document)'}: {problem['message']}")
        return EXIT_REFUSED
    except ConnectError as exc:
        _err(f"fifoflow: {exc}\n  is a runner serving there? start one with: fifoflow runner serve")
        return EXIT_UNREACHABLE
    except (TokenError, _Usage) as exc:
        _err(f"fifoflow: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _client(args: argparse.Namespace) -> RunnerClient:
    token_file = Path(args.token_file) if args.token_file else default_state_dir() / "token"
    return RunnerClient(args.url, read_token(token_file))


# ---------------------------------------------------------------------- runner serve


def _label(text: str) -> str:
    if "=" not in text or not text.split("=", 1)[0]:
        raise argparse.ArgumentTypeError(f"write labels as KEY=VALUE, got {text!r}")
    return text


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"write CPUs as a number > 0, got {text!r}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = ServeOptions(
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        host=args.host,
        port=args.port,
        token_file=Path(args.token_file) if args.token_file else None,
        max_body=args.max_body,
        dispatcher=args.dispatcher,
        registration_token=args.registration_token or os.environ.get("FIFOFLOW_REGISTRATION_TOKEN"),
        labels=dict(label.split("=", 1) for label in args.label),
        cpus=args.cpus,
        memory=args.memory,
        name=args.name,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _err(
            f"fifoflow: warning: serving on {args.host}: anyone who can reach it and has the token can run code"
        )
    try:
        trio.run(serve, options)
    except (TokenError, RunnerError) as exc:
        _err(f"fifoflow: {exc}")
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        refused = group.subgroup(lambda e: isinstance(e, (TokenError, RunnerError)))
        if refused is None:
            raise
        leaf: BaseException = refused
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        _err(f"fifoflow: {leaf}")
        return EXIT_USAGE
    except OSError as exc:
        _err(f"fifoflow: cannot serve on {args.host}:{args.port}: {exc}")
        return EXIT_USAGE
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        url = args.url or (state_dir / "url").read_text().strip()
    except OSError:
        _err(f"fifoflow: no runner URL in {state_dir / 'url'} (pass --url)")
        return 1

    async def main() -> int:
        async with RunnerClient(url, read_token(state_dir / "token")) as client:
            _out(orjson.dumps(await client.health()).decode())
        return EXIT_OK

    return 0 if _run(main) == EXIT_OK else 1


# ---------------------------------------------------------------------- flows


async def _document(client: RunnerClient, path: str) -> dict[str, Any]:
    runtimes = [r["id"] for r in await client.list_runtimes()]
    try:
        flow = load_flow(Path(path), runtimes=runtimes)
    except FlowError as exc:
        lines = "\n".join(f"  {line}" for line in str(exc).splitlines())
        raise _Usage(f"{path}: invalid flow\n{lines}") from None
    return orjson.loads(dump_flow(flow, inline=True))


def cmd_flow(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            action = args.action
            if action in ("add", "update"):
                document = await _document(client, args.target)
                flow_id = document["id"]
                if action == "add":
                    revision = 0
                else:
                    try:
                        revision = (await client.get_flow(flow_id))["revision"]
                    except ApiError as exc:
                        if exc.status == 404:
                            raise _Usage(
                                f"no flow {flow_id!r} on the runner: use 'fifoflow flow add'"
                            ) from None
                        raise
                answer = await client.apply_flow(document, revision=revision)
                verb = "added" if action == "add" else "updated"
                line = f"{verb} flow {flow_id!r} (revision {answer['flow']['revision']})"
                swap = answer.get("swap")
                if swap is not None:
                    line += f": hot-swapped in {swap['durationMs']:.1f} ms: {swap['summary']}"
                    dropped = sum(
                        len(e["msgs"]) for entries in swap["dropped"].values() for e in entries
                    )
                    if dropped:
                        line += (
                            f"; {dropped} message(s) that waited for removed modules were dropped"
                        )
                _out(line)
                if args.start:
                    summary = await client.start_flow(flow_id)
                    _out(f"flow {flow_id!r} is {summary['status']}")
            elif action == "remove":
                await client.remove_flow(args.target)
                _out(f"removed flow {args.target!r}")
            elif action in ("start", "stop"):
                call = client.start_flow if action == "start" else client.stop_flow
                summary = await call(args.target)
                _out(f"flow {args.target!r} is {summary['status']}")
            elif action == "show":
                _out(_json(await client.get_flow(args.target)))
            elif action == "list":
                flows = await client.list_flows()
                if args.json:
                    _out(_json(flows))
                else:
                    _print_table(flows)
            return EXIT_OK

    return _run(main)


def _print_table(flows: list[Any]) -> None:
    rows = [("FLOW", "STATUS", "REV", "PENDING", "OUTPUTS", "ERRORS")]
    rows += [
        (
            f["id"],
            f["status"],
            str(f["revision"]),
            str(f["pending"]),
            str(f["outputs"]),
            str(f["errors"]),
        )
        for f in flows
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) == 1:
        _out("(no flows)")


# ---------------------------------------------------------------------- messages, state, logs


def _messages(args: argparse.Namespace) -> list[Any]:
    msgs: list[Any] = []
    for text in args.messages:
        try:
            msgs.append(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise _Usage(f"message {text!r} is not valid JSON: {exc}") from None
    if args.file:
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
        with stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        msgs.append(orjson.loads(line))
                    except orjson.JSONDecodeError as exc:
                        raise _Usage(f"{args.file}:{number}: not valid JSON: {exc}") from None
    if not msgs:
        raise _Usage("no messages: give JSON arguments or --file (one JSON message per line)")
    return msgs


def cmd_inject(args: argparse.Namespace) -> int:
    async def main() -> int:
        module, _, port = args.target.partition(".")
        msgs = _messages(args)
        async with _client(args) as client:
            sent = 0
            for start in range(0, len(msgs), INJECT_BATCH):
                sent += await client.inject(
                    args.flow, module, port or "in", msgs[start : start + INJECT_BATCH]
                )
        _out(f"sent {sent} message(s) to {args.flow}/{module}.{port or 'in'}")
        return EXIT_OK

    return _run(main)


def cmd_state(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            _out(_json(await client.module_state(args.flow, args.module)))
        return EXIT_OK

    return _run(main)


def _log_line(flow_id: str, entry: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(entry["time"]))
    where = (
        f"{flow_id}/{entry['module']}" if entry.get("module") else f"{flow_id}/{entry['runtime']}"
    )
    return f"{stamp} [{where}] {entry['level']}: {entry['text']}"


def cmd_logs(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            if not args.follow:
                for entry in await client.logs(args.flow, limit=args.limit):
                    _out(_log_line(args.flow, entry))
                return EXIT_OK
            async with client.rpc() as rpc:
                # Subscribe first, then print the backlog: no line falls between the two.
                await rpc.subscribe(flows=[args.flow], kinds=["log", "error", "flow"])
                last = 0.0
                for entry in await client.logs(args.flow, limit=args.limit):
                    _out(_log_line(args.flow, entry))
                    last = entry["time"]
                while True:
                    event = (await rpc.next_event())["event"]
                    kind = event["kind"]
                    if kind == "log" and event["time"] > last:
                        _out(_log_line(args.flow, event))
                    elif kind == "error":
                        err = event["error"]
                        _out(
                            f"[{args.flow}/{event['module']}] error: {err.get('type')}: {err.get('message')}"
                        )
                    elif kind == "flow":
                        _out(
                            f"[{args.flow}] flow is {event['status']}"
                            + (f": {event['error']}" if event.get("error") else "")
                        )
                    elif kind == "missed":
                        _out(
                            f"[{args.flow}] ... {event['count']} events not shown (reading too slowly)"
                        )

    return _run(main)


# ---------------------------------------------------------------------- the debugger


def cmd_break(args: argparse.Namespace) -> int:
    async def main() -> int:
        if "/" not in args.target:
            raise _Usage(f"write the module as FLOW/MODULE, got {args.target!r}")
        async with _client(args) as client:
            if args.remove:
                removed = await client.remove_breakpoint_at_module(args.target)
                _out(
                    f"removed the breakpoint at {args.target}"
                    if removed
                    else f"no breakpoint at {args.target}"
                )
            else:
                await client.set_breakpoint_at_module(args.target, args.condition)
                when = f" when {args.condition}" if args.condition else ""
                _out(f"breakpoint at {args.target}{when}")
        return EXIT_OK

    return _run(main)


def cmd_debug_action(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            if args.command == "pause":
                state = await client.pause_flow(args.flow)
                _out(f"flow {args.flow!r} is paused")
            elif args.command == "continue":
                state = await client.continue_flow(args.flow)
                _out(f"flow {args.flow!r} is running")
            elif args.command == "step":
                for n in range(args.count):
                    step = await client.single_step_flow(args.flow)
                    if args.json:
                        _out(_json(step))
                    else:
                        _out(f"step {n + 1}:")
                        for line in format_step(step):
                            _out(line)
                return EXIT_OK
            else:  # queues
                queues = await client.queues(args.flow)
                state = await client.debug_state(args.flow)
                if args.json:
                    _out(_json({"queues": queues, **state}))
                    return EXIT_OK
                pause = state["pause"]
                _out(
                    format_pause(pause)
                    if state["paused"] and pause
                    else "running"
                    if not state["paused"]
                    else "paused"
                )
                for line in format_queues(queues):
                    _out(line)
                return EXIT_OK
            for bp in state["breakpoints"]:
                cond = f" when {bp['condition']}" if bp["condition"] else ""
                _out(f"  breakpoint {bp['module']}{cond} (hits: {bp['hits']})")
        return EXIT_OK

    return _run(main)


# ---------------------------------------------------------------------- environments


def cmd_env(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with _client(args) as client:
            if args.action == "list":
                envs = await client.list_environments(args.runtime)
                if args.json:
                    _out(_json(envs))
                    return EXIT_OK
                if not envs:
                    _out("(no environments)")
                for env in envs:
                    used = ", ".join(env["usedBy"]) or "no flow"
                    _out(f"{env['id']}  ({env['runtime']}; used by {used})")
                    _out(f"  requires: {' '.join(env['requirements'])}")
                    _out(f"  installed: {' '.join(env['packages']) or '-'}")
            elif action_is(args, "install", "remove"):
                kwargs = {args.action: args.packages}
                env = await client.change_environment(args.env, **kwargs)
                _out(f"{args.env}: {' '.join(env['packages']) or '-'}")
            elif args.action == "rebuild":
                env = await client.rebuild_environment(args.env)
                _out(f"rebuilt {args.env}: {' '.join(env['packages']) or '-'}")
            else:
                removed = await client.gc_environments(args.max_idle)
                _out(
                    f"removed {len(removed)} environment(s)"
                    + (": " + ", ".join(removed) if removed else "")
                )
        return EXIT_OK

    return _run(main)


def action_is(args: argparse.Namespace, *names: str) -> bool:
    return args.action in names


# ---------------------------------------------------------------------- argparse


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("FIFOFLOW_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
        help="the runner's URL (default: $FIFOFLOW_URL or %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get("FIFOFLOW_TOKEN_FILE"),
        help="file holding the bearer token (default: $FIFOFLOW_TOKEN_FILE or <state dir>/token)",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runner = sub.add_parser("runner", help="serve the Runner API (HTTP + WebSocket)")
    runner_sub = runner.add_subparsers(dest="runner_command", required=True)
    serve_p = runner_sub.add_parser("serve", help="run a runner and serve its API until Ctrl-C")
    serve_p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    serve_p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default: %(default)s)"
    )
    serve_p.add_argument(
        "--state-dir",
        help=f"flows, module state and the token live here (default: $FIFOFLOW_STATE_DIR or {default_state_dir()})",
    )
    serve_p.add_argument(
        "--token-file", help="use this token file instead of <state dir>/token (created if missing)"
    )
    serve_p.add_argument(
        "--max-body",
        type=int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body (default: 16 MiB)",
    )
    serve_p.add_argument(
        "--dispatcher",
        metavar="URL",
        default=os.environ.get("FIFOFLOW_DISPATCHER"),
        help="register with this dispatcher and report to it ($FIFOFLOW_DISPATCHER)",
    )
    serve_p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_label,
        help="a placement label reported to the dispatcher (repeatable)",
    )
    serve_p.add_argument(
        "--name", help="the name the dispatcher shows for this runner (default: the hostname)"
    )
    serve_p.add_argument(
        "--cpus",
        type=_cpus,
        metavar="N",
        help="CPUs this runner offers to a dispatcher's flows (default: the machine's)",
    )
    serve_p.add_argument(
        "--memory",
        type=_size,
        metavar="SIZE",
        help="memory it offers, e.g. 2GiB (default: the machine's)",
    )
    serve_p.add_argument(
        "--registration-token",
        metavar="TOKEN",
        help="one-time token for the first registration ($FIFOFLOW_REGISTRATION_TOKEN)",
    )
    serve_p.set_defaults(func=cmd_serve)
    health_p = runner_sub.add_parser(
        "health",
        help="exit 0 when the runner answers (for container health checks)",
        description="Ask a runner for its health: exit 0 and print it when it answers, "
        "1 otherwise. Without --url, the URL the runner of the state dir wrote at start.",
    )
    health_p.add_argument("--url", help="the runner's URL (default: <state dir>/url)")
    health_p.add_argument("--state-dir", help="the runner's state dir (token and url)")
    health_p.set_defaults(func=cmd_health)
    add_service_commands(runner_sub)

    add_dispatcher_commands(sub)
    add_images_commands(sub)

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
        _client_options(p)
    for action, help_text in (
        ("remove", "stop and remove a flow"),
        ("start", "start a flow"),
        ("stop", "stop a flow (its module state is kept)"),
        ("show", "print a flow's status and document"),
    ):
        p = flow_sub.add_parser(action, help=help_text)
        p.add_argument("target", metavar="FLOW_ID")
        _client_options(p)
    p = flow_sub.add_parser("list", help="list flows and their status")
    p.add_argument("--json", action="store_true")
    _client_options(p)
    flow.set_defaults(func=cmd_flow)

    inject = sub.add_parser("inject", help="send messages to a module's input port on a runner")
    inject.add_argument("flow", metavar="FLOW_ID")
    inject.add_argument("target", metavar="MODULE[.PORT]", help="port defaults to 'in'")
    inject.add_argument("messages", nargs="*", metavar="JSON", help="messages, in order")
    inject.add_argument("--file", metavar="PATH", help="one JSON message per line ('-': stdin)")
    _client_options(inject)
    inject.set_defaults(func=cmd_inject)

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
    _client_options(logs)
    logs.set_defaults(func=cmd_logs)

    brk = sub.add_parser("break", help="set (or --remove) a breakpoint at FLOW/MODULE")
    brk.add_argument("target", metavar="FLOW/MODULE")
    brk.add_argument(
        "--if", dest="condition", metavar="COND", help="only when it holds, e.g. 'msg.n == 3'"
    )
    brk.add_argument("--remove", action="store_true", help="remove the breakpoint")
    _client_options(brk)
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
        _client_options(p)
        p.set_defaults(func=cmd_debug_action)

    env = sub.add_parser("env", help="list, change, rebuild and clean up module environments")
    env_sub = env.add_subparsers(dest="action", required=True)
    p = env_sub.add_parser("list", help="environments, their requirements and installed packages")
    p.add_argument("--runtime", help="only this runtime's environments")
    p.add_argument("--json", action="store_true")
    _client_options(p)
    for action, help_text in (
        ("install", "install packages into an environment"),
        ("remove", "remove packages from an environment"),
    ):
        p = env_sub.add_parser(action, help=help_text)
        p.add_argument("env", metavar="ENV_ID")
        p.add_argument("packages", nargs="+", metavar="SPEC")
        _client_options(p)
    p = env_sub.add_parser("rebuild", help="build an environment again from its requirements")
    p.add_argument("env", metavar="ENV_ID")
    _client_options(p)
    p = env_sub.add_parser("gc", help="remove environments no flow has used for a while")
    p.add_argument(
        "--max-idle", type=int, metavar="SECONDS", help="default: the runner's setting (7 days)"
    )
    _client_options(p)
    env.set_defaults(func=cmd_env)

    state = sub.add_parser("state", help="print a module's state")
    state.add_argument("flow", metavar="FLOW_ID")
    state.add_argument("module", metavar="MODULE_ID")
    _client_options(state)
    state.set_defaults(func=cmd_state)
