"""The ``fifoflow`` command line.

Subcommands: ``run`` (run a flow locally, print what reaches its exits), ``validate``,
``runtimes``, ``conformance`` (the runtime protocol checks), ``dev`` (in :mod:`.dev`); and (in :mod:`.remote`)
``runner serve``, ``flow``, ``inject``, ``logs``, ``state``, which serve or call the
Runner API. The CLI is a thin layer: it
parses arguments, calls the cores and formats their answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

from fifoflow.api.cli.runner import add_commands
from fifoflow.flows import FlowError, load_flow
from fifoflow.runner import Runner, RunnerConfig, RunnerError, open_runner
from fifoflow.runtimes.registry import ManifestError, discover

__all__ = ["main"]

EXIT_OK = 0
EXIT_MODULE_ERRORS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def _parse_json(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"fifoflow: {what} is not valid JSON: {exc}\n  value: {text!r}") from None


def cmd_runtimes(args: argparse.Namespace) -> int:
    runtimes = discover()
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                [m.describe() for m in runtimes.values()], option=orjson.OPT_INDENT_2
            ).decode()
            + "\n"
        )
        return EXIT_OK
    width = max((len(r) for r in runtimes), default=2)
    for rid, manifest in sorted(runtimes.items()):
        print(f"{rid:<{width}}  {manifest.version:<8}  {manifest.name}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    runtimes = discover(attached=True)  # browser modules are valid (a dispatcher runs them)
    status = EXIT_OK
    for path in args.flows:
        try:
            flow = load_flow(Path(path), runtimes=runtimes.keys())
        except FlowError as exc:
            _err(
                f"{path}: invalid flow\n" + "\n".join(f"  {line}" for line in str(exc).splitlines())
            )
            status = EXIT_USAGE
            continue
        wires = len(flow.wires)
        print(f"{path}: ok — flow {flow.id!r}, {len(flow.modules)} modules, {wires} wires")
    return status


def _parse_port(text: str) -> tuple[str, str]:
    module, _, port = text.partition(".")
    return module, port or "in"


async def _run_flow(args: argparse.Namespace) -> int:
    runtimes = discover()
    try:
        flow = load_flow(Path(args.flow), runtimes=runtimes.keys())
    except FlowError as exc:
        _err(
            f"{args.flow}: invalid flow\n"
            + "\n".join(f"  {line}" for line in str(exc).splitlines())
        )
        if "runtime 'browser'" in str(exc):
            _err(
                "  (browser modules run in web pages: deploy the flow to a dispatcher with"
                " fifoflow dispatcher deploy, and open a page that connects to it)"
            )
        return EXIT_USAGE
    inputs = [_parse_json(text, "--input") for text in args.input]
    if inputs:
        if args.to:
            target = _parse_port(args.to)
        else:
            entries = flow.entry_ports()
            if len(entries) != 1:
                names = ", ".join(f"{m}.{p}" for m, p in entries) or "none"
                _err(
                    f"fifoflow: flow {flow.id!r} has {len(entries)} entry ports ({names}); say which with --to MODULE.PORT"
                )
                return EXIT_USAGE
            target = entries[0]
    out = sys.stdout.buffer
    raw = args.raw

    async def sink(module: str, port: str, msgs: list[Any]) -> None:
        if raw:
            data = b"".join(orjson.dumps(m) + b"\n" for m in msgs)
        else:
            label = f"{module}.{port}"
            data = b"".join(orjson.dumps({"from": label, "msg": m}) + b"\n" for m in msgs)
        out.write(data)
        out.flush()

    config = RunnerConfig(default_module_timeout=args.timeout) if args.timeout else RunnerConfig()
    async with open_runner(config, runtimes) as runner:
        await runner.add_or_update_flow(flow)
        runner.set_output_sink(flow.id, sink)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_print_events, runner, flow.id, args.quiet)
            try:
                await runner.start_flow(flow.id)
            except RunnerError as exc:
                _err(f"fifoflow: cannot start flow {flow.id!r}: {exc}")
                nursery.cancel_scope.cancel()
                return EXIT_MODULE_ERRORS
            if inputs:
                await runner.inject(flow.id, target[0], target[1], inputs)
            await runner.wait_idle(flow.id)
            run = runner.flow(flow.id)
            failed = run.status.value == "failed"
            await runner.stop_flow(flow.id)
            nursery.cancel_scope.cancel()
        if failed:
            _err(f"fifoflow: flow {flow.id!r} failed: {run.error}")
            return EXIT_MODULE_ERRORS
        if run.error_count:
            _err(f"fifoflow: {run.error_count} message(s) raised errors in modules (see above)")
            return EXIT_MODULE_ERRORS
    return EXIT_OK


async def _print_events(runner: Runner, flow_id: str, quiet: bool) -> None:
    kinds = ["error", "environment"] if quiet else ["error", "log", "environment"]
    with trio.CancelScope():
        sub = runner.subscribe(flows=[flow_id], kinds=kinds, capacity=10_000)
        try:
            async for event in sub:
                if event["kind"] == "environment":
                    if "line" in event:
                        continue
                    detail = {
                        "done": f"ready in {event.get('seconds', 0):.1f} s",
                        "failed": f"failed: {event.get('error')}",
                    }.get(event["phase"], event["phase"] + "...")
                    _err(f"[{flow_id}] environment {event['env']}: {detail}")
                elif event["kind"] == "missed":
                    _err(f"[{flow_id}] ... {event['count']} log/error events not shown")
                elif event["kind"] == "error":
                    err = event["error"]
                    _err(
                        f"[{flow_id}/{event['module']}] error: {err.get('type', 'Error')}: {err.get('message', '')}"
                        f"\n  input: {orjson.dumps(event['msg']).decode()[:500]}"
                        + (
                            f"\n  {err['traceback'].rstrip()}".replace("\n", "\n  ")
                            if err.get("traceback")
                            else ""
                        )
                    )
                else:
                    where = (
                        f"{flow_id}/{event['module']}"
                        if event.get("module")
                        else f"{flow_id}/{event['runtime']}"
                    )
                    _err(f"[{where}] {event['text']}")
        finally:
            sub.close()


def cmd_run(args: argparse.Namespace) -> int:
    try:
        return trio.run(_run_flow, args)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is None:
            raise
    _err("fifoflow: interrupted; every runtime stopped")
    return EXIT_INTERRUPTED


def _cmd_dev(args: argparse.Namespace) -> int:
    from fifoflow.api.cli.dev import cmd_dev

    return cmd_dev(args)


def _cmd_debug(args: argparse.Namespace) -> int:
    from fifoflow.api.cli.debug import cmd_debug

    return cmd_debug(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fifoflow", description="Run flows of python, node and exec modules over named pipes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a flow locally and print what reaches its unconnected output ports"
    )
    run.add_argument("flow", help="path of a flow file (flow.json)")
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="JSON",
        help="a message for the flow's entry port (repeatable)",
    )
    run.add_argument(
        "--to",
        metavar="MODULE.PORT",
        help="where --input messages go (default: the flow's only entry port)",
    )
    run.add_argument("--raw", action="store_true", help="print only the messages, not {from, msg}")
    run.add_argument(
        "--quiet", action="store_true", help="do not print runtime and module logs on stderr"
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-handler timeout for modules that set none",
    )
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check flow files and name every problem")
    validate.add_argument("flows", nargs="+", metavar="FLOW")
    validate.set_defaults(func=cmd_validate)

    runtimes = sub.add_parser("runtimes", help="list the runtimes this machine offers")
    runtimes.add_argument("--json", action="store_true")
    runtimes.set_defaults(func=cmd_runtimes)

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
    dev.add_argument(
        "--quiet", action="store_true", help="do not print runtime and module logs on stderr"
    )
    dev.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-handler timeout for modules that set none",
    )
    dev.set_defaults(func=_cmd_dev)

    dbg = sub.add_parser("debug", help="run a flow locally under an interactive debugger")
    dbg.add_argument("flow", help="path of a flow file (flow.json)")
    dbg.set_defaults(func=_cmd_debug)

    add_commands(sub)

    # Listed for --help; main() hands its arguments to the kit before parsing.
    sub.add_parser("conformance", help="check a runtime host against the runtime protocol")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["conformance"]:
        # The kit parses its own options (including a host command after --).
        from fifoflow.runtimes import conformance

        raise SystemExit(conformance.main(argv[1:], prog="fifoflow conformance"))
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ManifestError as exc:
        _err(f"fifoflow: {exc}")
        code = EXIT_USAGE
    raise SystemExit(code)
