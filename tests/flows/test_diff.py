"""diff_flows: what a hot swap will do, computed from two versions of a flow."""

from __future__ import annotations

from typing import Any

from fifoflow.flows import Wire
from fifoflow.flows.diff import diff_flows

from ..runner.helpers import make_flow

BASE: dict[str, Any] = {
    "id": "f",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(m, c):\n    return m\n"},
        {"id": "b", "runtime": "node", "code": "exports.handle = (m) => m;\n", "config": {"k": 1}},
        {"id": "c", "runtime": "python", "code": "def handle(m, c):\n    return m\n"},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}


def _with(**changes: Any) -> Any:
    doc = {**BASE, "modules": [dict(m) for m in BASE["modules"]], "wires": list(BASE["wires"])}
    for key, value in changes.items():
        doc[key] = value
    return doc


def test_no_change_is_empty() -> None:
    diff = diff_flows(make_flow(BASE), make_flow(_with(description="now documented")))
    assert diff.empty
    assert diff.summary() == "no change"


def test_every_kind_of_change_is_named() -> None:
    new = _with()
    new["modules"][0]["code"] = "def handle(m, c):\n    return [m]\n"  # code
    new["modules"][1]["config"] = {"k": 2}  # config
    new["modules"][2]["runtime"] = "node"  # moved
    new["modules"][2]["code"] = "exports.handle = (m) => m;\n"
    new["modules"][2]["outputs"] = ["out", "extra"]
    new["modules"].append({"id": "d", "runtime": "python", "code": "def handle(m, c):\n    pass\n"})
    new["wires"] = ["a.out -> b.in", "b.out -> c.in", "c.extra -> d.in"]
    diff = diff_flows(make_flow(BASE), make_flow(new))
    assert diff.code_changed == ("a",)
    assert diff.config_changed == ("b",)
    assert diff.moved == (("c", "python", "node"),)
    assert diff.ports_changed == ("c",)
    assert diff.added == ("d",)
    assert diff.removed == ()
    assert diff.wires_added == (Wire.parse("c.extra -> d.in"),)
    assert diff.wires_removed == ()
    assert diff.reloaded() == ("a", "b")
    assert (
        diff.summary()
        == "added: d; code: a; config: b; ports: c; moved: c (python -> node); +1 wire"
    )
    assert diff.describe()["moved"] == [{"module": "c", "from": "python", "to": "node"}]


def test_removed_modules_and_wires() -> None:
    new = _with(modules=BASE["modules"][:2], wires=["a.out -> b.in"])
    diff = diff_flows(make_flow(BASE), make_flow(new))
    assert diff.removed == ("c",)
    assert diff.wires_removed == (Wire.parse("b.out -> c.in"),)
    assert not diff.empty


def test_timeout_is_config_and_command_is_code() -> None:
    new = _with()
    new["modules"][0]["timeout"] = 5
    assert diff_flows(make_flow(BASE), make_flow(new)).config_changed == ("a",)
    old_exec = {"id": "e", "modules": [{"id": "x", "runtime": "exec", "command": ["cat"]}]}
    new_exec = {"id": "e", "modules": [{"id": "x", "runtime": "exec", "command": ["tee"]}]}
    assert diff_flows(make_flow(old_exec), make_flow(new_exec)).code_changed == ("x",)


def test_listed_exits_are_a_routing_change() -> None:
    diff = diff_flows(make_flow(BASE), make_flow(_with(exits=["a.out"])))
    assert not diff.empty
    assert diff.exits_added == ("a.out",)
    assert diff.summary() == "exits added: a.out"
    back = diff_flows(make_flow(_with(exits=["a.out"])), make_flow(BASE))
    assert back.exits_removed == ("a.out",)
