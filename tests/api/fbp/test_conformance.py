"""The upstream conformance suite, unmodified, against a live ``runner serve --fbp-port``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from tests.api.helpers import ServerProcess

from . import fbp_protocol

if TYPE_CHECKING:
    from pathlib import Path


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def fbp_url(server: ServerProcess, timeout: float = 30) -> tuple[str, int]:
    """Where the server's FBP endpoint listens (it prints it once it does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"FBP protocol: ws://([\d.]+):(\d+)/", server.output())
        if found:
            return found.group(1), int(found.group(2))
        if server.proc is not None and server.proc.poll() is not None:
            break
        time.sleep(0.05)  # polling the output the server prints (a thread collects it)
    raise AssertionError("no FBP endpoint announced:\n" + server.output())


def test_fbp_test_passes_every_case(tmp_path: Path) -> None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        _unavailable("npm and node are needed to install and run fbp-test")
    try:
        prefix = fbp_protocol.ensure_installed()
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"fbp-protocol {fbp_protocol.VERSION} could not be installed: {exc}")
    server = ServerProcess(tmp_path / "state", "--fbp-port", "0")
    server.start()
    try:
        host, port = fbp_url(server)
        token = (tmp_path / "state" / "token").read_text().strip()
        project = tmp_path / "project"
        project.mkdir()
        done = fbp_protocol.run_fbp_test(prefix, project, host=host, port=port, secret=token)
    finally:
        assert server.stop() == 0, server.output()
    report = done.stdout + done.stderr
    passing = re.search(r"(\d+) passing", report)
    print(report)
    assert done.returncode == 0, report
    assert passing is not None, report
    assert int(passing.group(1)) == fbp_protocol.CASES, report
    assert not re.search(r"\d+ (failing|pending)", report), report
