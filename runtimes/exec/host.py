#!/usr/bin/env python3
"""fifoflow exec runtime host, protocol v1 (PROTOCOL.md section 7).

Any executable becomes a module: one long-lived child per module, fed one JSON value per
line on stdin, answering exactly one JSON line per input on stdout (``null`` = nothing).

Shape: one ``selectors`` loop over the to-runtime pipe and every child's stdin, stdout
and stderr (all non-blocking). Inputs are pipelined: up to ``INFLIGHT`` lines are written
to a child before its first answer comes back; answers are matched to inputs in order.
A ``deliver`` frame is acknowledged once every input it caused (including deliveries to
other exec modules of this host over same-runtime wires) has been answered.

Exec modules have no state: this host never sends ``state`` frames.

One file of ~550 lines on purpose: like every host it runs as a script, with no
fifoflow import (PROTOCOL.md), so its loop, framing and children live together.

Resource handling: children run in the host's process group (the runner kills the group);
on shutdown or end of file their stdin is closed, they are given a moment to exit, then
killed and reaped. Error handling: a child that exits, answers garbage or runs past its
timeout produces an ``error`` frame for the input concerned and is restarted; the inputs
it had not answered yet are sent again to the new child, in order.

Crash loops (PROTOCOL.md section 7): a child that exits is started again after a backoff
(0, 0.1 s, 0.2 s, ... up to ``backoffMax``), each restart reported in a ``restart``
frame (with the dead child's exit status and stderr tail: ``code``, ``stderr``); ``limit`` exits within ``period`` give the module up: a ``failed`` frame, and
every input waiting for it, and every later one, becomes a ``CrashLoop`` error. The
policy comes with ``load`` (``restart``), else the runner's defaults below.
"""

import errno
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque

PROTOCOL = 1
VERSION = "1.0.0"
READ_SIZE = 1 << 20
# Every read goes into this buffer and what came is copied out (the loop is one thread):
# os.read(fd, READ_SIZE) allocates READ_SIZE bytes per call (an mmap above malloc's
# threshold) and shrinks them, ~30 us per read whatever came.
_READ_BUFFER = bytearray(READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)


def read_some(fd):
    """What ``fd`` holds now, up to READ_SIZE bytes (b"" at end of file); raises as
    ``os.read`` does."""
    n = os.readv(fd, (_READ_BUFFER,))
    return _READ_VIEW[:n].tobytes()


INFLIGHT = 1000  # inputs written to one child and not yet answered
BACKLOG = 20000  # inputs waiting in the host before it stops reading its pipe
# A child's exits: this many within PERIOD seconds give the module up (the runner's
# crash_limit / crash_period / restart_backoff_max; a load frame's "restart" overrides).
CRASH_LIMIT = 5
CRASH_PERIOD = 30.0
BACKOFF_MAX = 5.0
# What ``restart``/``failed`` frames carry of a dead child's stderr (its last lines).
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000

try:
    import orjson

    dumps = orjson.dumps
    loads = orjson.loads
    DecodeError = orjson.JSONDecodeError
except ImportError:  # pragma: no cover
    import json

    def dumps(obj):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    loads = json.loads
    DecodeError = ValueError


class ProtocolViolation(Exception):
    pass


def _nonblocking(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


class Frame:
    """A deliver frame, how many of the inputs it caused are still unanswered, and the
    route table in force when it arrived: children answer later, but a `route` op must
    take effect between two messages, so each frame's outputs follow its own table."""

    __slots__ = ("outstanding", "routes", "seq")

    def __init__(self, seq, routes):
        self.seq = seq
        self.outstanding = 0
        self.routes = routes


class Child:
    __slots__ = (
        "buf_err",
        "buf_out",
        "err_tail",
        "inflight",
        "last_err",
        "mod",
        "pending",
        "proc",
        "since",
        "write_buf",
    )

    def __init__(self, mod, proc):
        self.mod = mod
        self.proc = proc
        self.inflight = deque()  # (msg, port, frame) written, awaiting an answer
        self.pending = deque()  # (msg, port, frame) not yet written
        self.write_buf = bytearray()
        self.buf_out = b""
        self.buf_err = b""
        self.since = 0.0  # when the oldest in-flight input started waiting
        self.last_err = ""
        self.err_tail = deque(maxlen=STDERR_TAIL_LINES)  # the child's last stderr lines


class Module:
    __slots__ = (
        "child",
        "command",
        "cwd",
        "env",
        "exits",
        "failed",
        "id",
        "last_exit",
        "policy",
        "restart_at",
        "restarts",
        "timeout",
        "waiting",
    )

    def __init__(
        self, mid, command, cwd, env, timeout, policy=(CRASH_LIMIT, CRASH_PERIOD, BACKOFF_MAX)
    ):
        self.id = mid
        self.command = command
        self.cwd = cwd
        self.env = env
        self.timeout = timeout
        self.child = None
        self.policy = policy  # (limit or None, period, backoff max)
        self.exits = deque()  # monotonic times of the child's recent exits
        self.restarts = 0
        self.restart_at = None  # while backing off: when the next child starts
        self.waiting = deque()  # (msg, port, frame) held while backing off
        self.failed = None  # why the module was given up (a crash loop)
        self.last_exit = None  # (exit status, stderr tail) of the child that exited last

    def exited(self, now):
        """Count an exit: the delay before the next child, or None for a crash loop."""
        limit, period, backoff_max = self.policy
        exits = self.exits
        exits.append(now)
        while exits and now - exits[0] > period:
            exits.popleft()
        if limit is not None and len(exits) >= limit:
            return None
        return min(backoff_max, 0.0 if len(exits) <= 1 else 0.1 * 2 ** (len(exits) - 2))


def _policy(spec):
    """The load frame's optional ``restart`` object, checked; the defaults otherwise."""
    if not isinstance(spec, dict):
        return (CRASH_LIMIT, CRASH_PERIOD, BACKOFF_MAX)

    def number(key, default):
        value = spec.get(key, default)
        return float(value) if isinstance(value, (int, float)) and value >= 0 else default

    limit = spec.get("limit", CRASH_LIMIT)
    limit = (
        int(limit)
        if isinstance(limit, int) and limit > 0
        else (None if limit is None else CRASH_LIMIT)
    )
    return (limit, number("period", CRASH_PERIOD), number("backoffMax", BACKOFF_MAX))


class Host:
    def __init__(self, rfd, wfd):
        self.rfd = rfd
        self.wfd = wfd
        self.sel = selectors.DefaultSelector()
        self.modules = {}
        self.routes = {}
        self.frames = deque()  # Frame objects in seq order, not yet acknowledged
        self.out = []
        self.emits = {}  # (module, port) -> list, flushed in order of first emit
        # (src, port, dst, dst port) -> messages delivered inside this host, reported
        # with the next done (its "local", PROTOCOL.md section 12)
        self.local_counts = {}
        self.backlog = 0
        self.reading = True
        self.stopping = False
        self.rbuf = b""
        _nonblocking(rfd)
        self.sel.register(rfd, selectors.EVENT_READ, ("pipe", None))

    # ------------------------------------------------------------------ output

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.wfd, view) :]
            except BlockingIOError:
                time.sleep(0.001)

    def frame(self, obj):
        self.flush_emits()
        self.out.append(dumps(obj) + b"\n")

    def flush_emits(self):
        for (mid, port), msgs in self.emits.items():
            self.out.append(
                dumps({"op": "emit", "module": mid, "port": port, "n": len(msgs), "msgs": msgs})
                + b"\n"
            )
        self.emits = {}

    def flush(self):
        self.flush_emits()
        done = None
        frames = self.frames
        while frames and frames[0].outstanding == 0:
            done = frames.popleft().seq
        if done is not None:
            local = self.local_counts
            if local:
                self.local_counts = {}
                self.out.append(
                    b'{"op":"done","seq":%d,"local":' % done
                    + dumps([[*k, n] for k, n in local.items()])
                    + b"}\n"
                )
            else:
                self.out.append(b'{"op":"done","seq":%d}\n' % done)
        if self.out:
            data = b"".join(self.out)
            self.out = []
            self.write(data)

    def error(self, mod_id, port, msg, frame, etype, message):
        self.frame(
            {
                "op": "error",
                "module": mod_id,
                "port": port,
                "msg": msg,
                "seq": frame.seq if frame is not None else None,
                "error": {"type": etype, "message": message, "traceback": ""},
            }
        )

    def log(self, mod_id, level, text):
        self.frame({"op": "log", "module": mod_id, "level": level, "text": text})

    # ------------------------------------------------------------------ children

    def start_child(self, mod):
        env = None
        if mod.env:
            env = dict(os.environ)
            env.update({str(k): str(v) for k, v in mod.env.items()})
        proc = subprocess.Popen(
            mod.command,
            cwd=mod.cwd or None,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        child = Child(mod, proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            _nonblocking(stream.fileno())
        self.sel.register(proc.stdout.fileno(), selectors.EVENT_READ, ("out", child))
        self.sel.register(proc.stderr.fileno(), selectors.EVENT_READ, ("err", child))
        mod.child = child
        return child

    def stop_child(self, child, grace=0.0):
        """Close the child's pipes, give it ``grace`` seconds, kill and reap it."""
        for stream in (child.proc.stdout, child.proc.stderr):
            try:
                self.sel.unregister(stream.fileno())
            except (KeyError, ValueError):
                pass
        try:
            self.sel.unregister(child.proc.stdin.fileno())
        except (KeyError, ValueError):
            pass
        for stream in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        if grace:
            try:
                child.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()

    def restart(self, child, reason_input_error, exited=None):
        """Replace a dead/hung child; its unanswered inputs go to the new one first.

        ``exited`` (why the child exited) counts the exit: the next child starts after
        the backoff, or, in a crash loop, the module is given up (:meth:`give_up`)."""
        mod = child.mod
        self.stop_child(child)
        if reason_input_error is not None:
            msg, port, frame, etype, message = reason_input_error
            self.error(mod.id, port, msg, frame, etype, message)
            frame.outstanding -= 1
            self.backlog -= 1
        mod.child = None
        mod.waiting.extend(child.inflight)
        mod.waiting.extend(child.pending)
        delay = 0.0
        if exited is not None:
            delay = mod.exited(time.monotonic())
            if delay is None:
                self.give_up(
                    mod,
                    f"the module's process exited {len(mod.exits)} times within {mod.policy[1]:g} s; last: {exited}",
                )
                return
        mod.restarts += 1
        self.frame(
            {
                "op": "restart",
                "module": mod.id,
                "restarts": mod.restarts,
                "reason": exited or "killed: no answer within its timeout",
                "delay": delay,
                **self.exit_fields(mod, exited),
            }
        )
        if delay > 0:
            mod.restart_at = time.monotonic() + delay
            return
        self.respawn(mod)

    @staticmethod
    def exit_fields(mod, exited):
        """``code`` and ``stderr`` (tail) of the child that just exited, for a frame."""
        if not exited or mod.last_exit is None:
            return {}
        code, tail = mod.last_exit
        return {"code": code, "stderr": tail}

    def respawn(self, mod):
        """Start the module's next child; the inputs held for it go first."""
        mod.restart_at = None
        try:
            new = self.start_child(mod)
        except OSError as exc:
            self.give_up(mod, f"cannot restart {mod.command!r}: {exc.strerror or exc}")
            return
        new.pending.extend(mod.waiting)
        mod.waiting.clear()
        self.pump(new)

    def give_up(self, mod, reason):
        """The module's child crash-loops: no new child; what waits for it is an error."""
        mod.failed = reason
        mod.restart_at = None
        self.log(mod.id, "error", f"{reason}; not restarted")
        self.frame(
            {
                "op": "failed",
                "module": mod.id,
                "error": {"type": "CrashLoop", "message": reason, "traceback": ""},
                **self.exit_fields(mod, True),
            }
        )
        for msg, port, frame in mod.waiting:
            self.error(mod.id, port, msg, frame, "CrashLoop", reason)
            frame.outstanding -= 1
            self.backlog -= 1
        mod.waiting.clear()

    def check_restarts(self):
        """Start the children whose backoff is over; the seconds until the next one."""
        now = time.monotonic()
        nearest = None
        for mod in list(self.modules.values()):
            if mod.restart_at is None:
                continue
            left = mod.restart_at - now
            if left <= 0:
                self.respawn(mod)
            else:
                nearest = left if nearest is None else min(nearest, left)
        return nearest

    def submit(self, mod_id, port, msg, frame):
        mod = self.modules.get(mod_id)
        if mod is not None and mod.failed is not None:
            self.error(mod_id, port, msg, frame, "CrashLoop", mod.failed)
            return
        if mod is None or (mod.child is None and mod.restart_at is None):
            self.error(
                mod_id,
                port,
                msg,
                frame,
                "UnknownModule",
                f"no module {mod_id!r} is loaded in this host",
            )
            return
        frame.outstanding += 1
        self.backlog += 1
        if mod.child is None:  # backing off: the next child gets it
            mod.waiting.append((msg, port, frame))
            return
        mod.child.pending.append((msg, port, frame))
        self.pump(mod.child)

    def pump(self, child):
        """Move pending inputs into the child's stdin buffer, up to INFLIGHT."""
        moved = False
        while child.pending and len(child.inflight) < INFLIGHT:
            item = child.pending.popleft()
            if not child.inflight:
                child.since = time.monotonic()
            child.inflight.append(item)
            try:
                child.write_buf += dumps(item[0]) + b"\n"
            except TypeError:
                child.write_buf += b"null\n"
            moved = True
        if moved or child.write_buf:
            self.write_child(child)

    def write_child(self, child):
        fd = child.proc.stdin.fileno() if not child.proc.stdin.closed else -1
        if fd < 0:
            return
        while child.write_buf:
            try:
                n = os.write(fd, child.write_buf)
            except BlockingIOError:
                break
            except BrokenPipeError:
                child.write_buf.clear()
                return  # its stdout EOF tells the story
            del child.write_buf[:n]
        key = self.sel.get_map().get(fd)
        if child.write_buf and key is None:
            self.sel.register(fd, selectors.EVENT_WRITE, ("in", child))
        elif not child.write_buf and key is not None:
            self.sel.unregister(fd)

    def on_answers(self, child, data):
        buf = child.buf_out + data
        end = buf.rfind(b"\n")
        if end < 0:
            child.buf_out = buf
            return
        child.buf_out = buf[end + 1 :]
        mod = child.mod
        for line in buf[:end].split(b"\n"):
            if not child.inflight:
                self.log(
                    mod.id, "warning", f"output line with no input waiting, ignored: {line[:200]!r}"
                )
                continue
            msg, port, frame = child.inflight.popleft()
            child.since = time.monotonic()
            try:
                value = loads(line)
            except DecodeError:
                self.error(
                    mod.id,
                    port,
                    msg,
                    frame,
                    "InvalidOutput",
                    f"the module wrote a line that is not JSON: {line[:200]!r}",
                )
            else:
                if value is not None:
                    self.route(mod.id, "out", value, frame)
            frame.outstanding -= 1
            self.backlog -= 1
        self.pump(child)

    def route(self, mod_id, port, value, frame):
        table = frame.routes.get(mod_id)
        route = table.get(port) if table is not None else None
        if route is None or route[1]:
            key = (mod_id, port)
            lst = self.emits.get(key)
            if lst is None:
                self.emits[key] = [value]
            else:
                lst.append(value)
        if route is not None:
            counts = self.local_counts
            for dst, dst_port in route[0]:
                key = (mod_id, port, dst, dst_port)
                counts[key] = counts.get(key, 0) + 1
                self.submit(dst, dst_port, value, frame)

    def on_stderr(self, child, data):
        buf = child.buf_err + data
        *lines, child.buf_err = buf.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            child.last_err = text
            child.err_tail.append(text)
            self.log(child.mod.id, "info", text)

    def on_child_exit(self, child):
        code = child.proc.wait()
        self.drain_stderr(child)
        if child.buf_err:
            self.on_stderr(child, b"\n")
        detail = f"exited with status {code}" + (
            f"; last stderr line: {child.last_err}" if child.last_err else ""
        )
        child.mod.last_exit = (code, "\n".join(child.err_tail)[-STDERR_TAIL_CHARS:])
        if child.inflight:
            msg, port, frame = child.inflight.popleft()
            self.restart(
                child,
                (
                    msg,
                    port,
                    frame,
                    "ChildExited",
                    f"the module's process {detail} while handling this input",
                ),
                exited=detail,
            )
        else:
            self.log(child.mod.id, "warning", f"the module's process {detail}; restarting it")
            self.restart(child, None, exited=detail)

    def drain_stderr(self, child):
        """What the dead child wrote to stderr and the loop has not read yet."""
        fd = child.proc.stderr.fileno()
        while True:
            try:
                data = read_some(fd)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.on_stderr(child, data)

    def check_timeouts(self):
        now = time.monotonic()
        nearest = None
        for mod in list(self.modules.values()):
            child = mod.child
            if child is None or not child.inflight:
                continue
            left = child.since + mod.timeout - now
            if left <= 0:
                msg, port, frame = child.inflight.popleft()
                self.restart(
                    child,
                    (
                        msg,
                        port,
                        frame,
                        "Timeout",
                        f"no answer within the module's timeout of {mod.timeout:g} s; process killed and restarted",
                    ),
                )
                continue
            nearest = left if nearest is None else min(nearest, left)
        return nearest

    # ------------------------------------------------------------------ ops

    def op_load(self, f):
        mid = f.get("module")
        if not isinstance(mid, str):
            raise ProtocolViolation("'load' needs a string 'module'")
        command = f.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            self.frame(
                {
                    "op": "loaded",
                    "module": mid,
                    "error": {
                        "type": "LoadError",
                        "message": "exec modules need 'command': a non-empty list of strings",
                        "traceback": "",
                    },
                }
            )
            return
        timeout = f.get("timeout")
        mod = Module(
            mid,
            command,
            f.get("cwd"),
            f.get("env"),
            float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else 30.0,
            _policy(f.get("restart")),
        )
        try:
            child = self.start_child(mod)
        except OSError as exc:
            self.frame(
                {
                    "op": "loaded",
                    "module": mid,
                    "error": {
                        "type": "LoadError",
                        "message": f"cannot start {command[0]!r}: {exc.strerror or exc}",
                        "traceback": "",
                    },
                }
            )
            return
        old = self.modules.get(mid)
        self.modules[mid] = mod
        if old is not None:
            child.pending.extend(old.waiting)  # held while the old one backed off
            if old.child is not None:
                child.pending.extend(old.child.inflight)
                child.pending.extend(old.child.pending)
                self.stop_child(old.child, grace=0.5)
            self.pump(child)
        self.frame({"op": "loaded", "module": mid})

    def op_unload(self, f):
        mid = f.get("module")
        if not isinstance(mid, str):
            raise ProtocolViolation("'unload' needs a string 'module'")
        mod = self.modules.pop(mid, None)
        if mod is not None:
            child = mod.child
            for msg, port, frame in (
                *mod.waiting,
                *((*child.inflight, *child.pending) if child else ()),
            ):
                self.error(
                    mid, port, msg, frame, "UnknownModule", "module unloaded before answering"
                )
                frame.outstanding -= 1
                self.backlog -= 1
            mod.waiting.clear()
            if child is not None:
                self.stop_child(child, grace=0.5)
        self.frame({"op": "unloaded", "module": mid, "state": None})

    def op_route(self, f):
        routes = f.get("routes")
        if not isinstance(routes, dict):
            raise ProtocolViolation("'route' needs an object 'routes'")
        table = {}
        for mid, ports in routes.items():
            if not isinstance(ports, dict):
                raise ProtocolViolation(f"'route' routes[{mid!r}] is not an object")
            table[mid] = {
                port: (
                    [(str(d[0]), str(d[1])) for d in (spec.get("local") or ())],
                    bool(spec.get("external")),
                )
                for port, spec in ports.items()
                if isinstance(spec, dict)
            }
        self.routes = table

    def op_deliver(self, f):
        seq, mid, port, msgs = f.get("seq"), f.get("module"), f.get("port"), f.get("msgs")
        if (
            not isinstance(seq, int)
            or not isinstance(mid, str)
            or not isinstance(port, str)
            or not isinstance(msgs, list)
        ):
            raise ProtocolViolation(
                "'deliver' needs seq (integer), module, port (strings) and msgs (array)"
            )
        frame = Frame(seq, self.routes)
        self.frames.append(frame)
        for msg in msgs:
            self.submit(mid, port, msg, frame)

    def handle_line(self, line):
        try:
            f = loads(line)
        except DecodeError as exc:
            raise ProtocolViolation(f"line is not JSON ({exc}): {line[:200]!r}") from None
        if not isinstance(f, dict) or not isinstance(f.get("op"), str):
            raise ProtocolViolation(
                f"frame is not a JSON object with a string 'op': {line[:200]!r}"
            )
        op = f["op"]
        if op == "deliver":
            self.op_deliver(f)
        elif op == "load":
            self.op_load(f)
        elif op == "route":
            self.op_route(f)
        elif op == "unload":
            self.op_unload(f)
        elif op == "ping":
            self.frame({"op": "pong", "id": f.get("id")})
        elif op == "shutdown":
            self.begin_stop()
        else:
            self.frame({"op": "unsupported", "ref": op})

    def begin_stop(self):
        self.stopping = True
        if self.reading:
            self.sel.unregister(self.rfd)
            self.reading = False

    # ------------------------------------------------------------------ loop

    def on_pipe(self):
        try:
            data = read_some(self.rfd)
        except BlockingIOError:
            return
        if not data:
            self.begin_stop()
            return
        buf = self.rbuf + data
        end = buf.rfind(b"\n")
        if end < 0:
            self.rbuf = buf
            return
        self.rbuf = buf[end + 1 :]
        for line in buf[:end].split(b"\n"):
            if line and not self.stopping:
                self.handle_line(line)

    def serve(self):
        self.write(
            dumps(
                {
                    "op": "hello",
                    "protocol": PROTOCOL,
                    "runtime": "exec",
                    "version": VERSION,
                    "pid": os.getpid(),
                    "features": ["raw", "counts", "watchdog"],
                }
            )
            + b"\n"
        )
        try:
            while True:
                if self.stopping and self.backlog <= 0:
                    break
                # Backpressure: stop reading new deliveries while children are saturated.
                want_read = not self.stopping and self.backlog < BACKLOG
                if want_read != self.reading and not self.stopping:
                    if want_read:
                        self.sel.register(self.rfd, selectors.EVENT_READ, ("pipe", None))
                    else:
                        self.sel.unregister(self.rfd)
                    self.reading = want_read
                timeout = self.check_timeouts()
                restart = self.check_restarts()
                if restart is not None:
                    timeout = restart if timeout is None else min(timeout, restart)
                for key, _mask in self.sel.select(timeout):
                    kind, child = key.data
                    if kind == "pipe":
                        self.on_pipe()
                        continue
                    if child.mod.child is not child:
                        continue  # replaced while this batch of events was being handled
                    if kind == "in":
                        self.write_child(child)
                    elif kind == "out":
                        try:
                            data = read_some(key.fd)
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            if exc.errno != errno.EBADF:
                                raise
                            continue
                        if data:
                            self.on_answers(child, data)
                        else:
                            self.on_child_exit(child)
                    elif kind == "err":
                        try:
                            data = read_some(key.fd)
                        except (BlockingIOError, OSError):
                            continue
                        if data:
                            self.on_stderr(child, data)
                        else:
                            try:
                                self.sel.unregister(key.fd)
                            except (KeyError, ValueError):
                                pass
                self.flush()
        except ProtocolViolation as exc:
            self.flush()
            self.write(dumps({"op": "fatal", "error": str(exc)}) + b"\n")
            sys.stderr.write(f"fifoflow exec host: protocol error: {exc}\n")
            self.stop_all()
            return 3
        self.flush()
        self.stop_all()
        self.write(b'{"op":"bye"}\n')
        return 0

    def stop_all(self):
        for mod in self.modules.values():
            if mod.child is not None:
                self.stop_child(mod.child, grace=1.0)
                mod.child = None


def watch_runner(interval=1.0):
    """Exit when the runner that started this host is gone (PROTOCOL.md section 1): a
    killed runner never opens our FIFOs or reads them again, and a host blocked in
    ``open`` or in a handler would otherwise live on. The runner is the parent we started
    with, and the process named by FIFOFLOW_RUNNER_PID."""
    parent = os.getppid()
    named = os.environ.get("FIFOFLOW_RUNNER_PID", "")
    runner = int(named) if named.isdigit() else None

    def gone():
        if os.getppid() != parent:
            return True
        if runner is None:
            return False
        try:
            os.kill(runner, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def watch():
        while not gone():
            time.sleep(interval)
        os._exit(3)

    threading.Thread(target=watch, name="runner-watch", daemon=True).start()


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: host.py <to-runtime fifo> <from-runtime fifo>\n")
        return 2
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    watch_runner()
    rfd = os.open(argv[1], os.O_RDONLY)  # read end first (PROTOCOL.md section 1)
    wfd = os.open(argv[2], os.O_WRONLY)
    return Host(rfd, wfd).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
