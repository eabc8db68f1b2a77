"""A flow bundle: ``bundle_files`` carries the files an exec module's command names (and
only those inside the flow's folder); ``files`` names are plain relative paths, bounded
by MAX_MODULE_FILES; the runner's WorkDirs writes them where the command runs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fifoflow.flows import FlowError, bundle_files, dump_flow, load_flow, parse_flow
from fifoflow.flows.limits import MAX_MODULE_FILES
from fifoflow.runner.workdirs import WorkDirs

RUNTIMES = {"python", "node", "exec"}
EXAMPLES = Path(__file__).resolve().parents[2] / "flows" / "examples"


def exec_flow(folder: Path, command: list[str], **module: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "fifoflow": 1,
        "id": "f",
        "modules": [{"id": "x", "runtime": "exec", "command": command, **module}],
    }
    (folder / "flow.json").write_bytes(orjson.dumps(document))
    return folder / "flow.json"


def problems(document: dict[str, object]) -> list[str]:
    with pytest.raises(FlowError) as info:
        parse_flow(orjson.dumps(document), base_dir=None, runtimes=RUNTIMES)
    return [str(p) for p in info.value.problems]


def test_the_exec_example_carries_its_script() -> None:
    flow = bundle_files(load_flow(EXAMPLES / "exec" / "flow.json", runtimes=RUNTIMES))
    document = orjson.loads(dump_flow(flow, inline=True))
    shell = next(m for m in document["modules"] if m["id"] == "shell")
    assert shell["files"] == {"wrap.sh": (EXAMPLES / "exec" / "wrap.sh").read_text()}
    # and the document stands alone: a runner parses it without a folder
    again = parse_flow(orjson.dumps(document), base_dir=None, runtimes=RUNTIMES)
    assert again.module("shell").files == {"wrap.sh": (EXAMPLES / "exec" / "wrap.sh").read_text()}


def test_only_files_inside_the_folder_that_the_command_names_travel(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    folder = tmp_path / "flow"
    (folder / "lib").mkdir(parents=True)
    (folder / "step.sh").write_text("cat\n")
    (folder / "lib" / "data.txt").write_text("data")
    (folder / "unnamed.txt").write_text("not named")
    (folder / "out.txt").symlink_to(outside)
    command = [
        "sh", "./step.sh", "lib/data.txt", "lib", "missing.sh", str(outside),
        "../outside.txt", "out.txt", "--flag", "",
    ]  # fmt: skip
    flow = bundle_files(load_flow(exec_flow(folder, command), runtimes=RUNTIMES))
    assert flow.module("x").files == {"step.sh": "cat\n", "lib/data.txt": "data"}


def test_files_the_document_lists_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "step.sh").write_text("from the folder\n")
    flow_file = exec_flow(folder, ["sh", "step.sh"], files={"step.sh": "from the document\n"})
    flow = bundle_files(load_flow(flow_file, runtimes=RUNTIMES))
    assert flow.module("x").files == {"step.sh": "from the document\n"}


def test_a_binary_file_named_by_the_command_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "tool").write_bytes(b"\x7fELF\xff\xfe")
    with pytest.raises(FlowError) as info:
        bundle_files(load_flow(exec_flow(folder, ["./tool"]), runtimes=RUNTIMES))
    assert [str(p) for p in info.value.problems] == [
        "modules[0].command[0]: ./tool is not UTF-8 text: only text files travel with a flow "
        "(install programs on the runner)"
    ]


def test_file_names_are_plain_relative_paths_and_only_exec_modules_take_files() -> None:
    files = {"../x": "", "/etc/passwd": "", "a/./b": "", "a//b": "", "ok/fine.sh": "", "": ""}
    document = {
        "fifoflow": 1,
        "id": "f",
        "modules": [
            {"id": "x", "runtime": "exec", "command": ["sh"], "files": files},
            {"id": "p", "runtime": "python", "code": "", "files": {"a": ""}},
        ],
    }
    assert problems(document) == [
        "modules[0].files: '../x' is not a plain relative path (no '.', '..' or empty parts)",
        "modules[0].files: '/etc/passwd' is absolute: give a path relative to the module's folder",
        "modules[0].files: 'a/./b' is not a plain relative path (no '.', '..' or empty parts)",
        "modules[0].files: 'a//b' is not a plain relative path (no '.', '..' or empty parts)",
        "modules[0].files: a file name must be a non-empty path without NUL",
        "modules[1].files: only exec modules take files (python modules take code or file)",
    ]


def test_files_are_bounded_and_a_name_is_not_both_a_file_and_a_folder() -> None:
    big = "x" * (MAX_MODULE_FILES // 2 + 1)
    document = {
        "fifoflow": 1,
        "id": "f",
        "modules": [
            {"id": "x", "runtime": "exec", "command": ["sh"], "files": {"a": big, "b": big}},
            {"id": "y", "runtime": "exec", "command": ["sh"], "files": {"a": "", "a/b": ""}},
        ],
    }
    assert problems(document) == [
        f"modules[0].files: {2 * len(big)} bytes of files: a module carries at most 4MiB "
        "(MAX_MODULE_FILES)",
        "modules[1].files: 'a' is a file and a folder of 'a/b'",
    ]


def test_workdirs_write_hash_prune_and_remove(tmp_path: Path) -> None:
    def flow_with(files: dict[str, str]) -> object:
        document = {
            "fifoflow": 1,
            "id": "f",
            "modules": [
                {"id": "x", "runtime": "exec", "command": ["./run.sh"], "files": files},
                {"id": "y", "runtime": "exec", "command": ["cat"]},
            ],
        }
        return parse_flow(orjson.dumps(document), base_dir=None, runtimes=RUNTIMES)

    dirs = WorkDirs(tmp_path / "work")
    first = dirs.prepare(flow_with({"run.sh": "one", "lib/d.txt": "d"}))
    cwd = first.module("x").cwd
    assert cwd is not None
    assert cwd.parent == tmp_path / "work" / "f"
    assert first.module("y").cwd is None
    assert (cwd / "run.sh").read_text() == "one"
    assert (cwd / "run.sh").stat().st_mode & 0o777 == 0o700  # the program
    assert (cwd / "lib" / "d.txt").stat().st_mode & 0o777 == 0o600
    assert dirs.prepare(flow_with({"run.sh": "one", "lib/d.txt": "d"})).module("x").cwd == cwd
    second = dirs.prepare(flow_with({"run.sh": "two"}))
    assert (
        second.module("x").cwd != cwd
    )  # a new version, a new directory: the old child keeps its own
    assert cwd.exists()
    dirs.prune(second)
    assert not cwd.exists()
    assert (second.module("x").cwd / "run.sh").read_text() == "two"
    dirs.remove("f")
    assert not (tmp_path / "work" / "f").exists()


def test_a_runner_without_a_state_dir_removes_its_temporary_workdirs() -> None:
    dirs = WorkDirs(None)
    document = {
        "fifoflow": 1,
        "id": "f",
        "modules": [{"id": "x", "runtime": "exec", "command": ["cat"], "files": {"a": "b"}}],
    }
    flow = dirs.prepare(parse_flow(orjson.dumps(document), base_dir=None, runtimes=RUNTIMES))
    cwd = flow.module("x").cwd
    assert cwd is not None
    assert (cwd / "a").read_text() == "b"
    dirs.close()
    assert not cwd.exists()
