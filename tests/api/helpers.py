"""Helpers for API tests: a real runner served by a real hypercorn on 127.0.0.1."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from fifoflow.api.client import RunnerClient
from fifoflow.api.runner.app import ApiSettings, create_app
from fifoflow.runner import Runner, RunnerConfig, open_runner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TOKEN = "test-token-0123456789"

#: python -> node -> python, every module keeping a count in its state
CHAIN: dict[str, Any] = {
    "fifoflow": 1,
    "id": "chain",
    "modules": [
        {
            "id": "add",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
                "    return {'n': msg['n'] + 1}\n"
            ),
        },
        {
            "id": "double",
            "runtime": "node",
            "code": (
                "exports.handle = (msg, ctx) => {\n"
                "  ctx.state.seen = (ctx.state.seen || 0) + 1;\n"
                "  return { n: msg.n * 2 };\n"
                "};\n"
            ),
        },
        {
            "id": "label",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
                "    return {'n': msg['n'], 'seen': ctx.state['seen']}\n"
            ),
        },
    ],
    "wires": ["add.out -> double.in", "double.out -> label.in"],
}


@attrs.frozen
class Served:
    url: str
    token: str
    runner: Runner

    def client(self, token: str | None = None) -> RunnerClient:
        return RunnerClient(self.url, token or self.token)


@asynccontextmanager
async def serve_runner(state_dir: Path | None = None, **settings: Any) -> AsyncIterator[Served]:
    """A runner and its API app on a free port of 127.0.0.1, inside this test's nursery."""
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        app = create_app(runner, ApiSettings(token=TOKEN, **settings))
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.graceful_timeout = 1.0
        config.accesslog = None
        config.errorlog = None
        if "max_body" in settings:
            config.websocket_max_message_size = settings["max_body"]
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: hypercorn.trio.serve(app, config, task_status=task_status)
            )
            yield Served(urls[0], TOKEN, runner)
            nursery.cancel_scope.cancel()


async def wait_event(rpc: Any, kind: str, seconds: float = 20, **match: Any) -> dict[str, Any]:
    """The next event of ``kind`` (with matching fields) on an RPC session, or fail."""
    with trio.fail_after(seconds):
        while True:
            event = (await rpc.next_event())["event"]
            if event["kind"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event


class ServerProcess:
    """``fifoflow runner serve`` as a child process on a free port; stop() sends SIGTERM."""

    def __init__(self, state_dir: Path, *extra: str) -> None:
        self.state_dir = state_dir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._pump: threading.Thread | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fifoflow.api",
            "runner",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(self.state_dir),
            *self.extra,
        ]

    def start(self, timeout: float = 30) -> str:
        if self.proc is not None:  # a previous run: collect what it printed, close its pipe
            self.stop()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        # The server prints its URL once it listens, or exits with the reason.
        fd = self.proc.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("the server exited before listening:\n" + buffer.decode())
            buffer += chunk
            found = re.search(rb"listening on (https?://\S+)", buffer)
            if found:
                self.url = found.group(1).decode()
                self.lines.extend(buffer.decode().splitlines())
                # Read what it prints from now on as it comes: a pipe nobody reads fills
                # up (64 KiB) and the server blocks on its next log line.
                self._pump = threading.Thread(target=self._read_rest, args=(fd,), daemon=True)
                self._pump.start()
                return self.url
        self.kill()
        raise AssertionError(f"the server did not listen within {timeout} s:\n" + buffer.decode())

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait (graceful: flows stopped, state saved); SIGKILL after ``timeout``."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._join_pump()
        return self.proc.returncode

    def output(self) -> str:
        """What the server printed so far (read as it comes, by a thread)."""
        return "\n".join(self.lines)

    def wait_exit(self, timeout: float = 30) -> int:
        """Wait for a server that exits by itself; its status (output in ``lines``)."""
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        self._join_pump()
        return self.proc.returncode

    def _read_rest(self, fd: int) -> None:
        tail = b""
        while chunk := os.read(fd, 65536):
            *complete, tail = (tail + chunk).split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)
        if tail:
            self.lines.append(tail.decode(errors="replace"))

    def _join_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.join(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_pump()
