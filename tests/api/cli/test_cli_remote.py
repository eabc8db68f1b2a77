"""The CLI against a real runner process: flow add/update/remove/start/stop/list/show,
inject, state, logs (--follow), and what it says when something is wrong."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from ...conftest import make_wheel
from ..helpers import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

FLOW = {
    "fifoflow": 1,
    "id": "tally",
    "modules": [
        {"id": "count", "runtime": "python", "file": "count.py"},
        {"id": "shout", "runtime": "node", "file": "shout.js"},
    ],
    "wires": ["count.out -> shout.in"],
}
COUNT_PY = """\
def handle(msg, ctx):
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    ctx.log("counted", msg)
    return {"msg": msg, "n": ctx.state["n"]}
"""
SHOUT_JS = "exports.handle = (msg) => ({ ...msg, msg: String(msg.msg).toUpperCase() });\n"


@pytest.fixture
def runner_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    server = ServerProcess(tmp_path / "state")
    url = server.start()
    (tmp_path / "flow").mkdir()
    (tmp_path / "flow" / "flow.json").write_text(json.dumps(FLOW))
    (tmp_path / "flow" / "count.py").write_text(COUNT_PY)
    (tmp_path / "flow" / "shout.js").write_text(SHOUT_JS)
    try:
        yield {
            **os.environ,
            "FIFOFLOW_URL": url,
            "FIFOFLOW_TOKEN_FILE": str(tmp_path / "state" / "token"),
            "FLOW_DIR": str(tmp_path / "flow"),
        }
    finally:
        assert server.stop() == 0


def ff(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fifoflow.api", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_manage_a_flow_from_the_command_line(runner_env: dict[str, str]) -> None:
    env = runner_env
    flow_file = f"{env['FLOW_DIR']}/flow.json"
    done = ff(env, "flow", "add", flow_file, "--start")
    assert done.returncode == 0, done.stderr
    assert "added flow 'tally' (revision 1)" in done.stdout
    assert "flow 'tally' is running" in done.stdout

    again = ff(env, "flow", "add", flow_file)
    assert again.returncode == 1
    assert "revision" in again.stderr
    assert "HTTP 409" in again.stderr

    done = ff(env, "inject", "tally", "count", '"a"', '"b"')
    assert done.returncode == 0, done.stderr
    assert "sent 2 message(s) to tally/count.in" in done.stdout
    done = ff(env, "inject", "tally", "count.in", "--file", "-", stdin='"c"\n\n"d"\n')
    assert done.returncode == 0, done.stderr

    listing = ff(env, "flow", "list")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[0].split() == [
        "FLOW",
        "STATUS",
        "REV",
        "PENDING",
        "OUTPUTS",
        "ERRORS",
        "RESTARTS",
    ]
    assert listing.stdout.splitlines()[1].split()[:3] == ["tally", "running", "1"]
    assert listing.stdout.splitlines()[1].split()[-1] == "0", "no restarts"

    # The 4 messages went through: stopping is graceful, and the state says so.
    assert ff(env, "flow", "stop", "tally").stdout.strip() == "flow 'tally' is stopped"
    state = ff(env, "state", "tally", "count")
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout) == {"n": 4}
    logs = ff(env, "logs", "tally")
    assert [line.split("] ", 1)[1] for line in logs.stdout.splitlines()] == [
        f"info: counted {m}" for m in "abcd"
    ]

    done = ff(env, "flow", "update", flow_file)
    assert done.returncode == 0, done.stderr
    assert "updated flow 'tally' (revision 2)" in done.stdout
    assert "hot-swapped" not in done.stdout  # it was stopped
    shown = json.loads(ff(env, "flow", "show", "tally").stdout)
    assert shown["revision"] == 2
    assert shown["flow"]["modules"][0]["code"] == COUNT_PY  # files were inlined
    assert ff(env, "flow", "start", "tally").stdout.strip() == "flow 'tally' is running"
    # While it runs: a hot swap, and the state is still there.
    count_py = f"{env['FLOW_DIR']}/count.py"
    with open(count_py) as f:
        code = f.read()
    with open(count_py, "w") as f:
        f.write(code.replace('"n": ctx.state["n"]}', '"n": ctx.state["n"], "v": 2}'))
    done = ff(env, "flow", "update", flow_file)
    assert done.returncode == 0, done.stderr
    assert "updated flow 'tally' (revision 3): hot-swapped in" in done.stdout
    assert done.stdout.rstrip().endswith("ms: code: count")
    assert json.loads(ff(env, "state", "tally", "count").stdout) == {"n": 4}
    assert ff(env, "flow", "remove", "tally").returncode == 0
    assert json.loads(ff(env, "flow", "list", "--json").stdout) == []


def test_the_cli_says_what_is_wrong(runner_env: dict[str, str], tmp_path: Path) -> None:
    env = runner_env
    missing = ff(env, "flow", "start", "ghost")
    assert missing.returncode == 1
    assert "no flow 'ghost'" in missing.stderr
    assert "HTTP 404, flow_not_found" in missing.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({**FLOW, "modules": [{"id": "x", "runtime": "cobol", "code": ""}], "wires": []})
    )
    invalid = ff(env, "flow", "add", str(bad))
    assert invalid.returncode == 2
    assert "unknown runtime 'cobol'" in invalid.stderr

    assert ff(env, "inject", "tally", "count", "{nope").returncode == 2
    assert "not valid JSON" in ff(env, "inject", "tally", "count", "{nope").stderr
    update = ff(env, "flow", "update", f"{env['FLOW_DIR']}/flow.json")
    assert update.returncode == 2
    assert "use 'fifoflow flow add'" in update.stderr

    wrong = tmp_path / "wrong-token"
    wrong.write_text("nope\n")
    refused = ff({**env, "FIFOFLOW_TOKEN_FILE": str(wrong)}, "flow", "list")
    assert refused.returncode == 1
    assert "wrong token" in refused.stderr
    no_file = ff({**env, "FIFOFLOW_TOKEN_FILE": str(tmp_path / "nothing")}, "flow", "list")
    assert no_file.returncode == 2
    assert "no token file" in no_file.stderr
    unreachable = ff(env, "flow", "list", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 3
    assert "cannot reach the runner" in unreachable.stderr


def test_logs_follow_prints_new_lines_until_interrupted(runner_env: dict[str, str]) -> None:
    env = runner_env
    assert ff(env, "flow", "add", f"{env['FLOW_DIR']}/flow.json", "--start").returncode == 0
    follow = subprocess.Popen(
        [sys.executable, "-m", "fifoflow.api", "logs", "tally", "--follow"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        assert follow.stdout is not None
        buffer = b""
        # Messages go in until the follower has printed one: it may still be subscribing.
        deadline = time.monotonic() + 30
        while b"counted" not in buffer and time.monotonic() < deadline:
            assert ff(env, "inject", "tally", "count", '"x"').returncode == 0
            ready, _, _ = select.select([follow.stdout], [], [], 1.0)
            if ready:
                buffer += os.read(follow.stdout.fileno(), 65536)
        assert b"[tally/count] info: counted x" in buffer
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=20) == 130
    finally:
        if follow.poll() is None:
            follow.kill()
        follow.communicate()


def test_debugger_commands(runner_env: dict[str, str]) -> None:
    env = runner_env
    assert ff(env, "flow", "add", f"{env['FLOW_DIR']}/flow.json", "--start").returncode == 0
    done = ff(env, "break", "tally/shout", "--if", 'msg.msg == "b"')
    assert done.stdout.strip() == 'breakpoint at tally/shout when msg.msg == "b"'
    assert ff(env, "inject", "tally", "count", '"a"', '"b"', '"c"').returncode == 0
    assert ff(env, "pause", "tally").returncode == 0  # returns once nothing is in flight
    queues = ff(env, "queues", "tally")
    assert queues.stdout.splitlines()[0] == 'paused at breakpoint shout (in): {"msg":"b","n":2}'
    assert '#0 in {"msg":"b","n":2}' in queues.stdout
    step = ff(env, "step", "tally")
    assert step.returncode == 0, step.stderr
    assert 'shout  in {"msg":"b","n":2}  ->  out [{"msg":"B","n":2}]   (waiting: 1)' in step.stdout
    as_json = json.loads(ff(env, "step", "tally", "--json").stdout)
    assert as_json["tally/shout"]["outputStates"] == {"out": [{"msg": "C", "n": 3}]}
    bad = ff(env, "break", "tally/shout", "--if", "msg.n =")
    assert bad.returncode == 1
    assert "condition" in bad.stderr
    done = ff(env, "continue", "tally")
    assert done.stdout.splitlines() == [
        "flow 'tally' is running",
        '  breakpoint shout when msg.msg == "b" (hits: 1)',
    ]
    assert (
        ff(env, "break", "tally/shout", "--remove").stdout.strip()
        == "removed the breakpoint at tally/shout"
    )
    assert ff(env, "step", "tally").returncode == 1  # not paused


def test_environment_commands(offline: Path, runner_env: dict[str, str], tmp_path: Path) -> None:
    env = runner_env
    flow = {
        "fifoflow": 1,
        "id": "deps",
        "modules": [
            {
                "id": "m",
                "runtime": "python",
                "code": "import fflib\ndef handle(msg, ctx):\n    return fflib.VERSION\n",
                "requirements": ["fflib==1.0"],
            }
        ],
    }
    path = tmp_path / "deps.json"
    path.write_text(json.dumps(flow))
    done = ff(env, "flow", "add", str(path), "--start")
    assert done.returncode == 0, done.stderr
    listing = ff(env, "env", "list")
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("python-")
    assert lines[0].endswith("(python; used by deps)")
    assert lines[1:] == ["  requires: fflib==1.0", "  installed: fflib==1.0"]
    env_id = lines[0].split()[0]
    make_wheel(offline, "extralib", "0.1")
    done = ff(env, "env", "install", env_id, "extralib==0.1")
    assert done.stdout.strip() == f"{env_id}: extralib==0.1 fflib==1.0"
    assert ff(env, "env", "remove", env_id, "extralib").stdout.strip() == f"{env_id}: fflib==1.0"
    assert ff(env, "env", "gc", "--max-idle", "0").stdout.strip() == "removed 0 environment(s)"
    missing = ff(env, "env", "rebuild", "python-nope")
    assert missing.returncode == 1
    assert "no environment 'python-nope'" in missing.stderr
    assert ff(env, "flow", "remove", "deps").returncode == 0
    assert (
        ff(env, "env", "gc", "--max-idle", "0").stdout.strip()
        == f"removed 1 environment(s): {env_id}"
    )
