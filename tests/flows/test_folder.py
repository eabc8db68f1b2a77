"""A flow reads module files from its own folder only: no ``..`` out of it, no absolute
path elsewhere, no symlink (to a file or a folder) pointing out. Every door that loads a
flow file (validate, run, dev, flow add, dispatcher deploy) goes through ``load_flow``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fifoflow.flows import FlowError, load_flow

RUNTIMES = {"python", "node", "exec"}
CODE = "def handle(m, c):\n    return m\n"


def write_flow(folder: Path, file: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    flow = folder / "flow.json"
    document = {
        "fifoflow": 1,
        "id": "f",
        "modules": [
            {"id": "a", "runtime": "python", "code": CODE},
            {"id": "b", "runtime": "python", "file": file},
        ],
        "wires": ["a.out -> b.in"],
    }
    flow.write_bytes(orjson.dumps(document))
    return flow


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable python file outside the flow's folder (``tmp_path / "flow"``)."""
    secret = tmp_path / "secret" / "secret.py"
    secret.parent.mkdir()
    secret.write_text(CODE)
    return secret


def refused(flow: Path, file: str) -> None:
    with pytest.raises(FlowError) as info:
        load_flow(flow, runtimes=RUNTIMES)
    folder = flow.parent.resolve()
    assert [str(p) for p in info.value.problems] == [
        f"modules[1].file: {file} is outside the flow's folder {folder}"
    ]


def test_dot_dot_out_of_the_folder_is_refused(tmp_path: Path, outside: Path) -> None:
    refused(write_flow(tmp_path / "flow", "../secret/secret.py"), "../secret/secret.py")
    # out and back in again is fine: the resolved path is what counts
    flow = write_flow(tmp_path / "flow", "../flow/own.py")
    (tmp_path / "flow" / "own.py").write_text(CODE)
    assert load_flow(flow, runtimes=RUNTIMES).module("b").source == CODE


def test_an_absolute_path_elsewhere_is_refused(tmp_path: Path, outside: Path) -> None:
    refused(write_flow(tmp_path / "flow", str(outside)), str(outside))
    refused(write_flow(tmp_path / "flow", "/etc/passwd"), "/etc/passwd")


def test_a_symlink_pointing_out_is_refused(tmp_path: Path, outside: Path) -> None:
    flow = write_flow(tmp_path / "flow", "link.py")
    (tmp_path / "flow" / "link.py").symlink_to(outside)
    refused(flow, "link.py")


def test_a_symlinked_folder_pointing_out_is_refused(tmp_path: Path, outside: Path) -> None:
    flow = write_flow(tmp_path / "flow", "lib/secret.py")
    (tmp_path / "flow" / "lib").symlink_to(outside.parent, target_is_directory=True)
    refused(flow, "lib/secret.py")


def test_files_in_subfolders_and_symlinks_inside_still_work(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", "lib/deep/b.py")
    (tmp_path / "flow" / "lib" / "deep").mkdir(parents=True)
    (tmp_path / "flow" / "lib" / "deep" / "b.py").write_text(CODE)
    assert load_flow(flow, runtimes=RUNTIMES).module("b").source == CODE
    flow = write_flow(tmp_path / "flow", "alias.py")
    (tmp_path / "flow" / "alias.py").symlink_to(tmp_path / "flow" / "lib" / "deep" / "b.py")
    assert load_flow(flow, runtimes=RUNTIMES).module("b").source == CODE


def test_a_flow_in_a_symlinked_folder_reads_its_own_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_flow(real, "b.py")
    (real / "b.py").write_text(CODE)
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert load_flow(tmp_path / "alias" / "flow.json", runtimes=RUNTIMES).module("b").source == CODE


def test_validate_refuses_a_path_out_of_the_folder(tmp_path: Path, outside: Path) -> None:
    flow = write_flow(tmp_path / "flow", "../secret/secret.py")
    result = subprocess.run(
        [sys.executable, "-m", "fifoflow.api", "validate", str(flow)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    folder = flow.parent.resolve()
    expected = f"modules[1].file: ../secret/secret.py is outside the flow's folder {folder}"
    assert expected in result.stdout + result.stderr
