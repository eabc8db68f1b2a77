"""``fifoflow dev``: real files saved on disk are hot-swapped into the running flow."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from ...conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path


class Lines:
    """Read lines of a child's pipe with a deadline (no sleeping)."""

    def __init__(self, stream: object) -> None:
        self.fd = stream.fileno()  # type: ignore[attr-defined]
        self.buffer = b""
        self.seen: list[str] = []

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.seen):
                if text in line:
                    del self.seen[: i + 1]
                    return line
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no line with {text!r} within {timeout} s; got {self.seen}")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError(f"the stream ended before {text!r}; got {self.seen}")
            self.buffer += chunk
            *lines, self.buffer = self.buffer.split(b"\n")
            self.seen.extend(line.decode() for line in lines)


def _save(path: Path, text: str) -> None:
    """Save like an editor does: write a temporary file, rename it over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_dev_swaps_saved_changes_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    folder = tmp_path / "hello"
    shutil.copytree(REPO / "flows" / "examples" / "hello", folder)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fifoflow.api", "dev", str(folder / "flow.json"), "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)

    def send(name: str) -> str:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"name": name}).encode() + b"\n")
        proc.stdin.flush()
        return json.loads(out.wait_for('"from"'))["msg"]

    try:
        err.wait_for("running flow 'hello'; watching 4 file(s)")
        assert send("ada") == "*** HELLO, ADA! ***"

        shout = folder / "shout.js"
        _save(shout, shout.read_text().replace("toUpperCase()", "toLowerCase()"))
        line = err.wait_for("revision 2")
        assert "code: shout" in line
        assert "paused" in line
        assert send("Bob") == "*** hello, bob! ***"

        # A plain write (no rename) of a broken file: refused, the last good code runs on.
        (folder / "frame.py").write_text("def handle(msg, ctx)\n    return msg\n")
        line = err.wait_for("not applied")
        assert "SyntaxError" in line
        assert send("cy") == "*** hello, cy! ***"

        # An invalid flow file: reported with the problem, the flow keeps running.
        flow = json.loads((folder / "flow.json").read_text())
        good = json.dumps(flow)
        flow["wires"].append("frame.out -> nowhere.in")
        _save(folder / "flow.json", json.dumps(flow))
        err.wait_for("invalid, still running the last good version")
        err.wait_for("module 'nowhere' does not exist")
        assert send("dee") == "*** hello, dee! ***"

        # Back to the good flow file: frame.py is still broken, so still refused.
        _save(folder / "flow.json", good)
        assert "SyntaxError" in err.wait_for("not applied")
        # Repair the file, then change the config: one swap each.
        (folder / "frame.py").write_text("def handle(msg, ctx):\n    return f'<{msg}>'\n")
        assert "code: frame" in err.wait_for("revision 3")
        assert send("eve") == "<hello, eve!>"
        flow = json.loads(good)
        flow["modules"][0]["config"]["greeting"] = "Hi"
        _save(folder / "flow.json", json.dumps(flow))
        assert "config: greet" in err.wait_for("revision 4")
        assert send("fay") == "<hi, fay!>"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err.wait_for("stopped")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.communicate()
