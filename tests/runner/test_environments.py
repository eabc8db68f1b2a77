"""Environments: modules needing conflicting versions of a package run at once, each in
its own environment and runtime process; sets are built once and shared."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio

from fifoflow.flows import FlowError
from fifoflow.runner import RunnerConfig, RunnerError, open_runner

from ..conftest import make_wheel
from .helpers import Collector, make_flow, next_event

if TYPE_CHECKING:
    from pathlib import Path


def py_flow(fid: str, spec: str) -> dict[str, Any]:
    code = "import fflib\ndef handle(msg, ctx):\n    return fflib.VERSION\n"
    return {
        "id": fid,
        "modules": [{"id": "m", "runtime": "python", "code": code, "requirements": [spec]}],
    }


def node_flow(fid: str, tgz: Path) -> dict[str, Any]:
    code = "const lib = require('fflib-node');\nexports.handle = () => lib.VERSION;\n"
    return {
        "id": fid,
        "modules": [{"id": "m", "runtime": "node", "code": code, "packages": [str(tgz)]}],
    }


async def _answer(runner: Any, fid: str) -> Any:
    sink = Collector()
    runner.set_output_sink(fid, sink)
    await runner.inject(fid, "m", "in", [1])
    await sink.wait_for(1, seconds=60)
    return sink.msgs()[0]


async def test_conflicting_python_versions_run_side_by_side(tmp_path: Path, offline: Path) -> None:
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        sub = runner.subscribe(kinds=["environment"])
        for fid, spec in (("one", "fflib==1.0"), ("two", "fflib==2.0")):
            await runner.add_or_update_flow(make_flow(py_flow(fid, spec)))
            await runner.start_flow(fid)
        assert await _answer(runner, "one") == "1.0"
        assert await _answer(runner, "two") == "2.0"
        assert runner.environments.builds == 2
        phases = set()
        with trio.move_on_after(0):
            while True:
                phases.add((await sub.receive())["phase"])
        assert {"resolving", "installing", "done"} <= phases
        envs = {e["requirements"][0]: e for e in runner.list_environments("python")}
        assert envs["fflib==1.0"]["packages"] == ["fflib==1.0"]
        assert envs["fflib==1.0"]["usedBy"] == ["one"]
        # Cache: a third flow with the same set builds nothing and shares the environment.
        await runner.add_or_update_flow(make_flow(py_flow("three", "fflib == 1.0")))
        await runner.start_flow("three")
        assert await _answer(runner, "three") == "1.0"
        assert runner.environments.builds == 2
        assert runner.environments_in_use()[envs["fflib==1.0"]["id"]] == ["one", "three"]


async def test_conflicting_node_versions_run_side_by_side(tmp_path: Path, offline: Path) -> None:
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        for fid, version in (("one", "1.0.0"), ("two", "2.0.0")):
            await runner.add_or_update_flow(
                make_flow(node_flow(fid, offline / f"fflib-node-{version}.tgz"))
            )
            await runner.start_flow(fid)
        assert await _answer(runner, "one") == "1.0.0"
        assert await _answer(runner, "two") == "2.0.0"
        [env] = [e for e in runner.list_environments("node") if e["usedBy"] == ["one"]]
        assert env["packages"] == ["fflib-node@1.0.0"]


async def test_a_missing_package_fails_only_its_flow(tmp_path: Path, offline: Path) -> None:
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        await runner.add_or_update_flow(make_flow(py_flow("good", "fflib==1.0")))
        await runner.start_flow("good")
        await runner.add_or_update_flow(make_flow(py_flow("bad", "nosuchpkg-fifoflow==1.0")))
        with pytest.raises(RunnerError, match="nosuchpkg-fifoflow") as info:
            await runner.start_flow("bad")
        assert info.value.code == "environment_failed"
        assert "installer log" in str(info.value)
        assert runner.flow("bad").status.value == "failed"
        assert await _answer(runner, "good") == "1.0"
        assert [e["usedBy"] for e in runner.list_environments()] == [["good"]]  # no half env


def test_bad_specifiers_are_named() -> None:
    with pytest.raises(FlowError) as info:
        make_flow(
            {
                "id": "f",
                "requirements": ["ok>=1", "not a spec!!"],
                "modules": [
                    {"id": "a", "runtime": "python", "code": "", "requirements": ["x>=>=1"]},
                    {"id": "b", "runtime": "node", "code": "", "packages": ["Bad Name@1"]},
                    {"id": "c", "runtime": "node", "code": "", "requirements": ["x"]},
                ],
            }
        )
    paths = {p.path for p in info.value.problems}
    assert paths >= {
        "requirements[1]",
        "modules[0].requirements[0]",
        "modules[1].packages[0]",
        "modules[2].requirements",
    }


async def test_a_module_moved_to_a_new_requirement_set_keeps_its_state(
    tmp_path: Path, offline: Path
) -> None:
    code = (
        "import fflib\n"
        "def handle(msg, ctx):\n"
        "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
        "    return [fflib.VERSION, ctx.state['n']]\n"
    )
    doc = {
        "id": "f",
        "modules": [{"id": "m", "runtime": "python", "code": code, "requirements": ["fflib==1.0"]}],
    }
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        await runner.add_or_update_flow(make_flow(doc))
        sink = Collector()
        runner.set_output_sink("f", sink)
        await runner.start_flow("f")
        await runner.inject("f", "m", "in", [1, 2])
        await sink.wait_for(2, seconds=60)
        doc["modules"][0]["requirements"] = ["fflib==2.0"]
        report = (await runner.apply_flow(make_flow(doc))).report
        assert report is not None
        [moved] = report["changes"]["moved"]
        assert moved["from"].startswith("python-")
        assert moved["to"] != moved["from"]
        await runner.inject("f", "m", "in", [3])
        await sink.wait_for(3, seconds=60)
        assert sink.msgs() == [["1.0", 1], ["1.0", 2], ["2.0", 3]]


async def test_environment_api_install_rebuild_gc(tmp_path: Path, offline: Path) -> None:
    make_wheel(offline, "extralib", "0.1")
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        await runner.add_or_update_flow(make_flow(py_flow("one", "fflib==1.0")))
        await runner.start_flow("one")
        [env] = runner.list_environments()
        changed = await runner.change_environment(env["id"], ["extralib==0.1"], [])
        assert "extralib==0.1" in changed["packages"]
        changed = await runner.change_environment(env["id"], [], ["extralib==0.1"])
        assert "extralib==0.1" not in changed["packages"]
        rebuilt = await runner.rebuild_environment(env["id"])
        assert rebuilt["packages"] == ["fflib==1.0"]
        assert runner.gc_environments(max_idle=0) == []  # in use
        await runner.remove_flow("one")
        assert runner.gc_environments(max_idle=0) == [env["id"]]
        assert runner.list_environments() == []
        assert not (tmp_path / "envs" / env["id"]).exists()


async def test_the_host_survives_any_orjson_a_user_pins(tmp_path: Path, offline: Path) -> None:
    """A module may need an orjson that is not one the host can use (here a stub with
    nothing in it): the host falls back to the standard library and works on."""
    make_wheel(offline, "orjson", "0.0.1")
    code = "import orjson\ndef handle(msg, ctx):\n    return [msg, hasattr(orjson, 'dumps')]\n"
    doc = {
        "id": "pin",
        "modules": [
            {"id": "m", "runtime": "python", "code": code, "requirements": ["orjson==0.0.1"]}
        ],
    }
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        await runner.add_or_update_flow(make_flow(doc))
        await runner.start_flow("pin")
        sink = Collector()
        runner.set_output_sink("pin", sink)
        await runner.inject("pin", "m", "in", [{"n": 1}])
        await sink.wait_for(1, seconds=60)
        assert sink.msgs() == [[{"n": 1}, False]]


def _registry_reachable(argv: list[str]) -> str | None:
    """None if the registry answers, else why not (the tool's own words)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]


@pytest.mark.parametrize(
    ("runtime", "spec", "probe", "code", "expected"),
    [
        (
            "python",
            "six==1.16.0",
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                "{tmp}",
                "six==1.16.0",
            ],
            "import six\ndef handle(msg, ctx):\n    return six.__version__\n",
            "1.16.0",
        ),
        (
            "node",
            "is-number@7.0.0",
            ["npm", "view", "is-number@7.0.0", "version"],
            "const isNumber = require('is-number');\nexports.handle = (msg) => isNumber(msg);\n",
            True,
        ),
    ],
)
async def test_installing_from_the_real_registry(
    tmp_path: Path, runtime: str, spec: str, probe: list[str], code: str, expected: Any
) -> None:
    why = _registry_reachable([part.replace("{tmp}", str(tmp_path)) for part in probe])
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the {runtime} package registry cannot be reached under CI=true: {why}")
        pytest.skip(f"the {runtime} package registry cannot be reached from here: {why}")
    field = "requirements" if runtime == "python" else "packages"
    doc = {"id": "real", "modules": [{"id": "m", "runtime": runtime, "code": code, field: [spec]}]}
    async with open_runner(RunnerConfig(env_dir=tmp_path / "envs")) as runner:
        await runner.add_or_update_flow(make_flow(doc))
        await runner.start_flow("real")
        sink = Collector()
        runner.set_output_sink("real", sink)
        await runner.inject("real", "m", "in", [5])
        await sink.wait_for(1, seconds=60)
        assert sink.msgs() == [expected]


async def test_unused_environments_are_collected_by_the_runner(
    tmp_path: Path, offline: Path
) -> None:
    config = RunnerConfig(env_dir=tmp_path / "envs", env_max_idle=0, env_gc_interval=0.05)
    async with open_runner(config) as runner:
        sub = runner.subscribe(kinds=["environment"])
        await runner.add_or_update_flow(make_flow(py_flow("one", "fflib==1.0")))
        await runner.start_flow("one")
        done = await next_event(sub, "environment", phase="done")
        folder = tmp_path / "envs" / done["env"]
        await runner.remove_flow("one")
        # The runner's own collector removes it.
        await next_event(sub, "environment", phase="removed", env=done["env"])
        assert not folder.exists()
