"""A host exits by itself when its runner is gone (PROTOCOL.md section 1, step 6), in
the two places a dead runner cannot reach it: blocked in the ``open`` of its pipes (the
runner died between spawning it and opening its end), and busy in a handler."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from fifoflow.runtimes.registry import discover

if TYPE_CHECKING:
    from pathlib import Path

#: a stand-in runner: makes the two FIFOs, starts the host with them the way the runner
#: does (its own session, FIFOFLOW_RUNNER_PID), prints the host's pid, and waits to be
#: killed without ever opening its ends
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    folder, *command = sys.argv[1:]
    to, frm = os.path.join(folder, "to-runtime"), os.path.join(folder, "from-runtime")
    os.mkfifo(to, 0o600)
    os.mkfifo(frm, 0o600)
    env = {**os.environ, "FIFOFLOW_PROTOCOL": "1", "FIFOFLOW_RUNNER_PID": str(os.getpid())}
    host = subprocess.Popen([*command, to, frm], env=env, start_new_session=True)
    print(host.pid, flush=True)
    time.sleep(3600)
    """
)


@pytest.mark.parametrize("runtime", ["python", "node", "exec"])
def test_a_host_blocked_in_open_exits_when_its_runner_is_killed(
    runtime: str, tmp_path: Path
) -> None:
    manifest = discover()[runtime]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), *manifest.argv()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        host = psutil.Process(int(parent.stdout.readline()))
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    # the host waits in open() for a runner that will never come; it must notice
    gone, alive = psutil.wait_procs([host], timeout=10)
    for proc in alive:
        proc.kill()
    assert gone, f"the {runtime} host outlived its runner"


def test_a_host_busy_in_a_handler_exits_when_its_runner_is_killed(tmp_path: Path) -> None:
    from ..api.helpers import ServerProcess

    server = ServerProcess(tmp_path / "state")
    server.start()
    try:
        token = (tmp_path / "state" / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        flow = {
            "fifoflow": 1,
            "id": "stuck",
            "modules": [
                {
                    "id": "s",
                    "runtime": "python",
                    "timeout": 3600,
                    "code": "import time\ndef handle(msg, ctx):\n    time.sleep(3600)\n",
                }
            ],
        }
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            client.put("/flows/stuck", json=flow).raise_for_status()
            client.post("/flows/stuck/start").raise_for_status()
            client.post("/flows/stuck/modules/s/inputs/in", json={"msgs": [1]}).raise_for_status()
        assert server.proc is not None
        hosts = psutil.Process(server.proc.pid).children(recursive=True)
        assert hosts, "the runner started no host"
    finally:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        server.wait_exit(timeout=30)
    _, alive = psutil.wait_procs(hosts, timeout=10)
    for proc in alive:
        proc.kill()
    assert not alive, f"{len(alive)} host(s) outlived their runner"
