"""The ``fifoflow`` command, run as a real subprocess."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio

from ...conftest import REPO, child_pids, fifoflow_dirs

FIFOFLOW = [sys.executable, "-m", "fifoflow.api"]
EXAMPLES = REPO / "flows" / "examples"


def fifoflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIFOFLOW, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_run_hello_prints_the_exit_messages() -> None:
    result = fifoflow("run", str(EXAMPLES / "hello" / "flow.json"), "--input", '{"name": "world"}')
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1
    assert "HELLO" in str(lines[0]["msg"]).upper()
    assert lines[0]["from"].endswith(".out")


@pytest.mark.parametrize(
    "example", sorted(p.name for p in EXAMPLES.iterdir() if (p / "flow.json").exists())
)
def test_every_example_validates(example: str) -> None:
    result = fifoflow("validate", str(EXAMPLES / example / "flow.json"))
    assert result.returncode == 0, result.stderr
    assert ": ok" in result.stdout


def test_validate_names_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "flow.json"
    bad.write_text(
        '{"fifoflow": 1, "id": "bad", "modules": ['
        '{"id": "a", "runtime": "nodejs", "code": "x"},'
        '{"id": "b", "runtime": "python", "file": "missing.py"}],'
        '"wires": ["a.out -> c.in"]}'
    )
    result = fifoflow("validate", str(bad))
    assert result.returncode == 2
    assert "modules[0].runtime" in result.stderr
    assert "nodejs" in result.stderr
    assert "modules[1].file" in result.stderr
    assert "wires[0]" in result.stderr


def test_run_reports_module_errors_on_stderr_and_exits_1(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(
        '{"fifoflow": 1, "id": "oops", "modules": [{"id": "m", "runtime": "python", "file": "m.py"}], "wires": []}'
    )
    (tmp_path / "m.py").write_text("def handle(msg, ctx):\n    return 10 // msg\n")
    result = fifoflow("run", str(flow), "--input", "5", "--input", "0", "--input", "2", "--raw")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["2", "5"]
    assert "ZeroDivisionError" in result.stderr
    assert "m.py" in result.stderr  # the traceback names the user's file


def test_runtimes_lists_the_three_builtin_runtimes() -> None:
    result = fifoflow("runtimes", "--json")
    assert result.returncode == 0
    assert {r["id"] for r in orjson.loads(result.stdout)} >= {"python", "node", "exec"}


async def test_ctrl_c_stops_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(
        '{"fifoflow": 1, "id": "slow", "modules": ['
        '{"id": "a", "runtime": "python", "code": "import time\\ndef handle(msg, ctx):\\n    print(\'started\', flush=True)\\n    time.sleep(3600)\\n", "timeout": 7200},'
        '{"id": "b", "runtime": "node", "code": "exports.handle = (m) => m;"}],'
        '"wires": ["a.out -> b.in"]}'
    )
    tmp_before = fifoflow_dirs()
    proc = await trio.lowlevel.open_process(
        [*FIFOFLOW, "run", str(flow), "--input", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        # Wait until the module is running (its print reaches the CLI's stderr).
        seen = b""
        with trio.fail_after(30):
            while b"started" not in seen:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, f"fifoflow ended early: {seen.decode()}"
                seen += chunk
        descendants = child_pids(proc.pid)
        assert descendants, "no runtime processes found"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            code = await proc.wait()
        assert code == 130
        still = [p for p in descendants if _alive(p)]
        assert not still, f"processes left after Ctrl-C: {still}"
        tmp_after = fifoflow_dirs()
        assert tmp_after <= tmp_before, f"FIFO directories left: {tmp_after - tmp_before}"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    ("example", "inputs", "expected"),
    [
        ("hello", ['{"name": "fifo"}'], ["*** HELLO, FIFO! ***"]),
        (
            "counter",
            ['"apple"', '"pear"', '"apple"'],
            [
                {"key": "apple", "count": 1},
                {"key": "pear", "count": 1},
                {"key": "apple", "count": 2},
            ],
        ),
        ("exec", ['"fifo"'], ["fifo has 4 characters (wrapped by sh)"]),
        (
            "fan-out-fan-in",
            ['"the quick brown fox"'],
            [{"id": 1, "letters": 16, "reverse": "xof nworb kciuq eht", "words": 4}],
        ),
    ],
)
def test_examples_compute_what_their_readme_says(
    example: str, inputs: list[str], expected: list[object]
) -> None:
    args = [arg for text in inputs for arg in ("--input", text)]
    result = fifoflow("run", str(EXAMPLES / example / "flow.json"), "--raw", "--quiet", *args)
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == expected


def test_serve_refuses_a_state_dir_from_a_newer_fifoflow(tmp_path: Path) -> None:
    state_dir = tmp_path / "dispatcher"
    state_dir.mkdir()
    with sqlite3.connect(state_dir / "dispatcher.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fifoflow.api",
            "dispatcher",
            "serve",
            "--state-dir",
            str(state_dir),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "schema version 99" in done.stderr
    assert "Traceback" not in done.stderr
