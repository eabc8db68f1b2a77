"""The ``fifoflow`` command: the parser, assembled from one module per command group,
and :func:`main`. The CLI is a thin layer: it parses arguments, calls the cores (or a
server, through :mod:`fifoflow.api.client`) and formats their answers.

Where each command lives, in the order ``fifoflow --help`` lists them::

    run, validate, runtimes, conformance        local.py
    graph                                       graph.py   (drawing: api/ui/picture.py)
    dev                                         dev.py
    debug                                       debug.py   (views: debugview.py)
    runner serve, runner health                 runner.py
    runner install-service, uninstall-service   service.py
    dispatcher ...                              dispatcher.py
    images build                                images.py
    flow ..., inject, logs, state               flows.py
    break, pause, continue, step, queues        debugger.py
    env ...                                     envs.py
    runs ...                                    runs.py

What they share (exit codes, printing, client options): :mod:`.common`.
"""

from __future__ import annotations

import argparse
import sys

from fifoflow.api.cli import (
    debug,
    debugger,
    dev,
    dispatcher,
    envs,
    flows,
    graph,
    images,
    local,
    runner,
    runs,
)
from fifoflow.api.cli.common import EXIT_USAGE, err
from fifoflow.runtimes.registry import ManifestError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fifoflow", description="Run flows of python, node and exec modules over named pipes."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    local.add_run_parser(sub)
    local.add_validate_parser(sub)
    local.add_runtimes_parser(sub)
    graph.add_graph_parser(sub)
    dev.add_dev_parser(sub)
    debug.add_debug_parser(sub)
    runner.add_runner_parser(sub)
    dispatcher.add_dispatcher_parser(sub)
    images.add_images_parser(sub)
    flows.add_flow_parser(sub)
    flows.add_inject_parser(sub)
    flows.add_logs_parser(sub)
    debugger.add_debugger_parsers(sub)
    envs.add_env_parser(sub)
    runs.add_runs_parser(sub)
    flows.add_state_parser(sub)
    local.add_conformance_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["conformance"]:
        raise SystemExit(local.run_conformance(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except ManifestError as exc:
        err(f"fifoflow: {exc}")
        code = EXIT_USAGE
    raise SystemExit(code)
