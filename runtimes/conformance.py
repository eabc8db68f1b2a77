"""The runtime conformance kit: protocol checks against any runtime host.

    fifoflow conformance --runtime python            # a runtime found by its manifest
    fifoflow conformance --lang node -- node path/to/host.mjs
    python -m fifoflow.runtimes.conformance --lang mylang --modules DIR -- ./my-host

The kit starts the host itself over real FIFOs (PROTOCOL.md section 1), plays the runner,
and checks one rule per check, printing ``PASS name``, ``FAIL name: ...`` or ``SKIP
name: ...`` and a closing ``N passed, M failed`` line. Exit status: 0 all passed, 1 a
check failed, 2 usage error (unknown runtime, command not found).

Test modules: built in for ``python``, ``node`` and ``exec``. Another language passes
``--modules DIR`` holding one source file per module, named by the module (any suffix):
``echo`` (returns its input), ``ports`` (emits its input on port ``side`` and returns it),
``count`` (``ctx.state.n += 1``, returns the new n), ``add1``, ``times2``, ``raises``
(raises/throws when the message is 2, else returns it), ``hang`` (never returns when the
message is ``"hang"``), ``syntax_error`` (does not compile), ``no_handle`` (compiles,
defines no handle).

One file of ~600 lines: the kit is a checklist, each check a method of :class:`Kit`
reading like the rule it tests; split, a rule would be read in two places.

Resource handling: every host started is killed and reaped and its FIFO directory
removed when its check ends, also on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["CheckResult", "HostUnderTest", "main", "run_checks"]

PY = sys.executable

PYTHON_MODULES = {
    "echo": "def handle(msg, ctx):\n    return msg\n",
    "ports": "def handle(msg, ctx):\n    ctx.emit('side', msg)\n    return msg\n",
    "count": "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return ctx.state['n']\n",
    "add1": "def handle(msg, ctx):\n    return msg + 1\n",
    "times2": "def handle(msg, ctx):\n    return msg * 2\n",
    "wait": (
        "import asyncio\nasync def handle(msg, ctx):\n"
        "    if msg == 'wait':\n        await asyncio.sleep(0.3)\n    return msg\n"
    ),
    "raises": "def handle(msg, ctx):\n    if msg == 2:\n        raise ValueError('two is not allowed')\n    return msg\n",
    "hang": "import time\ndef handle(msg, ctx):\n    if msg == 'hang':\n        while True:\n            time.sleep(1)\n    return msg\n",
    "syntax_error": "def handle(msg, ctx)\n    return msg\n",
    "no_handle": "def helper(msg):\n    return msg\n",
    "migrate_fails": (
        "def migrate(old, ctx):\n    old['n'] = -1\n    ctx.state['n'] = -1\n    raise RuntimeError('migration failed')\n"
        "def handle(msg, ctx):\n    return 0\n"
    ),
    "migrate_100": (
        "def migrate(old, ctx):\n    return {'n': 100}\n"
        "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return ctx.state['n']\n"
    ),
}

NODE_MODULES = {
    "echo": "exports.handle = (msg, ctx) => msg;\n",
    "ports": "exports.handle = (msg, ctx) => { ctx.emit('side', msg); return msg; };\n",
    "count": "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return ctx.state.n; };\n",
    "add1": "exports.handle = (msg) => msg + 1;\n",
    "times2": "exports.handle = (msg) => msg * 2;\n",
    "wait": (
        "exports.handle = async (msg) => {\n"
        "  if (msg === 'wait') await new Promise((ok) => setTimeout(ok, 300));\n"
        "  return msg;\n};\n"
    ),
    "raises": "exports.handle = (msg) => { if (msg === 2) throw new Error('two is not allowed'); return msg; };\n",
    "hang": "exports.handle = (msg) => { if (msg === 'hang') { for (;;) {} } return msg; };\n",
    "syntax_error": "exports.handle = (msg => msg;\n",
    "no_handle": "exports.helper = (msg) => msg;\n",
    "migrate_fails": (
        "exports.migrate = (old, ctx) => { old.n = -1; ctx.state.n = -1; throw new Error('migration failed'); };\n"
        "exports.handle = () => 0;\n"
    ),
    "migrate_100": (
        "exports.migrate = () => ({ n: 100 });\n"
        "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return ctx.state.n; };\n"
    ),
}

_EXEC_LOOP = "import sys, json\nfor line in sys.stdin:\n    m = json.loads(line)\n{body}"
EXEC_MODULES = {
    "echo": [PY, "-u", "-c", _EXEC_LOOP.format(body="    print(json.dumps(m), flush=True)\n")],
    "add1": [PY, "-u", "-c", _EXEC_LOOP.format(body="    print(json.dumps(m + 1), flush=True)\n")],
    "times2": [
        PY,
        "-u",
        "-c",
        _EXEC_LOOP.format(body="    print(json.dumps(m * 2), flush=True)\n"),
    ],
    # exec modules have no exceptions: a line that is not JSON is the error for that input
    "raises": [
        PY,
        "-u",
        "-c",
        _EXEC_LOOP.format(body="    print('oops' if m == 2 else json.dumps(m), flush=True)\n"),
    ],
    "hang": [
        PY,
        "-u",
        "-c",
        "import time\n"
        + _EXEC_LOOP.format(
            body="    if m == 'hang':\n        time.sleep(3600)\n    print(json.dumps(m), flush=True)\n"
        ),
    ],
    "missing_command": ["/nonexistent/fifoflow-conformance-command"],
}

LANGS = {"python": PYTHON_MODULES, "node": NODE_MODULES, "exec": EXEC_MODULES}


class CheckFailed(Exception):
    """A rule of the protocol was broken; the message says which and what came instead."""


class Skip(Exception):
    pass


@attrs.frozen
class CheckResult:
    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str = ""


def _excerpt(frame: Any) -> str:
    text = orjson.dumps(frame).decode()
    return text if len(text) < 300 else text[:300] + "..."


class HostUnderTest:
    """One host process over a FIFO pair, driven like a runner would.

    Resource handling: :meth:`close` kills and reaps the process and removes the FIFO
    directory; use :func:`started_host` to get that on every exit path."""

    def __init__(self, command: list[str], timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.dir = Path(tempfile.mkdtemp(prefix="fifoflow-conformance-"))
        self.to_path = self.dir / "to-runtime"
        self.from_path = self.dir / "from-runtime"
        os.mkfifo(self.to_path, 0o600)
        os.mkfifo(self.from_path, 0o600)
        self.rfd = os.open(self.from_path, os.O_RDONLY | os.O_NONBLOCK)
        self.wfd: int | None = None
        self.buffer = b""
        self.frames: list[dict[str, Any]] = []
        #: every line read, as it came (the raw rules are about bytes)
        self.lines: list[bytes] = []
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*command, str(self.to_path), str(self.from_path)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        self.hello_early = False
        #: direct channels a check made (closed with the host)
        self.extra_fds: list[int] = []

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-1500:]

    def open_write_end(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.wfd = os.open(self.to_path, os.O_WRONLY | os.O_NONBLOCK)
                os.set_blocking(self.wfd, True)
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            if self.proc.poll() is not None:
                raise CheckFailed(
                    f"host exited with status {self.proc.returncode} before opening to-runtime\n{self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"host did not open to-runtime for reading within {self.timeout:g} s"
                )
            time.sleep(0.005)

    def send(self, *frames: dict[str, Any] | bytes) -> None:
        assert self.wfd is not None
        data = b"".join(f if isinstance(f, bytes) else orjson.dumps(f) + b"\n" for f in frames)
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame; ``None`` at end of file. Raises CheckFailed on time-out or garbage."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.rfd, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                if self.buffer:
                    raise CheckFailed(
                        f"host closed its pipe in the middle of a line: {self.buffer[:200]!r}"
                    )
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.lines.append(line)
        try:
            frame = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CheckFailed(f"host wrote a line that is not JSON: {line[:200]!r}") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
            raise CheckFailed(f"host wrote a frame without a string 'op': {line[:200]!r}")
        self.frames.append(frame)
        return frame

    def expect(
        self, want: Callable[[dict[str, Any]], bool], what: str, timeout: float | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read frames until one matches; returns it and the frames before it."""
        before: list[dict[str, Any]] = []
        while True:
            try:
                frame = self.recv(timeout)
            except TimeoutError:
                seen = "; ".join(_excerpt(f) for f in before[-5:]) or "nothing"
                raise CheckFailed(
                    f"expected {what} within {timeout or self.timeout:g} s; got {seen}"
                ) from None
            if frame is None:
                raise CheckFailed(
                    f"expected {what}; the host closed its pipe (exit status {self.proc.poll()})\n{self.stderr_tail()}"
                )
            if want(frame):
                return frame, before
            before.append(frame)

    def wait_exit(self, timeout: float | None = None) -> int:
        try:
            return self.proc.wait(timeout=self.timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"host did not exit within {self.timeout:g} s") from None

    def close(self) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 9)
        with suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        for fd in (self.rfd, self.wfd, *self.extra_fds):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def started_host(
    command: list[str], timeout: float, *, probe_order: bool = False
) -> Iterator[HostUnderTest]:
    host = HostUnderTest(command, timeout)
    try:
        if probe_order:
            # A host that opens from-runtime first could say hello before we open to-runtime.
            try:
                early = host.recv(timeout=0.3)
            except TimeoutError:
                early = None
            if early is not None:
                host.hello_early = True
        host.open_write_end()
        if not host.hello_early:
            try:
                hello = host.recv()
            except TimeoutError:
                raise CheckFailed(f"no hello within {timeout:g} s\n{host.stderr_tail()}") from None
            if hello is None:
                raise CheckFailed(
                    f"host closed its pipe before hello (exit status {host.proc.poll()})\n{host.stderr_tail()}"
                )
        yield host
    finally:
        host.close()


class Kit:
    def __init__(
        self, command: list[str], lang: str, modules: dict[str, Any], timeout: float
    ) -> None:
        self.command = command
        self.lang = lang
        self.modules = modules
        self.timeout = timeout

    def load_frame(self, name: str, module: str | None = None, **extra: Any) -> dict[str, Any]:
        if name not in self.modules:
            raise Skip(f"no '{name}' test module for {self.lang}")
        frame: dict[str, Any] = {
            "op": "load",
            "module": module or f"t/{name}",
            "config": {},
            "state": None,
            "timeout": 10,
        }
        if self.lang == "exec":
            frame.update(command=self.modules[name], cwd=None, env=None)
        else:
            frame.update(code=self.modules[name], filename=f"{name}.src")
        frame.update(extra)
        return frame

    def load(self, host: HostUnderTest, name: str, module: str | None = None, **extra: Any) -> None:
        frame = self.load_frame(name, module, **extra)
        host.send(frame)
        loaded, _ = host.expect(
            lambda f: f["op"] == "loaded" and f.get("module") == frame["module"],
            f"'loaded' for {frame['module']}",
        )
        if loaded.get("error"):
            raise CheckFailed(
                f"loading the {name!r} test module failed: {_excerpt(loaded['error'])}"
            )

    def needs_code(self) -> None:
        if self.lang == "exec":
            raise Skip("exec modules have no code to compile")

    # ---------------------------------------------------------------- checks

    def check_hello(self, host: HostUnderTest) -> None:
        if host.hello_early:
            raise CheckFailed(
                "host wrote to from-runtime before opening to-runtime (must open to-runtime for reading first)"
            )
        hello = host.frames[0]
        if hello.get("op") != "hello":
            raise CheckFailed(f"first frame must be hello, got {_excerpt(hello)}")
        if hello.get("protocol") != 1:
            raise CheckFailed(f"hello.protocol must be 1, got {hello.get('protocol')!r}")
        for field, kind in (("runtime", str), ("version", str), ("pid", int), ("features", list)):
            if not isinstance(hello.get(field), kind):
                raise CheckFailed(
                    f"hello.{field} must be a {kind.__name__}, got {hello.get(field)!r}"
                )
        if hello["pid"] != host.proc.pid:
            raise CheckFailed(f"hello.pid is {hello['pid']}, the host's pid is {host.proc.pid}")

    def check_load_good(self, host: HostUnderTest) -> None:
        self.load(host, "echo")

    def check_load_syntax_error(self, host: HostUnderTest) -> None:
        self.needs_code()
        frame = self.load_frame("syntax_error")
        host.send(frame)
        loaded, _ = host.expect(lambda f: f["op"] == "loaded", "'loaded'")
        error = loaded.get("error")
        if not isinstance(error, dict) or not error.get("message"):
            raise CheckFailed(
                f"code that does not compile must be answered with loaded.error {{type, message}}, got {_excerpt(loaded)}"
            )

    def check_load_without_handle(self, host: HostUnderTest) -> None:
        self.needs_code()
        host.send(self.load_frame("no_handle"))
        loaded, _ = host.expect(lambda f: f["op"] == "loaded", "'loaded'")
        if not loaded.get("error"):
            raise CheckFailed(
                f"code without handle must be answered with loaded.error, got {_excerpt(loaded)}"
            )

    def check_load_bad_command(self, host: HostUnderTest) -> None:
        if self.lang != "exec":
            raise Skip("only exec modules start commands")
        host.send(self.load_frame("missing_command"))
        loaded, _ = host.expect(lambda f: f["op"] == "loaded", "'loaded'")
        if not loaded.get("error"):
            raise CheckFailed(
                f"a command that cannot start must be answered with loaded.error, got {_excerpt(loaded)}"
            )

    def check_deliver_emit_done(self, host: HostUnderTest) -> None:
        self.load(host, "echo")
        msgs = list(range(1, 201))
        host.send(
            {"op": "deliver", "seq": 1, "module": "t/echo", "port": "in", "msgs": msgs[:100]},
            {"op": "deliver", "seq": 2, "module": "t/echo", "port": "in", "msgs": msgs[100:]},
        )
        _, before = host.expect(
            lambda f: f["op"] == "done" and f.get("seq", 0) >= 2, "done covering seq 2"
        )
        got = [
            m
            for f in before
            if f["op"] == "emit" and f.get("module") == "t/echo"
            for m in f["msgs"]
        ]
        if got != msgs:
            raise CheckFailed(
                f"emits before done must carry every output in order; got {len(got)} of {len(msgs)}: {got[:10]}..."
            )
        for f in before:
            if f["op"] == "emit" and f.get("port") != "out":
                raise CheckFailed(
                    f"a returned value must be emitted on port 'out', got {_excerpt(f)}"
                )

    def check_emit_named_port(self, host: HostUnderTest) -> None:
        self.needs_code()
        self.load(host, "ports")
        host.send(
            {"op": "deliver", "seq": 1, "module": "t/ports", "port": "in", "msgs": ["a", "b"]}
        )
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        ports: dict[str, list[Any]] = {}
        for f in before:
            if f["op"] == "emit":
                ports.setdefault(f["port"], []).extend(f["msgs"])
        if ports != {"side": ["a", "b"], "out": ["a", "b"]}:
            raise CheckFailed(
                f"ctx.emit('side', msg) plus a return value must give side=[a, b] and out=[a, b]; got {ports}"
            )

    def check_state_snapshot_and_restore(self, host: HostUnderTest) -> None:
        self.needs_code()
        self.load(host, "count")
        host.send(
            {"op": "deliver", "seq": 1, "module": "t/count", "port": "in", "msgs": ["x", "x", "x"]}
        )
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        states = [f for f in before if f["op"] == "state" and f.get("module") == "t/count"]
        if not states or states[-1].get("state") != {"n": 3}:
            raise CheckFailed(
                f"a changed ctx.state must be sent as a state frame before done; got {[_excerpt(s) for s in states]}"
            )
        self.load(host, "count", module="t/count2", state={"n": 10})
        host.send({"op": "deliver", "seq": 2, "module": "t/count2", "port": "in", "msgs": ["x"]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [11]:
            raise CheckFailed(
                f"load with state {{n: 10}} must restore ctx.state; the counter answered {got}, expected [11]"
            )

    def check_replace_code(self, host: HostUnderTest) -> None:
        """A load over a loaded module (hot swap): a failing replacement changes nothing,
        state included; a good one runs migrate and reports the new state before loaded;
        ``migrate: false`` skips migrate."""
        self.needs_code()
        self.load(host, "count", module="t/swap")
        host.send({"op": "deliver", "seq": 1, "module": "t/swap", "port": "in", "msgs": ["x", "x"]})
        host.expect(lambda f: f["op"] == "done", "done")
        host.send(self.load_frame("migrate_fails", module="t/swap"))
        loaded, _ = host.expect(
            lambda f: f["op"] == "loaded", "'loaded' for the failing replacement"
        )
        if not loaded.get("error"):
            raise CheckFailed("a replacement whose migrate raises must answer loaded with an error")
        host.send({"op": "deliver", "seq": 2, "module": "t/swap", "port": "in", "msgs": ["x"]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [3]:
            raise CheckFailed(
                "after a failed replacement the old code must run on with its state untouched "
                f"(even if migrate changed the old state before raising); expected [3], got {got}"
            )
        host.send(self.load_frame("migrate_100", module="t/swap"))
        loaded, before = host.expect(lambda f: f["op"] == "loaded", "'loaded' for the replacement")
        if loaded.get("error"):
            raise CheckFailed(f"a good replacement failed: {_excerpt(loaded['error'])}")
        states = [
            f.get("state") for f in before if f["op"] == "state" and f.get("module") == "t/swap"
        ]
        if states[-1:] != [{"n": 100}]:
            raise CheckFailed(
                f"the state migrate returned must be sent in a state frame before loaded; got {states}"
            )
        host.send({"op": "deliver", "seq": 3, "module": "t/swap", "port": "in", "msgs": ["x"]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [101]:
            raise CheckFailed(
                f"the new code must see the migrated state; expected [101], got {got}"
            )
        self.load(host, "migrate_100", module="t/swap", state={"n": 5}, migrate=False)
        host.send({"op": "deliver", "seq": 4, "module": "t/swap", "port": "in", "msgs": ["x"]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [6]:
            raise CheckFailed(
                f"a load with state {{n: 5}} and migrate: false must not migrate; expected [6], got {got}"
            )

    def _add1_into_times2(self, host: HostUnderTest) -> None:
        """t/add1 and t/times2 loaded, add1's out wired to times2 inside the host."""
        self.load(host, "add1")
        self.load(host, "times2")
        host.send(
            {
                "op": "route",
                "routes": {
                    "t/add1": {"out": {"local": [["t/times2", "in"]], "external": False}},
                    "t/times2": {"out": {"local": [], "external": True}},
                },
            }
        )

    def check_local_route(self, host: HostUnderTest) -> None:
        self._add1_into_times2(host)
        host.send({"op": "deliver", "seq": 1, "module": "t/add1", "port": "in", "msgs": [1, 2, 3]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        emits = [
            (f["module"], f["port"], m) for f in before if f["op"] == "emit" for m in f["msgs"]
        ]
        if emits != [("t/times2", "out", 4), ("t/times2", "out", 6), ("t/times2", "out", 8)]:
            raise CheckFailed(
                f"a local route must deliver inside the host and only external ports may emit; got {emits}"
            )

    def check_local_counts(self, host: HostUnderTest) -> None:
        """A host listing ``counts`` reports in ``done`` the messages it delivered inside
        itself since its previous done (PROTOCOL.md section 12)."""
        if "counts" not in (host.frames[0].get("features") or ()):
            raise Skip("the host does not list 'counts' in hello.features")
        self._add1_into_times2(host)
        wire = ["t/add1", "out", "t/times2", "in"]
        for seq, msgs in ((1, [1, 2, 3]), (2, [5])):
            host.send({"op": "deliver", "seq": seq, "module": "t/add1", "port": "in", "msgs": msgs})
            done, _ = host.expect(lambda f: f["op"] == "done", "done")
            got = done.get("local")
            if got != [[*wire, len(msgs)]]:
                raise CheckFailed(
                    f"done after {len(msgs)} message(s) along a local wire must say"
                    f' "local": [{[*wire, len(msgs)]}] (counted since the previous done);'
                    f" got {got!r}"
                )

    def check_route_replaced(self, host: HostUnderTest) -> None:
        """A new route table takes over between two messages (a debugging runner sends one
        without local wires, to hold every message itself)."""
        self._add1_into_times2(host)
        host.send({"op": "deliver", "seq": 1, "module": "t/add1", "port": "in", "msgs": [1]})
        host.send(
            {
                "op": "route",
                "routes": {
                    "t/add1": {"out": {"local": [], "external": True}},
                    "t/times2": {"out": {"local": [], "external": True}},
                },
            }
        )
        host.send({"op": "deliver", "seq": 2, "module": "t/add1", "port": "in", "msgs": [5]})
        emits: list[tuple[str, Any]] = []
        while True:
            done, before = host.expect(lambda f: f["op"] == "done", "done")
            emits += [(f["module"], m) for f in before if f["op"] == "emit" for m in f["msgs"]]
            if done["seq"] >= 2:
                break
        if sorted(emits) != [("t/add1", 6), ("t/times2", 4)]:  # different ports: any order
            raise CheckFailed(
                "the first message must follow the old table (add1 -> times2 inside the host), "
                f"the second the new one (add1's output leaves the host); got {emits}"
            )

    def check_user_error(self, host: HostUnderTest) -> None:
        self.load(host, "raises")
        host.send(
            {"op": "deliver", "seq": 7, "module": "t/raises", "port": "in", "msgs": [1, 2, 3]}
        )
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        errors = [f for f in before if f["op"] == "error"]
        emitted = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if len(errors) != 1 or errors[0].get("msg") != 2 or errors[0].get("seq") != 7:
            raise CheckFailed(
                f"a failing message must give one error frame with msg 2 and seq 7; got {[_excerpt(e) for e in errors]}"
            )
        error = errors[0].get("error")
        if not isinstance(error, dict) or not error.get("type") or "message" not in error:
            raise CheckFailed(
                f"error.error must be {{type, message, traceback}}; got {_excerpt(errors[0])}"
            )
        if emitted != [1, 3]:
            raise CheckFailed(
                f"messages after a failing one must still be handled; emitted {emitted}, expected [1, 3]"
            )

    def check_hung(self, host: HostUnderTest) -> None:
        self.load(host, "hang", timeout=0.3)
        host.send(
            {"op": "deliver", "seq": 3, "module": "t/hang", "port": "in", "msgs": ["hang", "after"]}
        )
        if self.lang == "exec":
            # The exec host handles a stuck child itself: a Timeout error, then the next input.
            _, before = host.expect(
                lambda f: f["op"] == "done", "done after a Timeout error", timeout=self.timeout + 1
            )
            errors = [f for f in before if f["op"] == "error"]
            emitted = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
            if [e.get("error", {}).get("type") for e in errors] != ["Timeout"] or emitted != [
                "after"
            ]:
                raise CheckFailed(
                    f"a stuck child must give a Timeout error and the next input must be answered; errors {errors}, emitted {emitted}"
                )
            return
        hung, _ = host.expect(lambda f: f["op"] == "hung", "a hung frame", timeout=0.3 + 3)
        if (
            hung.get("module") != "t/hang"
            or hung.get("seq") != 3
            or hung.get("index") not in (0, None)
        ):
            raise CheckFailed(
                f"hung must name module t/hang, seq 3 and index 0; got {_excerpt(hung)}"
            )

    def check_ping(self, host: HostUnderTest) -> None:
        host.send({"op": "ping", "id": {"n": 42}})
        pong, _ = host.expect(lambda f: f["op"] == "pong", "pong")
        if pong.get("id") != {"n": 42}:
            raise CheckFailed(f"pong must echo the ping's id; got {_excerpt(pong)}")

    def check_unknown_op(self, host: HostUnderTest) -> None:
        host.send({"op": "frobnicate", "x": 1}, {"op": "ping", "id": 1})
        answer, _ = host.expect(lambda f: f["op"] in ("unsupported", "pong"), "unsupported")
        if answer["op"] != "unsupported" or answer.get("ref") != "frobnicate":
            raise CheckFailed(
                f"an unknown op must be answered with unsupported(ref=op) and the host must go on; got {_excerpt(answer)}"
            )
        host.expect(lambda f: f["op"] == "pong", "pong after the unknown op")

    def check_garbage_is_fatal(self, host: HostUnderTest) -> None:
        host.send(b"this is not json\n")
        fatal, _ = host.expect(lambda f: f["op"] == "fatal", "fatal")
        if not fatal.get("error"):
            raise CheckFailed("fatal must say what was wrong in 'error'")
        code = host.wait_exit()
        if code != 3:
            raise CheckFailed(f"after fatal the host must exit with status 3, got {code}")

    def check_garbage_after_a_delivery(self, host: HostUnderTest) -> None:
        """A protocol error in the same write as a delivery: the host may handle the
        delivery before it gives up, but it must never acknowledge it without its emits
        (the runner would not deliver it again: a message lost)."""
        self.load(host, "echo")
        host.send(
            {"op": "deliver", "seq": 1, "module": "t/echo", "port": "in", "msgs": [7]},
            b"this is not json\n",
        )
        _, before = host.expect(lambda f: f["op"] == "fatal", "fatal")
        emitted = False
        for f in before:
            if f["op"] == "emit" and f.get("module") == "t/echo" and 7 in f.get("msgs", ()):
                emitted = True
            if f["op"] == "done" and f.get("seq", 0) >= 1 and not emitted:
                raise CheckFailed(
                    "the host acknowledged a delivery it did not handle (a done without its"
                    " emits) before a protocol error in the same write"
                )
        code = host.wait_exit()
        if code != 3:
            raise CheckFailed(f"after fatal the host must exit with status 3, got {code}")

    def check_raw_emit(self, host: HostUnderTest) -> None:
        """PROTOCOL.md section 10: a host listing ``raw`` writes every ``emit`` as
        ``{"op":"emit",...,"n":N,"msgs":[...]}``: ``msgs`` last, ``n`` its length, so a
        runner can route the body without parsing it."""
        hello = host.frames[0]
        if "raw" not in (hello.get("features") or ()):
            raise Skip("the host does not list 'raw' in hello.features")
        self.load(host, "ports" if self.lang != "exec" else "echo")
        module = "t/ports" if self.lang != "exec" else "t/echo"
        tricky = ['x,"msgs":[1]}', {"msgs": [{"n": 2}], "op": "emit"}, "\u2028 é \\", [], None, 2.5]
        host.send({"op": "deliver", "seq": 1, "module": module, "port": "in", "msgs": tricky})
        host.expect(lambda f: f["op"] == "done", "done")
        seen: list[Any] = []
        for line in host.lines:
            if not line.startswith(b'{"op":"emit"'):
                if b'"op":"emit"' in line[:40]:
                    raise CheckFailed(
                        f'a raw emit must start with {{"op":"emit", ; got {line[:200]!r}'
                    )
                continue
            at = line.find(b',"msgs":')
            if at < 0 or not line.endswith(b"}"):
                raise CheckFailed(
                    f'a raw emit must end with ,"msgs":[...]}} (msgs last); got {line[:200]!r}'
                )
            try:
                head = orjson.loads(line[:at] + b"}")
            except orjson.JSONDecodeError as exc:
                raise CheckFailed(
                    f"a raw emit's fields before msgs must be a JSON header ({exc}); got {line[:200]!r}"
                ) from None
            if not isinstance(head, dict) or "module" not in head or "n" not in head:
                raise CheckFailed(
                    f"a raw emit must carry module, port and n before msgs (msgs last); got {line[:200]!r}"
                )
            try:
                msgs = orjson.loads(line[at + len(b',"msgs":') : -1])
            except orjson.JSONDecodeError as exc:
                raise CheckFailed(
                    f"a raw emit must split into a header and the msgs array ({exc}); got {line[:200]!r}"
                ) from None
            if not isinstance(msgs, list) or head.get("n") != len(msgs):
                raise CheckFailed(
                    f"a raw emit's 'n' must be the length of its msgs; got n={head.get('n')!r} for {line[:200]!r}"
                )
            if head.get("module") != module or not isinstance(head.get("port"), str):
                raise CheckFailed(
                    f"a raw emit's header must carry module and port; got {line[:200]!r}"
                )
            seen.extend(msgs)
        returned = [m for m in tricky if m is not None]  # a returned null sends nothing
        want = returned if self.lang == "exec" else tricky + returned  # ctx.emit sends null

        # the same values, in any order of object keys (a JSON object has none; the go
        # host writes a map in Go's iteration order)
        def canonical(msgs: list[Any]) -> list[bytes]:
            return sorted(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in msgs)

        if canonical(seen) != canonical(want):
            raise CheckFailed(f"raw emits must carry every output unchanged; got {seen!r}")

    # ---------------------------------------------------------------- direct channels

    def _needs_direct(self, host: HostUnderTest) -> None:
        if "direct" not in (host.frames[0].get("features") or ()):
            raise Skip("the host does not list 'direct' in hello.features")

    def _channel(self, host: HostUnderTest, name: str, size: int | None = None) -> tuple[str, int]:
        """A channel FIFO in the host's folder, held open O_RDWR as a runner holds it."""
        path = host.dir / f"ch-{name}"
        os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        host.extra_fds.append(fd)
        if size is not None:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        return str(path), fd

    def _channel_lines(self, fd: int, want: int) -> list[bytes]:
        """Complete lines read from a channel the host writes (``want`` of them)."""
        data = b""
        deadline = time.monotonic() + self.timeout
        while data.count(b"\n") < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(
                    f"expected {want} line(s) on the direct channel; got {data[:300]!r}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                with suppress(BlockingIOError):
                    data += os.read(fd, 1 << 20)
        return data.split(b"\n")[:want]

    def check_direct_send(self, host: HostUnderTest) -> None:
        """PROTOCOL.md section 11: a port with ``direct`` targets writes one ``deliver``
        per channel (all its targets there: ``module``, ``port``, ``also``) with the frame's
        ``d``, and still sends the runner the ``emit`` (raw layout) with ``d`` and ``ch``."""
        self._needs_direct(host)
        self.needs_code()
        self.load(host, "echo")
        path, fd = self._channel(host, "c1")
        direct = [["c1", "x/a", "in"], ["c1", "x/b", "in2"]]
        host.send(
            {
                "op": "route",
                "routes": {"t/echo": {"out": {"local": [], "external": True, "direct": direct}}},
                "channels": {"c1": path},
            }
        )
        ds = []
        for seq, msgs in ((1, [1, "two"]), (2, [{"n": 3}])):
            host.send({"op": "deliver", "seq": seq, "module": "t/echo", "port": "in", "msgs": msgs})
            _, before = host.expect(
                lambda f, s=seq: f["op"] == "done" and f.get("seq") == s, "done"
            )
            emits = [f for f in before if f["op"] == "emit"]
            if len(emits) != 1 or emits[0].get("msgs") != msgs:
                raise CheckFailed(f"the runner must still get the emit of {msgs}; got {emits}")
            emit = emits[0]
            if not isinstance(emit.get("d"), int) or emit.get("ch") != "c1":
                raise CheckFailed(f'the emit must carry "d" and "ch":"c1"; got {_excerpt(emit)}')
            line = next(x for x in host.lines if x.startswith(b'{"op":"emit"') and b'"d":' in x)
            host.lines.clear()
            if not line.endswith(b"]}") or line.find(b',"msgs":') < line.find(b'"d":'):
                raise CheckFailed(f"'d' and 'ch' belong in the raw header, before msgs: {line!r}")
            [got] = self._channel_lines(fd, 1)
            frame = orjson.loads(got)
            want = {"op": "deliver", "ch": "c1", "d": emit["d"], "module": "x/a", "port": "in"}
            if {k: frame.get(k) for k in want} != want or frame.get("msgs") != msgs:
                raise CheckFailed(f"channel frame must be {want} with the msgs; got {got!r}")
            if frame.get("also") != [["x/b", "in2"]]:
                raise CheckFailed(f"the second target on the channel goes in 'also'; got {got!r}")
            ds.append(emit["d"])
        if not ds[1] > ds[0]:
            raise CheckFailed(f"'d' must increase from one frame to the next; got {ds}")

    @staticmethod
    def _route_echo_to(host: HostUnderTest, ch: str, path: str) -> None:
        """A route table sending t/echo's out over channel ``ch`` (at ``path``) to x/a."""
        host.send(
            {
                "op": "route",
                "routes": {
                    "t/echo": {
                        "out": {"local": [], "external": True, "direct": [[ch, "x/a", "in"]]}
                    }
                },
                "channels": {ch: path},
            }
        )

    def check_direct_full_cut(self, host: HostUnderTest) -> None:
        """A channel that does not take a batch at once is given up for good: ``cut`` to
        the runner before the frames of that batch, and never written again."""
        self._needs_direct(host)
        self.needs_code()
        self.load(host, "echo")
        path, fd = self._channel(host, "c2", size=4096)
        os.write(fd, b"x" * 4000)  # nearly full: the next batch cannot fit
        self._route_echo_to(host, "c2", path)
        big = ["y" * 1000] * 4
        host.send({"op": "deliver", "seq": 1, "module": "t/echo", "port": "in", "msgs": big})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        ops = [f["op"] for f in before]
        if "cut" not in ops or [f.get("ch") for f in before if f["op"] == "cut"] != ["c2"]:
            raise CheckFailed(f"a full channel must be answered with cut c2; got {ops}")
        if ops.index("cut") > min(i for i, op in enumerate(ops) if op == "emit"):
            raise CheckFailed(f"cut must come before the emits of its batch; got {ops}")
        host.send({"op": "deliver", "seq": 2, "module": "t/echo", "port": "in", "msgs": [5]})
        _, before = host.expect(lambda f: f["op"] == "done", "done")
        emits = [f for f in before if f["op"] == "emit"]
        if [f.get("msgs") for f in emits] != [[5]] or "d" in emits[0]:
            raise CheckFailed(f"after a cut, emits go to the runner only, without d: {emits}")
        # the same for a batch of several frames (a host may write each channel once, at
        # the end of the batch, rather than line by line)
        path, fd = self._channel(host, "c3", size=4096)
        os.write(fd, b"x" * 4000)
        self._route_echo_to(host, "c3", path)
        frame = {"op": "deliver", "module": "t/echo", "port": "in", "msgs": big}
        host.send({**frame, "seq": 3}, {**frame, "seq": 4})
        _, before = host.expect(lambda f: f["op"] == "done" and f.get("seq") == 4, "done seq 4")
        ops = [f["op"] for f in before]
        if [f.get("ch") for f in before if f["op"] == "cut"] != ["c3"]:
            raise CheckFailed(f"a full channel must be answered with cut c3, once; got {ops}")
        if ops.index("cut") > min(i for i, op in enumerate(ops) if op == "emit"):
            raise CheckFailed(f"cut must come before the emits of its batch; got {ops}")
        if sum(len(f["msgs"]) for f in before if f["op"] == "emit") != 2 * len(big):
            raise CheckFailed(f"every message still goes to the runner; got {ops}")

    def check_direct_receive(self, host: HostUnderTest) -> None:
        """``listen``: frames from the channel are handled and acknowledged in ``done``'s
        ``direct``; the runner's copies (``ch``, ``d``) of handled frames are skipped but
        acknowledged by seq; ``cut`` is answered with ``cut`` (after the ``done`` that
        acknowledges the channel's last frames) and the channel is not read any more (a
        partial line on it is no error)."""
        self._needs_direct(host)
        self.needs_code()
        self.load(host, "echo")
        path, fd = self._channel(host, "c9")
        host.send({"op": "listen", "ch": "c9", "path": path})
        host.send({"op": "ping", "id": 1})
        host.expect(lambda f: f["op"] == "pong", "pong")
        for d, msg in ((1, 10), (2, 11)):
            line = {
                "op": "deliver",
                "ch": "c9",
                "d": d,
                "module": "t/echo",
                "port": "in",
                "msgs": [msg],
            }
            os.write(fd, orjson.dumps(line) + b"\n")
        emitted: list[Any] = []

        def acked(f: dict[str, Any]) -> bool:
            if f["op"] == "emit":
                emitted.extend(f.get("msgs") or ())
            return f["op"] == "done" and (f.get("direct") or {}).get("c9") == 2

        host.expect(acked, 'done with "direct": {"c9": 2}')
        if emitted != [10, 11]:
            raise CheckFailed(f"channel frames must be handled in order; emitted {emitted}")
        copy = {"op": "deliver", "seq": 1, "ch": "c9", "d": 2, "module": "t/echo", "port": "in"}
        host.send({**copy, "msgs": [11]}, {**copy, "seq": 2, "d": 3, "msgs": [12]})
        _, before = host.expect(lambda f: f["op"] == "done" and f.get("seq") == 2, "done seq 2")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [12]:
            raise CheckFailed(
                f"a copy of a handled frame (d 2) must be skipped, d 3 handled: {got}"
            )
        os.write(fd, b'{"op":"deliver","ch":"c9","d":4,"module":"t/ech')  # torn: the sender gave up
        host.send({"op": "cut", "ch": "c9"}, {"op": "ping", "id": 2})
        _, before = host.expect(
            lambda f: f["op"] == "cut" and f.get("ch") == "c9",
            "cut c9 answered with cut c9 (a torn line on it is no error)",
        )
        if not any(f["op"] == "pong" for f in before):
            raise CheckFailed("the host must go on after a cut: no pong")
        os.write(fd, b'o","port":"in","msgs":[13]}\n')
        host.send({**copy, "seq": 3, "d": 4, "msgs": [13]}, {"op": "ping", "id": 3})
        _, before = host.expect(lambda f: f["op"] == "pong", "pong")
        got = [m for f in before if f["op"] == "emit" for m in f["msgs"]]
        if got != [13]:
            raise CheckFailed(f"after cut only the runner's copy is handled, once: {got}")

    def check_direct_receive_in_pieces(self, host: HostUnderTest) -> None:
        """Channel lines that come in pieces are joined and handled whole and in order:
        a line split across two reads, and lines read while an async handler of a runner
        delivery is in flight (handled after it). ``done`` acknowledges them all."""
        self._needs_direct(host)
        self.needs_code()
        self.load(host, "echo")
        self.load(host, "wait")
        path, fd = self._channel(host, "c8")
        host.send({"op": "listen", "ch": "c8", "path": path}, {"op": "ping", "id": 1})
        host.expect(lambda f: f["op"] == "pong", "pong")
        msgs = [{"d": d, "pad": f"{d}" * (40 * d)} for d in range(1, 5)]
        lines = [
            orjson.dumps(
                {"op": "deliver", "ch": "c8", "d": d, "module": "t/echo", "port": "in", "msgs": [m]}
            )
            + b"\n"
            for d, m in enumerate(msgs, 1)
        ]
        emitted: list[Any] = []

        def acked(d: int) -> Callable[[dict[str, Any]], bool]:
            def want(f: dict[str, Any]) -> bool:
                if f["op"] == "emit":
                    emitted.extend(f.get("msgs") or ())
                return f["op"] == "done" and (f.get("direct") or {}).get("c8") == d

            return want

        def pong(f: dict[str, Any]) -> bool:
            if f["op"] == "emit":
                emitted.extend(f.get("msgs") or ())
            return f["op"] == "pong"

        # an idle host: line 1 in two writes, then the rest of line 1 with the first
        # part of line 2, spaced so that they are read apart (the checks below hold
        # however they are read); a ping between them goes on the runner pipe meanwhile
        os.write(fd, lines[0][:30])
        host.send({"op": "ping", "id": 2})
        host.expect(pong, "pong")
        time.sleep(0.05)
        os.write(fd, lines[0][30:] + lines[1][:25])
        time.sleep(0.05)
        os.write(fd, lines[1][25:])
        host.expect(acked(2), 'done with "direct": {"c8": 2}')
        # a host busy with an async handler (0.3 s) while lines 3 and 4 come, spaced so
        # that they are read apart (the checks below hold however they are read)
        host.send({"op": "deliver", "seq": 1, "module": "t/wait", "port": "in", "msgs": ["wait"]})
        time.sleep(0.05)
        os.write(fd, lines[2][:20])
        time.sleep(0.05)
        os.write(fd, lines[2][20:] + lines[3][:20])
        time.sleep(0.05)
        os.write(fd, lines[3][20:])
        host.expect(acked(4), 'done with "direct": {"c8": 4}')
        if [m for m in emitted if m != "wait"] != msgs:
            raise CheckFailed(
                f"channel lines in pieces must be handled whole, in order; emitted {emitted}"
            )
        if emitted.count("wait") != 1:
            raise CheckFailed(f"the async handler's output must come once; emitted {emitted}")

    def check_direct_garbage_is_fatal(self, host: HostUnderTest) -> None:
        """A complete line on a channel that is not a frame is a protocol error."""
        self._needs_direct(host)
        path, fd = self._channel(host, "c5")
        host.send({"op": "listen", "ch": "c5", "path": path}, {"op": "ping", "id": 1})
        host.expect(lambda f: f["op"] == "pong", "pong")
        os.write(fd, b"not a frame\n")
        host.expect(lambda f: f["op"] == "fatal", "fatal")
        code = host.wait_exit()
        if code != 3:
            raise CheckFailed(f"after fatal the host must exit with status 3, got {code}")

    def check_shutdown(self, host: HostUnderTest) -> None:
        self.load(host, "echo")
        host.send(
            {"op": "deliver", "seq": 1, "module": "t/echo", "port": "in", "msgs": [1]},
            {"op": "shutdown"},
        )
        _, before = host.expect(lambda f: f["op"] == "bye", "bye")
        if not any(f["op"] == "done" for f in before):
            raise CheckFailed(
                "frames sent before shutdown must be handled and acknowledged before bye"
            )
        code = host.wait_exit()
        if code != 0:
            raise CheckFailed(f"after bye the host must exit 0, got {code}")

    def checks(self) -> list[tuple[str, Callable[[HostUnderTest], None]]]:
        return [
            (name[len("check_") :], getattr(self, name))
            for name in (
                "check_hello",
                "check_load_good",
                "check_load_syntax_error",
                "check_load_without_handle",
                "check_load_bad_command",
                "check_deliver_emit_done",
                "check_emit_named_port",
                "check_state_snapshot_and_restore",
                "check_replace_code",
                "check_local_route",
                "check_local_counts",
                "check_route_replaced",
                "check_user_error",
                "check_hung",
                "check_raw_emit",
                "check_direct_send",
                "check_direct_full_cut",
                "check_direct_receive",
                "check_direct_receive_in_pieces",
                "check_direct_garbage_is_fatal",
                "check_ping",
                "check_unknown_op",
                "check_garbage_is_fatal",
                "check_garbage_after_a_delivery",
                "check_shutdown",
            )
        ]


def run_checks(
    command: list[str],
    lang: str,
    *,
    modules: dict[str, Any] | None = None,
    timeout: float = 5.0,
    out: Callable[[str], None] = print,
) -> list[CheckResult]:
    """Run every check, each against a fresh host; print one line per check and a summary."""
    if modules is None:
        if lang not in LANGS:
            raise ValueError(
                f"no built-in test modules for {lang!r} (built in: {', '.join(LANGS)}); pass modules"
            )
        modules = LANGS[lang]
    kit = Kit(command, lang, modules, timeout)
    results = []
    for name, check in kit.checks():
        try:
            with started_host(command, timeout, probe_order=name == "hello") as host:
                check(host)
            result = CheckResult(name, "pass")
            out(f"PASS {name}")
        except Skip as exc:
            result = CheckResult(name, "skip", str(exc))
            out(f"SKIP {name}: {exc}")
        except CheckFailed as exc:
            result = CheckResult(name, "fail", str(exc))
            out(f"FAIL {name}: {exc}")
        results.append(result)
    passed = sum(r.status == "pass" for r in results)
    failed = sum(r.status == "fail" for r in results)
    skipped = sum(r.status == "skip" for r in results)
    out(f"{passed} passed, {failed} failed, {skipped} skipped")
    return results


def _build_host(modules: dict[str, str], folder: Path) -> str | None:
    """A go host binary holding the test modules (those that do not compile are left
    out: their load answers the compiler's message)."""

    from .gobuild import GoBuildError, GoSource, default_cache, ensure_binary

    cache = default_cache()
    suffix = {p.stem: p.name for p in folder.iterdir() if p.is_file()}
    sources = [
        GoSource(code, str(folder / suffix.get(name, name))) for name, code in modules.items()
    ]
    try:
        result = ensure_binary(sources, cache, allow_broken=True)
    except GoBuildError as exc:
        print(f"fifoflow conformance: cannot build the host: {exc}", file=sys.stderr)
        return None
    print(
        f"fifoflow conformance: host built ({'cached' if result.cached else f'{result.seconds:.1f} s'}): {result.path}"
    )
    return str(result.path)


def _load_modules_dir(path: Path) -> dict[str, str]:
    modules = {}
    for file in sorted(path.iterdir()):
        if file.is_file():
            modules[file.stem] = file.read_text(encoding="utf-8")
    return modules


def main(
    argv: list[str] | None = None, *, prog: str = "python -m fifoflow.runtimes.conformance"
) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Check a runtime host against the fifoflow runtime protocol."
    )
    parser.add_argument(
        "--runtime", help="a runtime id from the manifests (python, node, exec, ...)"
    )
    parser.add_argument(
        "--lang",
        help="which built-in test modules to use (python, node, exec); default: the runtime id",
    )
    parser.add_argument(
        "--modules", type=Path, help="a directory of test modules for another language"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)"
    )
    parser.add_argument(
        "command",
        nargs="*",
        help="the host's start command (after --); the FIFO paths are appended",
    )
    args = parser.parse_args(argv)
    if args.runtime and args.command:
        parser.error("give --runtime or a command, not both")
    if args.runtime:
        from .registry import discover

        runtimes = discover()
        if args.runtime not in runtimes:
            print(
                f"fifoflow conformance: unknown runtime {args.runtime!r} (known: {', '.join(sorted(runtimes))})",
                file=sys.stderr,
            )
            return 2
        manifest = runtimes[args.runtime]
        lang = args.lang or args.runtime
        if manifest.build:
            # a compiled runtime: its host is built from the test modules first
            if args.modules is None:
                args.modules = manifest.directory / "conformance"
            binary = _build_host(_load_modules_dir(args.modules), args.modules)
            if binary is None:
                return 2
            command = manifest.argv(binary=binary)
        else:
            command = manifest.argv()
    elif args.command:
        command = args.command
        lang = args.lang or ""
        if shutil.which(command[0]) is None and not Path(command[0]).exists():
            print(f"fifoflow conformance: command not found: {command[0]}", file=sys.stderr)
            return 2
    else:
        parser.error("give --runtime ID or -- COMMAND...")
    modules = _load_modules_dir(args.modules) if args.modules else None
    if modules is None and lang not in LANGS:
        print(
            f"fifoflow conformance: no built-in test modules for {lang or 'this host'!r}; pass --lang {{python,node,exec}} or --modules DIR",
            file=sys.stderr,
        )
        return 2
    print(f"fifoflow conformance: {' '.join(command)} ({lang or 'custom'} test modules)")
    results = run_checks(
        command,
        lang,
        modules=modules,
        timeout=args.timeout,
        out=lambda line: print(line, flush=True),
    )
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
