"""``fifoflow debug`` driven through a pseudo-terminal, as a person would use it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

from ...conftest import REPO


class Screen:
    """What the program wrote to the terminal; wait_for reads until a text shows up."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.seen = 0

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = self.text.find(text, self.seen)
            if found >= 0:
                chunk = self.text[self.seen : found + len(text)]
                self.seen = found + len(text)
                return chunk
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(
                    f"{text!r} did not show within {timeout} s; screen:\n{self.text[self.seen :]}"
                )
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                raise AssertionError(
                    f"the program ended before {text!r}; screen:\n{self.text[self.seen :]}"
                )
            self.text += data.decode(errors="replace").replace("\r\n", "\n")


def test_debug_session_in_a_terminal() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fifoflow.api",
            "debug",
            str(REPO / "flows/examples/hello/flow.json"),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    os.close(slave)
    screen = Screen(master)

    def type_line(line: str) -> None:
        os.write(master, line.encode() + b"\n")

    try:
        screen.wait_for("paused before its first message; type help")
        screen.wait_for("(fifoflow) ")
        type_line("break shout")
        screen.wait_for("breakpoint at shout")
        type_line('send {"name": "Ada"}')
        screen.wait_for("sent to greet.in")
        type_line("continue")
        screen.wait_for('paused at breakpoint shout (in): "Hello, Ada!"')
        type_line("queues")
        shown = screen.wait_for("frame  (empty)")
        assert 'shout  #0 in "Hello, Ada!"' in shown
        assert "greet  (empty)" in shown
        type_line("step")
        shown = screen.wait_for("frame  -   (waiting: 1)")
        assert 'shout  in "Hello, Ada!"  ->  out ["HELLO, ADA!"]' in shown
        type_line("step")
        screen.wait_for('out frame.out: "*** HELLO, ADA! ***"')
        type_line("break shout if msg.n = 1")
        screen.wait_for("expected one of == != < <= > >=")
        type_line("state greet")
        screen.wait_for("null")
        type_line("quit")
        screen.wait_for("stopped")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(master)
