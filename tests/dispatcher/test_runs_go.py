"""Runs with go modules through a real dispatcher and a real runner process: a python ->
go -> node run succeeds with its outputs (the go host built as part of the attempt: a
build line in the run's logs); a run whose go module does not compile ends ``failed``
at its first attempt with the file and line, and is not retried."""

from __future__ import annotations

import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import pytest

from .test_dispatcher import DispatcherProcess, linked_id
from .test_runs import TERMINAL, Runs, dispatcher, runners, start_runner  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from ..api.helpers import ServerProcess

if shutil.which("go") is None and not os.environ.get("FIFOFLOW_GO"):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI: the go toolchain is missing (tests.setup_machine installs golang-go)"
        )
    pytest.skip("no Go toolchain (apt-get install golang-go)", allow_module_level=True)

#: a cold Go cache compiles the standard library first (~20 s here)
BUILD = 180


def flow(go_code: str) -> dict[str, Any]:
    return {
        "fifoflow": 1,
        "id": "gojob",
        "modules": [
            {"id": "src", "runtime": "python", "code": "def handle(msg, ctx):\n    return {'i': msg}\n"},
            {"id": "mid", "runtime": "go", "code": go_code},
            {"id": "dst", "runtime": "node", "code": "exports.handle = (m) => ({ ...m, node: true });\n"},
        ],
        "wires": ["src.out -> mid.in", "mid.out -> dst.in"],
    }  # fmt: skip


def go_double(tag: str) -> str:
    return (
        "package mid\n\n"
        'import "fifoflow"\n\n'
        f"// {tag}\n"
        "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
        "\tm := msg.(map[string]any)\n"
        '\tm["double"] = m["i"].(float64) * 2\n'
        "\treturn m, nil\n"
        "}\n"
    )


#: line 6 does not compile
GO_BROKEN = (
    "package mid\n\n"
    'import "fifoflow"\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    "\treturn nope(msg), nil\n"
    "}\n"
)


def submit(proc: DispatcherProcess, doc: dict[str, Any], msgs: list[Any]) -> dict[str, Any]:
    body = {"document": doc, "inputs": [{"to": "src.in", "msg": m} for m in msgs]}
    return proc.api("POST", "/runs", json=body)  # type: ignore[no-any-return]


def test_go_runs_through_a_dispatcher(
    tmp_path: Path,
    dispatcher: DispatcherProcess,  # noqa: F811
    runners: list[ServerProcess],  # noqa: F811
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher))
    runner_id = linked_id(runners[0])
    runs = Runs(dispatcher)
    run = submit(dispatcher, flow(go_double(secrets.token_hex(8))), [1, 2])
    view = runs.wait_state(run["id"], *TERMINAL, timeout=BUILD)
    assert view["state"] == "succeeded", view
    assert (view["attempt"], view["worker"]) == (1, runner_id)
    result = runs.result(run["id"])
    assert [o["msg"] for o in result["outputs"]] == [
        {"i": 1, "double": 2, "node": True},
        {"i": 2, "double": 4, "node": True},
    ]
    assert result["handled"] == {"src": 2, "mid": 2, "dst": 2}
    builds = [e["text"] for e in result["logs"] if e["stream"] == "build"]
    assert any(text.startswith("built the go host go-") for text in builds), builds

    broken = submit(dispatcher, flow(GO_BROKEN), [1])
    view = runs.wait_state(broken["id"], *TERMINAL, timeout=BUILD)
    assert view["state"] == "failed", view
    assert view["attempt"] == 1
    assert [e["state"] for e in view["events"]] == ["queued", "running", "failed"]
    assert "gojob/mid:6:" in view["reason"], view["reason"]
    assert "module mid does not build" in view["reason"]
    result = runs.result(broken["id"])
    assert result["errors"][0]["error"]["type"] == "CompileError"
