"""``fifoflow graph``: the SVG the page draws (graph.mjs under node, vendored ELK), DOT, PNG,
the committed pictures of the examples, and the errors. Real node, real Chromium."""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest

from fifoflow.api.ui import picture
from fifoflow.flows import load_flow
from fifoflow.runtimes.registry import discover

from ...conftest import REPO

FIFOFLOW = [sys.executable, "-m", "fifoflow.api"]
EXAMPLES = REPO / "flows" / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "flow.json").exists())
UI = REPO / "api" / "ui"
SVG_NS = "{http://www.w3.org/2000/svg}"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")


def fifoflow(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*FIFOFLOW, *args], capture_output=True, timeout=timeout, cwd=REPO, env=env, check=False
    )


def svg_of(flow: Path) -> ET.Element:
    result = fifoflow("graph", str(flow), "-o", "-")
    assert result.returncode == 0, result.stderr.decode()
    return ET.fromstring(result.stdout)


def groups(root: ET.Element, attribute: str) -> dict[str, ET.Element]:
    found = [g for g in root.iter(f"{SVG_NS}g") if attribute in g.attrib]
    by_value = {g.attrib[attribute]: g for g in found}
    assert len(by_value) == len(found), f"duplicate {attribute}"
    return by_value


def wire_id(text: str) -> str:
    return "->".join(part.strip() for part in text.split("->"))


# ---------------------------------------------------------------- SVG


@needs_node
def test_fan_out_fan_in_has_a_box_per_module_and_an_edge_per_wire() -> None:
    doc = orjson.loads((EXAMPLES / "fan-out-fan-in" / "flow.json").read_bytes())
    root = svg_of(EXAMPLES / "fan-out-fan-in" / "flow.json")
    assert root.tag == f"{SVG_NS}svg"
    assert root.attrib["data-flow"] == "fan-out-fan-in"

    modules = groups(root, "data-module")
    assert set(modules) == {m["id"] for m in doc["modules"]}
    for m in doc["modules"]:
        box = modules[m["id"]]
        assert box.attrib["data-runtime"] == m["runtime"]
        assert f"ff-runtime-{m['runtime']}" in box.attrib["class"].split()
        assert box.find(f"{SVG_NS}rect[@class='ff-box']") is not None
        texts = {t.attrib.get("class"): t.text for t in box.iter(f"{SVG_NS}text")}
        assert texts["ff-id"] == m["id"]
        assert texts["ff-runtime"] == m["runtime"]

    wires = groups(root, "data-wire")
    assert set(wires) == {wire_id(w) for w in doc["wires"]}
    for text in doc["wires"]:
        wire = wires[wire_id(text)]
        src, dst = (p.strip() for p in text.split("->"))
        assert (wire.attrib["data-from"], wire.attrib["data-to"]) == (src, dst)
        path = wire.find(f"{SVG_NS}path[@class='ff-edge']")
        assert path is not None
        assert path.attrib["marker-end"].startswith("url(#")
        # orthogonal: every segment is horizontal or vertical
        points = [
            tuple(map(float, p.split(",")))
            for p in re.findall(r"[-\d.]+,[-\d.]+", path.attrib["d"])
        ]
        assert len(points) >= 2
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            assert x0 == x1 or y0 == y1, path.attrib["d"]

    inputs = groups(root, "data-input")
    outputs = groups(root, "data-output")
    assert set(inputs) == {
        f"{m['id']}.{p}" for m in doc["modules"] for p in m.get("inputs", ["in"])
    }
    assert set(outputs) == {
        f"{m['id']}.{p}" for m in doc["modules"] for p in m.get("outputs", ["out"])
    }
    # port names written beside their ports
    assert [t.text for t in outputs["split.letters"].iter(f"{SVG_NS}text")] == ["letters"]


def module_rects(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    rects = {}
    for module_id, g in groups(root, "data-module").items():
        x, y = map(
            float, re.fullmatch(r"translate\(([-\d.]+),([-\d.]+)\)", g.attrib["transform"]).groups()
        )
        box = g.find(f"{SVG_NS}rect[@class='ff-box']")
        assert box is not None
        rects[module_id] = (x, y, float(box.attrib["width"]), float(box.attrib["height"]))
    return rects


def fifty_module_flow(folder: Path) -> tuple[Path, dict]:
    rng = random.Random(18)
    runtimes = ["python", "node", "exec", "browser"]
    modules = []
    for k in range(50):
        outputs = [f"o{j}" for j in range(rng.randint(1, 3))]
        inputs = [f"in{j}" for j in range(rng.randint(1, 2))]
        runtime = runtimes[k % len(runtimes)]
        module: dict = {
            "id": f"m{k:02d}_step",
            "runtime": runtime,
            "inputs": inputs,
            "outputs": outputs,
        }
        if runtime == "exec":
            module["command"] = ["cat"]
        else:
            module["code"] = "def handle(msg, ctx):\n    return msg\n"
        modules.append(module)
    wires = set()
    for k, m in enumerate(modules[1:], start=1):
        for port in m["inputs"]:
            src = modules[rng.randrange(max(0, k - 6), k)]
            wires.add(f"{src['id']}.{rng.choice(src['outputs'])} -> {m['id']}.{port}")
    doc = {"fifoflow": 1, "id": "fifty", "modules": modules, "wires": sorted(wires)}
    path = folder / "flow.json"
    path.write_bytes(orjson.dumps(doc))
    return path, doc


@needs_node
def test_fifty_modules_boxes_do_not_overlap(tmp_path: Path) -> None:
    path, doc = fifty_module_flow(tmp_path)
    root = svg_of(path)
    rects = module_rects(root)
    assert len(rects) == 50
    assert len(groups(root, "data-wire")) == len(doc["wires"])
    for (a, ra), (b, rb) in itertools.combinations(rects.items(), 2):
        ax, ay, aw, ah = ra
        bx, by, bw, bh = rb
        apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
        assert apart, f"{a} {ra} overlaps {b} {rb}"
    # every box inside the picture
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    for x, y, w, h in rects.values():
        assert 0 <= x
        assert x + w <= width
        assert 0 <= y
        assert y + h <= height


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
@needs_node
def test_committed_example_pictures_are_up_to_date(example: str) -> None:
    committed = EXAMPLES / example / "flow.svg"
    assert committed.exists(), f"run: fifoflow graph flows/examples/{example}/flow.json"
    result = fifoflow("graph", str(EXAMPLES / example / "flow.json"), "-o", "-")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == committed.read_text(), (
        f"flows/examples/{example}/flow.svg is out of date: "
        f"run fifoflow graph flows/examples/{example}/flow.json and commit it"
    )
    assert f"({example}/flow.svg)" in (EXAMPLES / "README.md").read_text()


@needs_node
def test_default_output_is_beside_the_flow_with_the_format_suffix(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "hello", tmp_path / "hello")
    (tmp_path / "hello" / "flow.svg").unlink()
    flow = tmp_path / "hello" / "flow.json"
    result = fifoflow("graph", str(flow))
    assert result.returncode == 0, result.stderr.decode()
    assert ET.fromstring((tmp_path / "hello" / "flow.svg").read_bytes()).tag == f"{SVG_NS}svg"
    assert b"3 modules, 2 wires" in result.stderr
    result = fifoflow("graph", str(flow), "--format", "dot")
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "hello" / "flow.dot").read_text().startswith('digraph "hello" {')


@needs_node
def test_svg_is_drawn_without_network() -> None:
    """node draws from the vendored file only: it works with no network at all (a new
    network namespace has no interface but a down loopback) and refers to nothing outside."""
    flow = load_flow(EXAMPLES / "fan-out-fan-in" / "flow.json", runtimes=discover().keys())
    doc = picture.flow_document(flow)
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "--net", "true"], check=False).returncode == 0
    ):
        done = subprocess.run(
            ["unshare", "--net", "node", str(UI / "graph_cli.mjs")],
            input=orjson.dumps(doc),
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.startswith(b"<svg")
    svg = picture.render_svg(doc)
    assert re.findall(r"https?://[^\"' ]+", svg) == ["http://www.w3.org/2000/svg"]
    for source in (UI / "graph_cli.mjs", UI / "static" / "graph.mjs"):
        imports = re.findall(r"""^import .* from ["']([^"']+)["'];$""", source.read_text(), re.M)
        assert all(i.startswith(("node:", "./")) for i in imports), imports


@needs_node
def test_palette_is_the_one_graph_mjs_exports() -> None:
    script = (
        f"import {{ PALETTE }} from {orjson.dumps((UI / 'static' / 'graph.mjs').as_uri()).decode()};"
        "process.stdout.write(JSON.stringify(PALETTE));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, timeout=60, check=True
    )
    js = orjson.loads(done.stdout)
    assert js == {
        rt: {"fill": c.fill, "stroke": c.stroke, "text": c.text}
        for rt, c in picture.PALETTE.items()
    }


@needs_node
def test_to_elk_puts_inputs_west_and_outputs_east_in_order() -> None:
    script = (
        f"import {{ toElk }} from {orjson.dumps((UI / 'static' / 'graph.mjs').as_uri()).decode()};"
        "const g = toElk({id: 'f', modules: [{id: 'a', runtime: 'python', inputs: ['x', 'y'],"
        " outputs: ['p', 'q', 'r']}, {id: 'b', runtime: 'weird'}], wires: ['a.q -> b.in']});"
        "process.stdout.write(JSON.stringify(g));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, timeout=60, check=True
    )
    g = orjson.loads(done.stdout)
    a = g["children"][0]
    sides = [(p["layoutOptions"]["elk.port.side"], p["y"]) for p in a["ports"]]
    assert [s for s, _ in sides] == ["WEST", "WEST", "EAST", "EAST", "EAST"]
    assert sides[0][1] < sides[1][1]
    assert sides[2][1] < sides[3][1] < sides[4][1]
    assert a["layoutOptions"]["elk.portConstraints"] == "FIXED_POS"
    assert g["edges"] == [{"id": "a.q->b.in", "sources": ["a:out:1"], "targets": ["b:in:0"]}]
    assert g["layoutOptions"]["elk.direction"] == "RIGHT"


# ---------------------------------------------------------------- DOT and PNG


def test_dot_has_a_node_per_module_and_an_edge_per_wire(tmp_path: Path) -> None:
    for example in ("fan-out-fan-in", "hello"):
        doc = orjson.loads((EXAMPLES / example / "flow.json").read_bytes())
        env = {**os.environ, "PATH": str(tmp_path)}  # DOT needs no node
        result = fifoflow(
            "graph", str(EXAMPLES / example / "flow.json"), "--format", "dot", "-o", "-", env=env
        )
        assert result.returncode == 0, result.stderr.decode()
        dot = result.stdout.decode()
        nodes = re.findall(r'^  "([^"]+)" \[label="\{(.*)\}", fillcolor="(#\w+)"', dot, re.M)
        edges = re.findall(r'^  "([^"]+)":o(\d+):e -> "([^"]+)":i(\d+):w;$', dot, re.M)
        assert [n for n, _, _ in nodes] == [m["id"] for m in doc["modules"]]
        assert len(edges) == len(doc["wires"])
        for m, (_, label, fill) in zip(doc["modules"], nodes, strict=True):
            assert fill == picture.PALETTE.get(m["runtime"], picture.PALETTE["other"]).fill
            for k, port in enumerate(m.get("outputs", ["out"])):
                assert f"<o{k}> {port}" in label
        assert dot.startswith(f'digraph "{doc["id"]}" {{\n  rankdir=LR;')
        assert dot.rstrip().endswith("}")


def test_dot_escapes_record_characters() -> None:
    doc = {
        "id": "odd",
        "modules": [
            {"id": "a", "runtime": "exec", "inputs": ["in"], "outputs": ["x|y", "<z>"]},
            {"id": "b", "runtime": "elsewhere", "inputs": ['{"q"}'], "outputs": []},
        ],
        "wires": ['a.x|y -> b.{"q"}', 'a.<z> -> b.{"q"}'],
    }
    dot = picture.render_dot(doc)
    assert r"<o0> x\|y|<o1> \<z\>" in dot
    assert r"{<i0> \{\"q\"\}}|b\nelsewhere}" in dot  # no outputs: no empty field
    assert '"a":o0:e -> "b":i0:w;' in dot
    assert '"a":o1:e -> "b":i0:w;' in dot
    assert f'fillcolor="{picture.PALETTE["other"].fill}"' in dot


@needs_node
def test_png_starts_with_the_png_signature(tmp_path: Path) -> None:
    if picture.find_chromium() is None:
        why = "no Chromium (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    target = tmp_path / "f.png"
    result = fifoflow(
        "graph",
        str(EXAMPLES / "fan-out-fan-in" / "flow.json"),
        "--format",
        "png",
        "-o",
        str(target),
    )
    assert result.returncode == 0, result.stderr.decode()
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    root = ET.fromstring((EXAMPLES / "fan-out-fan-in" / "flow.svg").read_bytes())
    assert (width, height) == (2 * int(root.attrib["width"]), 2 * int(root.attrib["height"]))


# ---------------------------------------------------------------- errors


def test_missing_flow_file_is_named(tmp_path: Path) -> None:
    result = fifoflow("graph", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.json'}: invalid flow" in result.stderr.decode()
    assert "cannot read flow file" in result.stderr.decode()
    assert not (tmp_path / "nope.svg").exists()


def test_invalid_flow_gets_validates_messages(tmp_path: Path) -> None:
    doc = orjson.loads((EXAMPLES / "fan-out-fan-in" / "flow.json").read_bytes())
    doc["wires"].append("split.nowhere -> join.in")
    doc["modules"][1]["runtime"] = "cobol"
    shutil.copytree(EXAMPLES / "fan-out-fan-in", tmp_path / "f")
    (tmp_path / "f" / "flow.svg").unlink()
    flow = tmp_path / "f" / "flow.json"
    flow.write_bytes(orjson.dumps(doc))
    graph = fifoflow("graph", str(flow))
    validate = fifoflow("validate", str(flow))
    assert graph.returncode == validate.returncode == 2
    assert graph.stderr == validate.stderr
    stderr = graph.stderr.decode()
    assert "modules[1].runtime" in stderr
    assert "cobol" in stderr
    assert "has no output port 'nowhere'" in stderr
    assert not (tmp_path / "f" / "flow.svg").exists()


def test_missing_node_is_named_and_dot_still_works(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no node on PATH
    flow = str(EXAMPLES / "hello" / "flow.json")
    for fmt in ("svg", "png"):
        result = fifoflow("graph", flow, "--format", fmt, "-o", str(tmp_path / f"x.{fmt}"), env=env)
        assert result.returncode == 1
        stderr = result.stderr.decode()
        assert "node not found" in stderr
        assert "--format dot needs no node" in stderr
        assert not (tmp_path / f"x.{fmt}").exists()
