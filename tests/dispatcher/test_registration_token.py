"""The one-time registration token never rides on a command line (``/proc/<pid>/cmdline``
is readable by every user): a runner takes it from a file or from its environment, the
local backend hands it over in the environment, and the runtimes a runner starts (user
code) do not inherit it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil
import pytest

from ..api.helpers import ServerProcess
from .test_dispatcher import COUNTER, DispatcherProcess, linked_id, wait_until
from .test_local_backend import _local, _runner_process

if TYPE_CHECKING:
    from pathlib import Path


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _hosts_environ(runner_pid: int) -> list[dict[str, str]]:
    return [p.environ() for p in psutil.Process(runner_pid).children(recursive=True)]


@pytest.mark.parametrize("how", ["file", "environment"])
def test_a_runner_registers_with_a_token_not_on_its_command_line(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    runner = None
    try:
        token = dispatcher.token()
        extra = ["--dispatcher", dispatcher.url]
        if how == "file":
            path = tmp_path / "registration-token"
            path.write_text(token + "\n")
            path.chmod(0o600)
            extra += ["--registration-token-file", str(path)]
        else:
            monkeypatch.setenv("FIFOFLOW_REGISTRATION_TOKEN", token)
        runner = ServerProcess(tmp_path / "runner", *extra)
        runner.start()
        runner_id = linked_id(runner)
        assert runner.proc is not None
        assert token.encode() not in _cmdline(runner.proc.pid)
        [registered] = [e for e in dispatcher.api("GET", "/events") if e["kind"] == "registered"]
        assert registered["runner"] == runner_id
        # its runtimes (user code) do not inherit the token
        placed = dispatcher.api("POST", "/flows", json=COUNTER)
        assert placed["runner"] == runner_id
        hosts = wait_until("a runtime host", lambda: _hosts_environ(runner.proc.pid))  # type: ignore[union-attr]
        assert all(token not in env.values() for env in hosts)
    finally:
        if runner is not None:
            runner.stop()
        dispatcher.stop()


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    runner = ServerProcess(
        tmp_path / "runner",
        "--dispatcher", "http://127.0.0.1:9",
        "--registration-token-file", str(tmp_path / "missing"),
    )  # fmt: skip
    with pytest.raises(AssertionError, match=r"--registration-token-file .*missing: cannot read"):
        runner.start()
    runner.stop()


def test_the_local_backend_hands_the_token_over_in_the_environment(tmp_path: Path) -> None:
    dispatcher = _local(tmp_path)
    dispatcher.start()
    try:
        runner = wait_until("the local runner", lambda: _try_runner(dispatcher))
        wait_until(
            "it to register",
            lambda: any(e["kind"] == "registered" for e in dispatcher.api("GET", "/events")),
        )
        assert b"ffreg_" not in _cmdline(runner.pid)
        assert b"--registration-token" not in _cmdline(runner.pid)
    finally:
        dispatcher.stop()


def _try_runner(dispatcher: DispatcherProcess) -> psutil.Process | None:
    try:
        return _runner_process(dispatcher)
    except ValueError:
        return None
