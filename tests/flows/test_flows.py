"""Flow documents: validation names every problem's field, dumps are stable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import attrs
import cattrs
import orjson
import pytest

from fifoflow.flows import FlowError, Wire, dump_flow, load_flow, parse_flow
from fifoflow.flows.converter import Limit, make_converter
from fifoflow.flows.converter import problems as structure_problems

RUNTIMES = {"python", "node", "exec"}
EXAMPLES = Path(__file__).resolve().parents[2] / "flows" / "examples"


def problems(doc: object, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(FlowError) as info:
        parse_flow(
            doc if isinstance(doc, (bytes, str)) else orjson.dumps(doc),
            base_dir=base_dir,
            runtimes=RUNTIMES,
        )
    return [str(p) for p in info.value.problems]


def doc(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "fifoflow": 1,
        "id": "f",
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(m, c): return m"},
            {
                "id": "b",
                "runtime": "node",
                "code": "exports.handle = (m) => m",
                "outputs": ["out", "audit"],
            },
        ],
        "wires": ["a.out -> b.in"],
    }
    base.update(overrides)
    return base


def test_a_valid_flow_parses_with_defaults() -> None:
    flow = parse_flow(orjson.dumps(doc()), base_dir=None, runtimes=RUNTIMES)
    assert [m.id for m in flow.modules] == ["a", "b"]
    assert flow.module("a").inputs == ("in",)
    assert flow.module("b").outputs == ("out", "audit")
    assert flow.module("a").timeout == 30
    assert flow.wires == (Wire("a", "out", "b", "in"),)
    assert flow.entry_ports() == [("a", "in")]
    assert flow.exit_ports() == [("b", "out"), ("b", "audit")]
    assert flow.qualified("a") == "f/a"
    assert flow.module("a").filename == "f/a"


def test_unknown_runtime_names_the_field_and_the_known_ones() -> None:
    d = doc()
    d["modules"][1]["runtime"] = "nodejs"  # type: ignore[index]
    assert problems(d) == [
        "modules[1].runtime: unknown runtime 'nodejs' (known: exec, node, python)"
    ]


def test_wires_to_missing_modules_and_ports() -> None:
    d = doc(wires=["a.out -> shoot.in", "a.outt -> b.in", "a.out -> b.inn", "a.out b.in"])
    assert problems(d) == [
        "wires[0]: module 'shoot' does not exist (modules: a, b)",
        "wires[1]: 'a' has no output port 'outt' (outputs: out)",
        "wires[2]: 'b' has no input port 'inn' (inputs: in)",
        "wires[3]: not a wire: 'a.out b.in' (expected 'module.port -> module.port')",
    ]


def test_duplicate_ids_and_wires() -> None:
    d = doc(wires=["a.out -> b.in", "a.out  ->  b.in"])
    d["modules"].append({"id": "a", "runtime": "python", "code": "x"})  # type: ignore[union-attr]
    assert problems(d) == [
        "modules[2].id: duplicate module id 'a' (first at modules[0])",
        "wires[1]: duplicate wire 'a.out -> b.in' (first at wires[0])",
    ]


def test_module_file_not_found_names_the_absolute_path(tmp_path: Path) -> None:
    d = doc()
    d["modules"][0] = {"id": "a", "runtime": "python", "file": "missing.py"}  # type: ignore[index]
    assert problems(d, base_dir=tmp_path) == [
        f"modules[0].file: file not found: {tmp_path / 'missing.py'}"
    ]


def test_wrong_format_version_and_missing_version() -> None:
    assert problems(doc(fifoflow=2)) == [
        "fifoflow: unsupported format version 2 (this fifoflow reads version 1)"
    ]
    d = doc()
    del d["fifoflow"]
    assert problems(d) == ['fifoflow: missing format version (add "fifoflow": 1)']


def test_type_errors_and_unknown_fields_name_their_path() -> None:
    d = doc(id=7)
    d["modules"][0] = {
        "id": "a",
        "runtime": "python",
        "code": "x",
        "timeout": "soon",
        "colour": "red",
    }  # type: ignore[index]
    found = problems(d)
    assert any(p.startswith("id: ") for p in found)
    assert any(p.startswith("modules[0].timeout: ") for p in found)
    assert "modules[0]: unknown field(s): colour" in found


def test_arrays_must_be_arrays_and_null_is_refused() -> None:
    # (a loose converter takes any iterable: {} or "ab" as a list)
    assert problems(doc(wires={})) == ["wires: expected an array, got an object"]
    assert problems(doc(modules="ab")) == ["modules: expected an array, got a string"]
    # a module given as a plain string (once: "'str' object has no attribute 'keys'")
    assert problems(doc(modules=["double"])) == ["modules[0]: expected an object, got a string"]
    assert problems(doc(description=None, packages=None)) == [
        "description: null is not allowed here: leave the field out",
        "packages: null is not allowed here: leave the field out",
    ]


def test_placement_resources_parse_and_dump_canonically() -> None:
    d = doc()
    d["modules"][0]["placement"] = {"cpus": 0.5, "memory": "1024Mi", "labels": {"zone": "a"}}  # type: ignore[index]
    flow = parse_flow(orjson.dumps(d), base_dir=None, runtimes=RUNTIMES)
    a = flow.module("a")
    assert (a.cpus, a.memory, a.labels) == (0.5, 1024**3, {"zone": "a"})
    dumped = orjson.loads(dump_flow(flow))
    assert dumped["modules"][0]["placement"] == {
        "labels": {"zone": "a"},
        "cpus": 0.5,
        "memory": "1GiB",
    }
    d["modules"][0]["placement"] = {"cpus": -1, "memory": "lots", "gpu": 1}  # type: ignore[index]
    found = problems(d)
    assert "modules[0].placement: unknown field(s): gpu (known: labels, cpus, memory)" in found
    assert "modules[0].placement.cpus: cpus must be a number >= 0, got -1" in found
    assert any(p.startswith("modules[0].placement.memory: not a size: 'lots'") for p in found)


def test_code_and_command_rules() -> None:
    d = doc(wires=[])
    d["modules"] = [
        {"id": "a", "runtime": "python"},
        {"id": "b", "runtime": "python", "code": "x", "file": "y.py"},
        {"id": "c", "runtime": "exec", "code": "x"},
        {"id": "d", "runtime": "python", "code": "x", "command": ["ls"]},
        {"id": "9e", "runtime": "python", "code": "x", "timeout": 0},
    ]
    assert problems(d) == [
        "modules[0]: missing code: give inline code or a file",
        "modules[1]: give either code or file, not both",
        'modules[2].command: exec modules need a command (an argv list, e.g. ["sh", "step.sh"])',
        "modules[2].code: exec modules take a command, not code or file",
        "modules[3].command: only exec modules take a command (python modules take code or file)",
        "modules[4].id: invalid module id '9e' (letters, digits, '_' and '-'; not starting with a digit)",
        "modules[4].timeout: must be a positive number of seconds, at most 86400, got 0",
    ]


def test_invalid_json_says_where() -> None:
    (message,) = problems(b'{"fifoflow": 1,\n "id": "x",,}')
    assert "not valid JSON" in message
    assert "line 2" in message


def test_dump_is_stable_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def handle(m, c):\n    return m\n")
    source = {
        "wires": ["a.out -> b.in"],
        "modules": [
            {
                "runtime": "python",
                "id": "a",
                "file": "a.py",
                "config": {"z": 1, "a": {"y": 2, "b": 3}},
            },
            {"timeout": 5, "id": "b", "runtime": "node", "code": "exports.handle = (m) => m"},
        ],
        "id": "f",
        "fifoflow": 1,
    }
    (tmp_path / "flow.json").write_bytes(orjson.dumps(source))
    flow = load_flow(tmp_path / "flow.json", runtimes=RUNTIMES)
    assert flow.module("a").source == "def handle(m, c):\n    return m\n"
    assert flow.module("a").filename == str(tmp_path / "a.py")
    out = dump_flow(flow)
    assert out.endswith(b"\n")
    assert list(orjson.loads(out)) == ["fifoflow", "id", "modules", "wires"]
    assert list(orjson.loads(out)["modules"][0]) == ["id", "runtime", "file", "config"]
    assert orjson.loads(out)["modules"][0]["config"] == {"a": {"b": 3, "y": 2}, "z": 1}
    assert b'"code"' not in out.split(b'"id": "b"')[0], "file-based code must stay a file reference"
    again = parse_flow(out, base_dir=tmp_path, runtimes=RUNTIMES)
    assert again == flow
    assert dump_flow(again) == out


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXAMPLES.iterdir() if (p / "flow.json").exists())
)
def test_examples_load_and_are_in_canonical_form(name: str) -> None:
    path = EXAMPLES / name / "flow.json"
    flow = load_flow(path, runtimes={*RUNTIMES, "browser", "go"})
    assert flow.id == name
    assert dump_flow(flow) == path.read_bytes(), "example is not in the form dump_flow writes"


def test_the_limits_validate_knows_are_the_servers(tmp_path: Path) -> None:
    """A document too large, too many modules, a timeout no clock can wait, a config too
    large: refused by validate (a file) and by the API's parse (data) alike, naming the
    limit (flows/limits.py)."""
    from fifoflow.flows.limits import MAX_CONFIG, MAX_DOCUMENT, MAX_MODULES

    code = "def handle(msg, ctx):\n    return msg\n"
    cases = {
        "at most 8MiB": doc(modules=[{"id": "m", "runtime": "python", "code": "#" * MAX_DOCUMENT}]),
        f"at most {MAX_MODULES}": doc(
            modules=[
                {"id": f"m{i}", "runtime": "python", "code": code} for i in range(MAX_MODULES + 1)
            ]
        ),
        "at most 86400": doc(
            modules=[{"id": "m", "runtime": "python", "code": code, "timeout": 1e308}]
        ),
        "larger than 1MiB": doc(
            modules=[
                {"id": "m", "runtime": "python", "code": code, "config": {"x": "y" * MAX_CONFIG}}
            ]
        ),
    }
    for expected, document in cases.items():
        path = tmp_path / "flow.json"
        path.write_bytes(orjson.dumps(document))
        with pytest.raises(FlowError) as from_file:
            load_flow(path, runtimes=RUNTIMES)
        with pytest.raises(FlowError) as from_data:
            parse_flow(document, base_dir=None, runtimes=RUNTIMES)
        for info in (from_file, from_data):
            assert expected in str(info.value), (expected, str(info.value)[:200])


@attrs.frozen
class Named:
    name: Annotated[str, Limit(pattern=r"^[a-z]+$")]


def test_a_pattern_ends_at_the_end_of_the_string() -> None:
    """``^...$`` in a model's constraint does not let a trailing newline through (Python's
    ``$`` alone would: "python-0123\\n" as an environment id)."""
    converter = make_converter()
    assert converter.structure({"name": "abc"}, Named).name == "abc"
    with pytest.raises(cattrs.ClassValidationError) as info:
        converter.structure({"name": "abc\n"}, Named)
    assert [str(p) for p in structure_problems(info.value)] == [
        "name: 'abc\\n' does not match ^[a-z]+$"
    ]


def test_listed_exits_parse_dump_and_name_their_problems() -> None:
    flow = parse_flow(orjson.dumps(doc(exits=["a.out"])), base_dir=None, runtimes=RUNTIMES)
    assert flow.exits == (("a", "out"),)
    # a listed exit leaves the flow although a wire leaves it too
    assert flow.exit_ports() == [("a", "out"), ("b", "out"), ("b", "audit")]
    assert orjson.loads(dump_flow(flow))["exits"] == ["a.out"]
    assert "exits" not in orjson.loads(
        dump_flow(parse_flow(orjson.dumps(doc()), base_dir=None, runtimes=RUNTIMES))
    )
    assert problems(doc(exits=["a.out", "nope", "zz.out", "a.side", "a.out"])) == [
        "exits[1]: not an output port: 'nope' (expected 'module.port')",
        "exits[2]: module 'zz' does not exist (modules: a, b)",
        "exits[3]: 'a' has no output port 'side' (outputs: out)",
        "exits[4]: duplicate exit 'a.out'",
    ]
