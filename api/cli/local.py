"""The commands that need no server: ``fifoflow run`` (run a flow on this machine and
print what reaches its exits), ``validate`` (check flow files), ``runtimes`` (list the
runtimes here) and ``conformance`` (the runtime protocol's checks, parsed and run by
``runtimes/conformance.py``; listed here for ``--help``).

Resource handling: ``run`` keeps its runner and every runtime in :func:`run_flow`'s
``open_runner``; a Ctrl-C stops them all before it exits with 130.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import trio

from fifoflow.api.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    flow_problems,
    parse_json,
    parse_port,
    print_json,
    run_until_interrupted,
)
from fifoflow.flows import FlowError, load_flow
from fifoflow.runner import RunnerConfig, RunnerError, open_runner
from fifoflow.runtimes.gobuild import GoSource, default_cache, vet
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from fifoflow.runner import Runner

__all__ = [
    "add_conformance_parser",
    "add_run_parser",
    "add_runtimes_parser",
    "add_validate_parser",
    "output_sink",
    "print_events",
]


def cmd_runtimes(args: argparse.Namespace) -> int:
    unavailable: dict[str, list[str]] = {}
    runtimes = discover(unavailable=unavailable)
    if args.json:
        print_json([m.describe() for m in runtimes.values()])
        return EXIT_OK
    width = max((len(r) for r in [*runtimes, *unavailable]), default=2)
    for rid, manifest in sorted(runtimes.items()):
        print(f"{rid:<{width}}  {manifest.version:<8}  {manifest.name}")
    for rid, missing in sorted(unavailable.items()):
        print(f"not available: {rid} ({'; '.join(missing)})", file=sys.stderr)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    # browser modules are valid (a dispatcher runs them), and so are modules of a runtime
    # this machine lacks the tools for (another runner may have them)
    unavailable: dict[str, list[str]] = {}
    runtimes = discover(attached=True, unavailable=unavailable)
    status = EXIT_OK
    for path in args.flows:
        try:
            flow = load_flow(Path(path), runtimes=[*runtimes, *unavailable])
        except FlowError as exc:
            err(flow_problems(path, exc))
            status = EXIT_USAGE
            continue
        if not _vet_go(path, flow, "go" in runtimes):
            status = EXIT_USAGE
            continue
        wires = len(flow.wires)
        print(f"{path}: ok — flow {flow.id!r}, {len(flow.modules)} modules, {wires} wires")
    return status


def _vet_go(path: str, flow: Any, toolchain: bool) -> bool:
    """``go vet`` on the flow's go modules, where a Go toolchain is found; False (and the
    problems printed, in the modules' files and lines) if it complains."""
    sources = [
        GoSource(m.source or "", m.filename or m.id) for m in flow.modules if m.runtime == "go"
    ]
    if not sources:
        return True
    if not toolchain:
        err(f"{path}: note: go modules not vetted (no Go toolchain here)")
        return True
    problems = vet(sources, default_cache())
    for line in problems:
        err(f"{path}: {line}")
    return not problems


def output_sink(*, raw: bool) -> Callable[[str, str, list[Any]], Awaitable[None]]:
    """Where a local flow's exits go: stdout, one JSON line a message (``{from, msg}``, or
    the bare message when ``raw``)."""
    stream = sys.stdout.buffer

    async def sink(module: str, port: str, msgs: list[Any]) -> None:
        if raw:
            data = b"".join(orjson.dumps(m) + b"\n" for m in msgs)
        else:
            label = f"{module}.{port}"
            data = b"".join(orjson.dumps({"from": label, "msg": m}) + b"\n" for m in msgs)
        stream.write(data)
        stream.flush()

    return sink


async def run_flow(args: argparse.Namespace) -> int:
    unavailable: dict[str, list[str]] = {}
    runtimes = discover(unavailable=unavailable)
    try:
        flow = load_flow(Path(args.flow), runtimes=runtimes.keys())
    except FlowError as exc:
        err(flow_problems(args.flow, exc))
        for rid, missing in sorted(unavailable.items()):
            if f"runtime {rid!r}" in str(exc):
                err(f"  ({rid} is not available on this machine: {'; '.join(missing)})")
        if "runtime 'browser'" in str(exc):
            err(
                "  (browser modules run in web pages: deploy the flow to a dispatcher with"
                " fifoflow dispatcher deploy, and open a page that connects to it)"
            )
        return EXIT_USAGE
    inputs = [parse_json(text, "--input") for text in args.input]
    if inputs:
        if args.to:
            target = parse_port(args.to)
        else:
            entries = flow.entry_ports()
            if len(entries) != 1:
                names = ", ".join(f"{m}.{p}" for m, p in entries) or "none"
                err(
                    f"fifoflow: flow {flow.id!r} has {len(entries)} entry ports ({names}); say which with --to MODULE.PORT"
                )
                return EXIT_USAGE
            target = entries[0]
    config = RunnerConfig(default_module_timeout=args.timeout) if args.timeout else RunnerConfig()
    async with open_runner(config, runtimes) as runner:
        await runner.add_or_update_flow(flow)
        runner.set_output_sink(flow.id, output_sink(raw=args.raw))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(print_events, runner, flow.id, args.quiet)
            try:
                await runner.start_flow(flow.id)
            except RunnerError as exc:
                err(f"fifoflow: cannot start flow {flow.id!r}: {exc}")
                nursery.cancel_scope.cancel()
                return EXIT_FAILED
            if inputs:
                await runner.inject(flow.id, target[0], target[1], inputs)
            await runner.wait_idle(flow.id)
            run = runner.flow(flow.id)
            failed = run.status.value == "failed"
            await runner.stop_flow(flow.id)
            nursery.cancel_scope.cancel()
        if failed:
            err(f"fifoflow: flow {flow.id!r} failed: {run.error}")
            return EXIT_FAILED
        if run.error_count:
            err(f"fifoflow: {run.error_count} message(s) raised errors in modules (see above)")
            return EXIT_FAILED
    return EXIT_OK


async def print_events(runner: Runner, flow_id: str, quiet: bool) -> None:
    """A local flow's errors, environment builds and (unless ``quiet``) log lines, on stderr."""
    kinds = ["error", "environment", "build"]
    if not quiet:
        kinds.append("log")
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
                    err(f"[{flow_id}] environment {event['env']}: {detail}")
                elif event["kind"] == "build":
                    text = {
                        "started": f"building its host ({event.get('modules')} modules,"
                        f" {event.get('go', '')})...",
                        "finished": f"host built in {event.get('seconds', 0):.1f} s",
                    }.get(event.get("event", ""))
                    if text:  # a cached binary says nothing; a failure is the load error
                        err(f"[{flow_id}] {event['runtime']}: {text}")
                elif event["kind"] == "missed":
                    err(f"[{flow_id}] ... {event['count']} log/error events not shown")
                elif event["kind"] == "error":
                    error = event["error"]
                    err(
                        f"[{flow_id}/{event['module']}] error: {error.get('type', 'Error')}: {error.get('message', '')}"
                        f"\n  input: {orjson.dumps(event['msg']).decode()[:500]}"
                        + (
                            f"\n  {error['traceback'].rstrip()}".replace("\n", "\n  ")
                            if error.get("traceback")
                            else ""
                        )
                    )
                else:
                    where = (
                        f"{flow_id}/{event['module']}"
                        if event.get("module")
                        else f"{flow_id}/{event['runtime']}"
                    )
                    err(f"[{where}] {event['text']}")
        finally:
            sub.close()


def cmd_run(args: argparse.Namespace) -> int:
    return run_until_interrupted(
        run_flow, args, on_interrupt=lambda: err("fifoflow: interrupted; every runtime stopped")
    )


# ---------------------------------------------------------------------- argparse


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    add_local_run_options(run)
    run.set_defaults(func=cmd_run)


def add_local_run_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--timeout``, of ``run`` and ``dev``."""
    parser.add_argument(
        "--quiet", action="store_true", help="do not print runtime and module logs on stderr"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-handler timeout for modules that set none",
    )


def add_validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser("validate", help="check flow files and name every problem")
    validate.add_argument("flows", nargs="+", metavar="FLOW")
    validate.set_defaults(func=cmd_validate)


def add_runtimes_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runtimes = sub.add_parser("runtimes", help="list the runtimes this machine offers")
    runtimes.add_argument("--json", action="store_true")
    runtimes.set_defaults(func=cmd_runtimes)


def add_conformance_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Listed for --help; main() hands its arguments to the kit before parsing.
    sub.add_parser("conformance", help="check a runtime host against the runtime protocol")


def run_conformance(argv: list[str]) -> int:
    """``fifoflow conformance ARGS``: the kit parses its own options (a host command after --)."""
    from fifoflow.runtimes import conformance

    return conformance.main(argv, prog="fifoflow conformance")
