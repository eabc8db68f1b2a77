"""``fifoflow graph FLOW [--format svg|dot|png] [-o FILE]``: a flow's picture for documents
(the page's drawing; see :mod:`fifoflow.api.ui.picture`).

The flow is validated first, as ``fifoflow validate`` does (same messages); the picture is
written to ``-o FILE`` (``-`` for stdout), by default beside the flow file with the
format's suffix (``flow.json`` -> ``flow.svg``).

Errors (exit 2): the flow file is missing or invalid. Exit 1: a tool the format needs is
missing or failed (node for svg and png, Chromium for png), or the output cannot be written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fifoflow.api.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, flow_problems
from fifoflow.flows import FlowError, load_flow
from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    import argparse

__all__ = ["add_graph_parser"]

FORMATS = ("svg", "dot", "png")


def cmd_graph(args: argparse.Namespace) -> int:
    from fifoflow.api.ui.picture import (
        GraphError,
        flow_document,
        render_dot,
        render_png,
        render_svg,
    )

    path = Path(args.flow)
    # browser modules are drawn too, and so are those of runtimes this machine lacks tools for
    unavailable: dict[str, list[str]] = {}
    runtimes = discover(attached=True, unavailable=unavailable)
    try:
        flow = load_flow(path, runtimes=[*runtimes, *unavailable])
    except FlowError as exc:
        err(flow_problems(args.flow, exc))
        return EXIT_USAGE
    document = flow_document(flow)
    try:
        if args.format == "dot":
            data = render_dot(document).encode()
        elif args.format == "svg":
            data = render_svg(document).encode()
        else:
            data = render_png(render_svg(document))
    except GraphError as exc:
        err(f"fifoflow graph: {exc}")
        return EXIT_FAILED
    target = args.output or str(path.with_suffix(f".{args.format}"))
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        Path(target).write_bytes(data)
    except OSError as exc:
        err(f"fifoflow graph: cannot write {target}: {exc.strerror}")
        return EXIT_FAILED
    modules, wires = len(flow.modules), len(flow.wires)
    err(f"{target}: {args.format}, {_count(modules, 'module')}, {_count(wires, 'wire')}")
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def add_graph_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = sub.add_parser(
        "graph",
        help="draw a flow's graph (svg, dot or png) for documents",
        description="Draw FLOW's modules and wires as the web page does: svg (needs node), "
        "dot (Graphviz text, needs nothing) or png (svg rendered by headless Chromium).",
    )
    graph.add_argument("flow", metavar="FLOW", help="a flow file (flow.json)")
    graph.add_argument("--format", choices=FORMATS, default="svg")
    graph.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it; '-' for stdout (default: FLOW with the format's suffix)",
    )
    graph.set_defaults(func=cmd_graph)
