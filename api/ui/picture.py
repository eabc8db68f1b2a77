"""A flow's picture for documents: SVG (the page's own drawing, run by node), Graphviz DOT
(written here, no Graphviz needed) and PNG (the SVG rendered by headless Chromium).

``flow_document(flow)`` is what is drawn: ids, runtimes, ports and wires of a validated
:class:`~fifoflow.flows.Flow`. ``render_svg`` pipes it to ``graph_cli.mjs``, which imports
``static/graph.mjs`` and the vendored ELK, so the picture is the page's by construction;
``render_dot`` writes DOT in Python with the same palette (``PALETTE``, checked against
graph.mjs's by a test); ``render_png`` screenshots the SVG in Chromium, through Playwright
when it is installed, else with Chromium's own ``--headless --screenshot``.

Resources: each call runs one child process (node, or Chromium) to completion and waits
for it (a timeout kills it); ``render_png`` uses a temporary directory it removes.
Errors: :class:`GraphError` with a message saying what is missing or what failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson

if TYPE_CHECKING:
    from fifoflow.flows import Flow

__all__ = [
    "PALETTE",
    "GraphError",
    "find_chromium",
    "flow_document",
    "render_dot",
    "render_png",
    "render_svg",
]

HERE = Path(__file__).resolve().parent
GRAPH_CLI = HERE / "graph_cli.mjs"
TIMEOUT = 60.0  # seconds for node or Chromium to draw one flow


@attrs.frozen
class Colours:
    fill: str
    stroke: str
    text: str


#: the runtimes' colours: the same as graph.mjs's PALETTE (tests/ui/test_graph.py checks)
PALETTE: dict[str, Colours] = {
    "python": Colours(fill="#e3edf9", stroke="#3572a5", text="#14324f"),
    "node": Colours(fill="#e6f4e4", stroke="#3e8e41", text="#1d421e"),
    "exec": Colours(fill="#f1ece4", stroke="#8a6d3b", text="#3e301a"),
    "browser": Colours(fill="#fbeadf", stroke="#d0641f", text="#5a2a0c"),
    "other": Colours(fill="#eeeeee", stroke="#6b6b6b", text="#222222"),
}


class GraphError(Exception):
    """A picture could not be made: a tool is missing or failed (the message says which)."""


def flow_document(flow: Flow) -> dict[str, Any]:
    """What a picture shows of a flow: a flow document reduced to ids, runtimes, ports, wires."""
    return {
        "id": flow.id,
        "modules": [
            {"id": m.id, "runtime": m.runtime, "inputs": list(m.inputs), "outputs": list(m.outputs)}
            for m in flow.modules
        ],
        "wires": [str(w) for w in flow.wires],
    }


def render_svg(document: dict[str, Any]) -> str:
    """The flow's SVG, drawn by graph.mjs under node (needs node >= 20 only)."""
    node = shutil.which("node")
    if node is None:
        raise GraphError(
            "node not found: the svg and png pictures are drawn by Node.js >= 20 "
            "(Debian: apt-get install nodejs); --format dot needs no node"
        )
    try:
        done = subprocess.run(
            [node, str(GRAPH_CLI)],
            input=orjson.dumps(document),
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GraphError(f"node did not draw the flow within {TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise GraphError(f"node failed to draw the flow: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def _record(text: str) -> str:
    """A Graphviz record field's text: its special characters escaped."""
    out = []
    for c in text:
        if c in '{}|<>"\\ ':
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _quote(text: str) -> str:
    """A DOT quoted string (ids: only a quote needs escaping at this level)."""
    return '"' + text.replace('"', '\\"') + '"'


def render_dot(document: dict[str, Any]) -> str:
    """Graphviz DOT: a record node per module (inputs left, outputs right, the id and
    runtime between), coloured like the page, and an edge per wire, port to port."""
    lines = [
        f"digraph {_quote(document['id'])} {{",
        "  rankdir=LR;",
        '  node [shape=record, style="rounded,filled", fontname="monospace", fontsize=11];',
        '  edge [color="#555555", arrowsize=0.7];',
    ]
    index: dict[tuple[str, str, str], int] = {}
    for m in document["modules"]:
        colours = PALETTE.get(m["runtime"], PALETTE["other"])
        inputs = "|".join(f"<i{k}> {_record(p)}" for k, p in enumerate(m["inputs"]))
        outputs = "|".join(f"<o{k}> {_record(p)}" for k, p in enumerate(m["outputs"]))
        index.update({(m["id"], "in", p): k for k, p in enumerate(m["inputs"])})
        index.update({(m["id"], "out", p): k for k, p in enumerate(m["outputs"])})
        middle = f"{_record(m['id'])}\\n{_record(m['runtime'])}"
        label = "{" + "|".join(part for part in ("{" + inputs + "}" if inputs else "", middle, "{" + outputs + "}" if outputs else "") if part) + "}"
        lines.append(
            f"  {_quote(m['id'])} [label=\"{label}\", fillcolor={_quote(colours.fill)}, "
            f"color={_quote(colours.stroke)}, fontcolor={_quote(colours.text)}];"
        )
    for text in document["wires"]:
        src, dst = (part.strip() for part in text.split("->"))
        src_module, src_port = src.split(".", 1)
        dst_module, dst_port = dst.split(".", 1)
        o = index[(src_module, "out", src_port)]
        i = index[(dst_module, "in", dst_port)]
        lines.append(f"  {_quote(src_module)}:o{o}:e -> {_quote(dst_module)}:i{i}:w;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def find_chromium() -> str | None:
    """Chromium's executable: ``FIFOFLOW_CHROMIUM``, else chromium on PATH or /usr/bin/chromium."""
    for candidate in (
        os.environ.get("FIFOFLOW_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# Flags that keep Chromium off the network and quiet (the SVG is the only content).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def render_png(svg: str, *, scale: float = 2.0) -> bytes:
    """The SVG as a PNG (``scale`` device pixels per px), by headless Chromium."""
    chromium = find_chromium()
    if chromium is None:
        raise GraphError(
            "png needs Chromium (Debian: apt-get install chromium; or set FIFOFLOW_CHROMIUM); "
            "--format svg needs only node, --format dot nothing"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return _png_by_cli(chromium, svg, scale)
    html = f"<!doctype html><html><body style='margin:0;background:#fff'>{svg}</body></html>"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(device_scale_factor=scale)
            page.route("**/*", lambda route: route.abort())  # the SVG needs nothing else
            page.set_content(html)
            return page.locator("svg").first.screenshot(type="png")
        finally:
            browser.close()


def _png_by_cli(chromium: str, svg: str, scale: float) -> bytes:
    """Without Playwright: Chromium's ``--screenshot`` of the SVG file, sized to it."""
    import re

    match = re.search(r'width="(\d+)" height="(\d+)"', svg)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (800, 600)
    with tempfile.TemporaryDirectory(prefix="fifoflow-graph-") as tmp:
        source = Path(tmp) / "flow.svg"
        target = Path(tmp) / "flow.png"
        source.write_text(svg, encoding="utf-8")
        command = [
            chromium,
            "--headless",
            *CHROMIUM_ARGS,
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            f"--force-device-scale-factor={scale}",
            f"--window-size={width},{height}",
            f"--screenshot={target}",
            source.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise GraphError(f"Chromium did not render the flow within {TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not target.exists():
            raise GraphError(
                f"Chromium failed to render the flow: {done.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return target.read_bytes()
