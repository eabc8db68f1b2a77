"""The command's shape: ``fifoflow --help`` names every command group, and every group
(and every module of ``api/cli/``) can be reached; both as real subprocesses."""

from __future__ import annotations

import subprocess
import sys

import orjson

GROUPS = [
    "run", "validate", "runtimes", "graph", "dev", "debug", "runner", "dispatcher", "images",
    "flow", "inject", "logs", "break", "pause", "continue", "step", "queues", "env",
    "runs", "state", "conformance",
]  # fmt: skip

DISPATCHER_ACTIONS = [
    "serve", "token", "runners", "events", "flows", "deploy", "drain", "containers",
    "client-token", "update-image",
]  # fmt: skip

# In one interpreter: every module of the package imports, and every command, group and
# subcommand, answers --help (which builds its parser and exits 0).
WALK = """
import argparse, contextlib, importlib, io, pkgutil, sys
import orjson
import fifoflow.api.cli as cli
from fifoflow.api.cli.main import build_parser, main

modules = sorted(m.name for m in pkgutil.iter_modules(cli.__path__))
for name in modules:
    importlib.import_module(f"fifoflow.api.cli.{name}")

def commands(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*path, name])

answers = {}
for path in commands(build_parser(), []):
    if path[:1] == ["conformance"]:
        continue  # the kit parses its own arguments; it is run below
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            answers[" ".join(path)] = [exc.code, out.getvalue().startswith("usage: fifoflow")]
funcs = {}
def leaves(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                leaves(sub, [*path, name])
    func = parser._defaults.get("func")
    if func is not None:
        funcs[" ".join(path)] = func.__module__
leaves(build_parser(), [])
sys.stdout.write(orjson.dumps({"modules": modules, "answers": answers, "funcs": funcs}).decode())
"""


def test_help_lists_every_command_group() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fifoflow.api", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert listed == GROUPS
    for group in GROUPS:
        assert f"\n    {group} " in done.stdout, group  # with its one-line help


def test_every_command_and_module_is_reachable() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WALK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    found = orjson.loads(done.stdout)
    assert {path.split()[0] for path in found["answers"] if path} == set(GROUPS) - {"conformance"}
    bad = {path: answer for path, answer in found["answers"].items() if answer != [0, True]}
    assert not bad
    # a newcomer finds each command group by its file's name
    assert {path: module.rsplit(".", 1)[1] for path, module in found["funcs"].items()} == {
        **dict.fromkeys(["run", "validate", "runtimes"], "local"),
        "graph": "graph",
        "dev": "dev",
        "debug": "debug",
        **dict.fromkeys(["runner serve", "runner health"], "runner"),
        **dict.fromkeys(["runner install-service", "runner uninstall-service"], "service"),
        **{f"dispatcher {action}": "dispatcher" for action in DISPATCHER_ACTIONS},
        "images build": "images",
        **dict.fromkeys(["flow", "inject", "logs", "state"], "flows"),
        **dict.fromkeys(["break", "pause", "continue", "step", "queues"], "debugger"),
        "env": "envs",
        **{f"runs {a}": "runs" for a in ("submit", "list", "show", "cancel", "logs", "result")},
    }
    assert set(found["modules"]) == {
        "common", "debug", "debugger", "debugview", "dev", "dispatcher", "envs", "flows",
        "graph", "images", "local", "main", "runner", "runs", "service",
    }  # fmt: skip
    kit = subprocess.run(
        [sys.executable, "-m", "fifoflow.api", "conformance", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert kit.returncode == 0, kit.stderr
    assert kit.stdout.startswith("usage: fifoflow conformance")
