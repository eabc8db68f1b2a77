#!/usr/bin/env python3
"""fifoflow python runtime host, protocol v1 (see runtimes/PROTOCOL.md).

Started as ``python -u host.py <to-runtime fifo> <from-runtime fifo>``. Standalone on
purpose: standard library only (orjson when importable), no fifoflow import, so it runs
unchanged inside any virtualenv a module's requirements need. That is also why it is one
file of ~600 lines: a host cannot import helpers from a package it may not have.

Shape: one thread reads the pipe, handles every complete line, and writes all frames the
batch produced in one write. Deliveries flow through same-runtime wires as lists of native
objects, breadth first (a work queue of (module, port, msgs)), so a frame of a thousand
messages crosses a chain of modules as a thousand plain calls per module. A watchdog
thread reports a handler that runs past its module's timeout (``hung``).

Resource handling: the two FIFO fds live for the process; the asyncio loop for async
handlers is created on first use. Error handling: user exceptions become ``error``
frames; a protocol error becomes ``fatal`` and exit status 3.
"""

import asyncio
import errno
import inspect
import linecache
import os
import select
import sys
import threading
import time
import traceback
from collections import deque

PROTOCOL = 1
VERSION = "1.0.0"
READ_SIZE = 1 << 20
#: messages handed over by ``deliver`` frames after which the host handles them and
#: writes what they produced (with their ``done``) before it reads on through what it
#: read: a read of many frames is then a pipeline, not one batch (the runner routes the
#: first frames' outputs and refills the window while the host works on the rest)
FLUSH_MESSAGES = 1000
MAX_LINE = 64 * 1024 * 1024

try:
    import orjson

    _OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def dumps(obj):
        return orjson.dumps(obj, option=_OPTS)

    loads = orjson.loads
    DecodeError = orjson.JSONDecodeError
    # The host runs in users' environments, where orjson may be any version (or
    # broken): use it only if it round-trips what the protocol needs.
    if loads(dumps({"k": [1, 2.5, "é", None]})) != {"k": [1, 2.5, "é", None]}:
        raise ImportError("orjson does not round-trip")
except (ImportError, AttributeError, TypeError, ValueError):  # orjson absent or unusable
    import json

    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def dumps(obj):
        # TypeError for anything JSON cannot carry, as orjson says it: NaN and Infinity
        # (which the runner would not parse), cycles, too deep
        try:
            return _encoder.encode(obj).encode("utf-8")
        except (ValueError, RecursionError) as exc:
            raise TypeError(str(exc)) from None

    def loads(data):
        return json.loads(data)

    DecodeError = ValueError


class ProtocolViolation(Exception):
    pass


def _json_copy(value):
    """A deep copy of a JSON value (the value itself if it is not JSON)."""
    try:
        return loads(dumps(value))
    except (TypeError, ValueError):
        return value


class Ctx:
    """What user code sees as ``ctx``."""

    __slots__ = ("_mod", "config", "module", "port", "state")

    def __init__(self, mod, module, config, state):
        self._mod = mod
        self.module = module
        self.config = config
        self.state = state
        self.port = None

    def emit(self, port, msg):
        outs = self._mod.outs
        lst = outs.get(port)
        if lst is None:
            outs[port] = [msg]
        else:
            lst.append(msg)

    def log(self, *parts):
        self._mod.host.out_frames.append(
            dumps(
                {
                    "op": "log",
                    "module": self.module,
                    "level": "info",
                    "text": " ".join(str(p) for p in parts),
                }
            )
            + b"\n"
        )


class Module:
    __slots__ = ("ctx", "handle", "host", "id", "is_async", "outs", "sent_state", "timeout")

    def __init__(self, host, mid):
        self.host = host
        self.id = mid
        self.outs = {}
        self.handle = None
        self.is_async = False
        self.ctx = None
        self.timeout = 30.0
        self.sent_state = b"{}"


class Progress:
    """Shared with the watchdog: what the main thread is handling right now.

    ``it`` is the iterator the main thread takes the messages from: the message being
    handled is the one it gave last (:meth:`index`). Reading its position costs the
    main thread nothing per message, where storing an index would."""

    __slots__ = ("direct", "gen", "it", "mod", "msgs", "port", "seq")

    def __init__(self):
        self.mod = None
        self.gen = 0
        self.it = iter(())
        self.msgs = None
        self.port = None
        self.seq = 0
        self.direct = False

    def index(self):
        """The position in ``msgs`` of the message being handled (0 before the first)."""
        return _given(self.it, self.msgs) - 1 if self.msgs else 0


def _given(it, msgs):
    """How many items the list iterator ``it`` (over ``msgs``) has handed out."""
    state = it.__reduce__()
    # (iter, (list,), position) while running; (iter, ((),)) once exhausted
    return state[2] if len(state) > 2 else len(msgs)


class Host:
    def __init__(self, rfd, wfd):
        self.rfd = rfd
        self.wfd = wfd
        self.modules = {}
        self.routes = {}
        self.out_frames = []
        self.write_lock = threading.Lock()
        self.progress = Progress()
        self.loop = None
        self.last_seq = None
        self.ran = set()
        self.work = deque()
        #: messages of the deliver frames read since the last flush
        self.unflushed = 0
        # direct channels (PROTOCOL.md section 11). Sending: channel -> write fd, the
        # frames of this batch per channel, the channels given up, the frame counter.
        self.out_ch = {}
        self.out_frames_ch = {}
        self.dead_ch = set()
        self.dcount = 0
        #: frames (runner deliveries and channel lines) taken in from the current read:
        #: while it is at most one, a channel's line is written as soon as it is made
        self.frames_in = 0
        # Receiving: read fd -> [channel, partial line], channel -> read fd, the highest
        # d handled per channel this batch (acknowledged in `done`), and per (channel,
        # module, port) the highest d handled for the life of the host (skips copies).
        self.in_fds = {}
        self.in_ch = {}
        self.direct_acks = {}
        self.last_d = {}
        self.seq_handled = 0
        self.poller = None
        self.ch_into = None
        # channels cut by the runner: confirmed after the next done
        self.cut_echo = []
        #: (src, port, dst, dst port) -> messages delivered inside this host since the
        #: last done (reported in its "local", PROTOCOL.md section 12)
        self.local_counts = {}

    # ------------------------------------------------------------------ output

    def write(self, data):
        view = memoryview(data)
        with self.write_lock:
            while view:
                view = view[os.write(self.wfd, view) :]

    def frame(self, obj):
        self.out_frames.append(dumps(obj) + b"\n")

    def flush_direct(self):
        """Write this batch's frames to each direct channel: one write per channel."""
        for ch, chunks in self.out_frames_ch.items():
            self.write_channel(ch, b"".join(chunks))
        self.out_frames_ch = {}

    def write_channel(self, ch, data):
        """One non-blocking write of ``data`` to channel ``ch``. A channel that does not
        take all of it at once is given up for good, and the runner told so before
        anything else of this batch (it has the copies): False then."""
        fd = self.out_ch.get(ch)
        if fd is None:
            return False
        try:
            written = os.write(fd, data)
        except OSError:
            written = -1
        if written == len(data):
            return True
        self.give_up(ch)
        self.out_frames.insert(0, b'{"op":"cut","ch":' + dumps(ch) + b"}\n")
        return False

    def give_up(self, ch):
        fd = self.out_ch.pop(ch, None)
        self.dead_ch.add(ch)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def flush(self, final=False):
        if self.out_frames_ch:
            self.flush_direct()
        frames = self.out_frames
        mods = self.modules.values() if final else self.ran
        for mod in mods:
            try:
                data = dumps(mod.ctx.state)
            except TypeError as exc:
                # an error of the module (its state cannot be kept), not just a log line
                self.error_frame(
                    mod.id,
                    None,
                    None,
                    self.progress.seq,
                    "TypeError",
                    f"ctx.state is not JSON-serializable, snapshot skipped: {exc}",
                    "",
                )
                continue
            if data != mod.sent_state:
                mod.sent_state = data
                frames.append(
                    b'{"op":"state","module":' + dumps(mod.id) + b',"state":' + data + b"}\n"
                )
        self.ran = set()
        self.unflushed = 0
        local = self.local_counts
        if self.direct_acks or local:
            if self.last_seq is not None:
                self.seq_handled = self.last_seq
            done = b'{"op":"done","seq":%d' % self.seq_handled
            if self.direct_acks:
                done += b',"direct":' + dumps(self.direct_acks)
                self.direct_acks = {}
            if local:
                done += b',"local":' + dumps([[*k, n] for k, n in local.items()])
                self.local_counts = {}
            frames.append(done + b"}\n")
            self.last_seq = None
        elif self.last_seq is not None:
            self.seq_handled = self.last_seq
            frames.append(b'{"op":"done","seq":%d}\n' % self.last_seq)
            self.last_seq = None
        if self.cut_echo:
            # after the done that acknowledges the last frames handled from them
            frames.extend(b'{"op":"cut","ch":' + dumps(ch) + b"}\n" for ch in self.cut_echo)
            self.cut_echo = []
        if frames:
            self.out_frames = []
            self.write(b"".join(frames))

    def emit_direct(self, mod, port, msgs, direct, emit_head):
        """An emit whose port has direct targets: its frame to each live channel, and the
        runner's copy with ``d`` and ``ch`` (PROTOCOL.md section 11). ``direct``: per
        channel, the bytes of its frame around ``d`` (made once, by the route op)."""
        try:
            data = dumps(msgs)
        except TypeError:
            self.emit_external(mod, port, msgs)  # the runner reports the bad values
            return
        out_ch = self.out_ch
        k = self.dcount + 1
        live = None
        # One frame in this read (a light load): its lines go out now, not after the
        # rest of the batch's bookkeeping; more frames: one write per channel at flush.
        now = self.frames_in <= 1
        for ch, head, tail in direct:
            if ch not in out_ch:
                continue
            line = b"%s%d%s%s}\n" % (head, k, tail, data)
            if now:
                if not self.write_channel(ch, line):
                    continue
            else:
                lst = self.out_frames_ch.get(ch)
                if lst is None:
                    self.out_frames_ch[ch] = [line]
                else:
                    lst.append(line)
            live = ch if live is None else live + " " + ch
        if live is None:
            self.emit_external(mod, port, msgs)
            return
        self.dcount = k
        self.out_frames.append(
            b'%s%d,"d":%d,"ch":%s,"msgs":%s}\n' % (emit_head, len(msgs), k, dumps(live), data)
        )

    def emit_external(self, mod, port, msgs):
        try:
            data = dumps(
                {"op": "emit", "module": mod.id, "port": port, "n": len(msgs), "msgs": msgs}
            )
        except TypeError:
            good = []
            for msg in msgs:
                try:
                    dumps(msg)
                    good.append(msg)
                except TypeError as exc:
                    self.error_frame(
                        mod.id,
                        port,
                        repr(msg),
                        self.progress.seq,
                        "TypeError",
                        f"emitted message is not JSON-serializable: {exc}",
                        "",
                    )
            if not good:
                return
            data = dumps(
                {"op": "emit", "module": mod.id, "port": port, "n": len(good), "msgs": good}
            )
        self.out_frames.append(data + b"\n")

    def error_frame(self, mid, port, msg, seq, etype, message, tb):
        try:
            self.frame(
                {
                    "op": "error",
                    "module": mid,
                    "port": port,
                    "msg": msg,
                    "seq": seq,
                    "error": {"type": etype, "message": message, "traceback": tb},
                }
            )
        except TypeError:
            self.frame(
                {
                    "op": "error",
                    "module": mid,
                    "port": port,
                    "msg": repr(msg),
                    "seq": seq,
                    "error": {"type": etype, "message": message, "traceback": tb},
                }
            )

    # ------------------------------------------------------------------ delivery

    def run_async(self, coro):
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(coro)

    def run_module(self, mod, port, msgs, seq, direct):
        """Hand ``msgs`` to ``mod`` one by one; route what it emits."""
        ctx = mod.ctx
        ctx.port = port
        outs = mod.outs
        out = outs.get("out")
        if out is None:
            out = outs["out"] = []
        append = out.append
        handle = mod.handle
        p = self.progress
        p.msgs = msgs
        p.port = port
        p.seq = seq
        p.direct = direct
        p.gen += 1
        # One iterator for the whole frame: after a failing message the loop goes on
        # with the next one; the watchdog reads the position from it (Progress.index).
        it = p.it = iter(msgs)
        p.mod = mod
        while True:
            try:
                if mod.is_async:
                    run_async = self.run_async
                    for msg in it:
                        r = run_async(handle(msg, ctx))
                        if r is not None:
                            append(r)
                else:
                    for msg in it:
                        r = handle(msg, ctx)
                        if r is not None:
                            append(r)
                break
            except (Exception, SystemExit) as exc:
                tb = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)
                i = _given(it, msgs) - 1
                self.error_frame(
                    mod.id, port, msgs[i], seq, type(exc).__name__, str(exc), "".join(tb)
                )
        p.mod = None
        self.ran.add(mod)
        mod.outs = {}
        self.route_outputs(mod, outs, seq)

    def route_outputs(self, mod, outs, seq):
        table = self.routes.get(mod.id)
        for port, lst in outs.items():
            if not lst:
                continue
            route = table.get(port) if table is not None else None
            if route is None:
                self.emit_external(mod, port, lst)
                continue
            local, external, direct = route
            if local:
                counts = self.local_counts
                n = len(lst)
                for dst_mod, dst_port in local:
                    self.work.append((dst_mod, dst_port, lst, seq, False))
                    key = (mod.id, port, dst_mod, dst_port)
                    counts[key] = counts.get(key, 0) + n
            if direct:
                self.emit_direct(mod, port, lst, direct[0], direct[1])
            elif external:
                self.emit_external(mod, port, lst)

    def drain(self):
        work = self.work
        modules = self.modules
        while work:
            mid, port, msgs, seq, direct = work.popleft()
            mod = modules.get(mid)
            if mod is None:
                for msg in msgs:
                    self.error_frame(
                        mid,
                        port,
                        msg,
                        seq,
                        "UnknownModule",
                        f"no module {mid!r} is loaded in this host",
                        "",
                    )
                continue
            self.run_module(mod, port, msgs, seq, direct)

    # ------------------------------------------------------------------ ops

    def op_deliver(self, f):
        seq = f.get("seq")
        mid = f.get("module")
        port = f.get("port")
        msgs = f.get("msgs")
        if (
            not isinstance(seq, int)
            or not isinstance(mid, str)
            or not isinstance(port, str)
            or not isinstance(msgs, list)
        ):
            raise ProtocolViolation(
                "'deliver' needs seq (integer), module, port (strings) and msgs (array)"
            )
        self.last_seq = seq
        self.unflushed += len(msgs)
        self.frames_in += 1
        ch = f.get("ch")
        if ch is not None:
            # the runner's copy of a direct channel's frame: skip it if handled already
            d = f.get("d")
            if not isinstance(d, int):
                raise ProtocolViolation("'deliver' with 'ch' needs an integer 'd'")
            key = (ch, mid, port)
            if d <= self.last_d.get(key, 0):
                return
            self.last_d[key] = d
        self.work.append((mid, port, msgs, seq, True))

    def op_direct(self, ch, f):
        """A frame read from direct channel ``ch``."""
        d = f.get("d")
        mid = f.get("module")
        port = f.get("port")
        msgs = f.get("msgs")
        also = f.get("also") or ()
        if (
            f.get("op") != "deliver"
            or f.get("ch") != ch
            or not isinstance(d, int)
            or not isinstance(mid, str)
            or not isinstance(port, str)
            or not isinstance(msgs, list)
            or not isinstance(also, (list, tuple))
        ):
            raise ProtocolViolation(
                f"direct channel {ch!r}: a frame is not a 'deliver' with ch, d, module,"
                " port and msgs"
            )
        last = self.last_d
        for target in ((mid, port), *also):
            m, p = str(target[0]), str(target[1])
            last[(ch, m, p)] = d
            # not a runner delivery: no seq of its own, and a hang names no index
            self.work.append((m, p, msgs, 0, False))
        self.direct_acks[ch] = d
        self.unflushed += len(msgs)
        self.frames_in += 1

    def op_listen(self, f):
        ch, path = f.get("ch"), f.get("path")
        if not isinstance(ch, str) or not isinstance(path, str):
            raise ProtocolViolation("'listen' needs strings 'ch' and 'path'")
        if ch in self.in_ch:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return  # already cut by the runner; its copies come on the runner pipe
        self.in_ch[ch] = fd
        self.in_fds[fd] = [ch, b""]
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(self.rfd, select.POLLIN)
        self.poller.register(fd, select.POLLIN)

    def op_cut(self, f):
        ch = f.get("ch")
        if not isinstance(ch, str):
            raise ProtocolViolation("'cut' needs a string 'ch'")
        self.cut_echo.append(ch)
        fd = self.in_ch.pop(ch, None)
        if fd is None:
            return
        # Whatever was read of it is handled (control ops drain first); a partial line
        # is dropped: the runner delivers its copy.
        del self.in_fds[fd]
        self.poller.unregister(fd)
        os.close(fd)

    def op_load(self, f):
        mid = f.get("module")
        if not isinstance(mid, str):
            raise ProtocolViolation("'load' needs a string 'module'")
        code = f.get("code")
        filename = f.get("filename") or mid
        config = f.get("config") or {}
        state = f.get("state")
        timeout = f.get("timeout")
        if not isinstance(code, str):
            self.frame(
                {
                    "op": "loaded",
                    "module": mid,
                    "error": {
                        "type": "LoadError",
                        "message": "'load' carries no code",
                        "traceback": "",
                    },
                }
            )
            return
        old = self.modules.get(mid)
        mod = Module(self, mid)
        if isinstance(timeout, (int, float)) and timeout > 0:
            mod.timeout = float(timeout)
        try:
            linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
            namespace = {"__name__": "fifoflow_module", "__file__": filename}
            exec(compile(code, filename, "exec"), namespace)
            handle = namespace.get("handle")
            if not callable(handle):
                raise LoadProblem("module defines no handle(msg, ctx) function")
            mod.handle = handle
            mod.is_async = inspect.iscoroutinefunction(handle)
            if state is None:
                # A replacement works on a copy: if it fails, the old version is untouched.
                state = _json_copy(old.ctx.state) if old is not None else {}
            mod.ctx = Ctx(mod, mid, config, state)
            migrate = namespace.get("migrate")
            if old is not None and callable(migrate) and f.get("migrate", True) is not False:
                new_state = migrate(_json_copy(old.ctx.state), mod.ctx)
                if inspect.isawaitable(new_state):
                    new_state = self.run_async(new_state)
                if new_state is not None:
                    mod.ctx.state = new_state
            init = namespace.get("init")
            if callable(init):
                result = init(mod.ctx)
                if inspect.isawaitable(result):
                    self.run_async(result)
        except LoadProblem as exc:
            self.frame(
                {
                    "op": "loaded",
                    "module": mid,
                    "error": {"type": "LoadError", "message": str(exc), "traceback": ""},
                }
            )
            return
        except Exception as exc:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)
            self.frame(
                {
                    "op": "loaded",
                    "module": mid,
                    "error": {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "traceback": "".join(tb),
                    },
                }
            )
            return
        # The runner learns the state a load produced (migrate, init, a kept state) before
        # `loaded`, unless it is the state the runner sent.
        given = f.get("state")
        try:
            data = dumps(mod.ctx.state)
            baseline = dumps(given) if given is not None else (None if old is not None else b"{}")
        except TypeError:
            data = baseline = b""
        mod.sent_state = data
        if data != baseline:
            self.out_frames.append(
                b'{"op":"state","module":' + dumps(mid) + b',"state":' + data + b"}\n"
            )
        # Keep emits made by init; they leave with the next flush.
        init_outs = mod.outs
        mod.outs = {}
        self.modules[mid] = mod
        self.frame({"op": "loaded", "module": mid})
        if any(init_outs.values()):
            self.route_outputs(mod, init_outs, 0)
            self.drain()

    def op_unload(self, f):
        mid = f.get("module")
        if not isinstance(mid, str):
            raise ProtocolViolation("'unload' needs a string 'module'")
        mod = self.modules.pop(mid, None)
        state = mod.ctx.state if mod is not None else None
        try:
            self.frame({"op": "unloaded", "module": mid, "state": state})
        except TypeError:
            self.frame({"op": "unloaded", "module": mid, "state": None})

    def op_route(self, f):
        routes = f.get("routes")
        if not isinstance(routes, dict):
            raise ProtocolViolation("'route' needs an object 'routes'")
        table = {}
        for mid, ports in routes.items():
            if not isinstance(ports, dict):
                raise ProtocolViolation(f"'route' routes[{mid!r}] is not an object")
            entry = {}
            for port, spec in ports.items():
                if not isinstance(spec, dict):
                    raise ProtocolViolation(f"'route' routes[{mid!r}][{port!r}] is not an object")
                local = [(str(d[0]), str(d[1])) for d in spec.get("local") or ()]
                by_ch = {}
                for d in spec.get("direct") or ():
                    by_ch.setdefault(str(d[0]), []).append([str(d[1]), str(d[2])])
                direct = None
                if by_ch:
                    # a channel's frame is head + d + tail + msgs + "}": all targets of
                    # the port on that channel in one line (module, port, then "also")
                    frames = []
                    for ch, targets in by_ch.items():
                        head = b'{"op":"deliver","ch":' + dumps(ch) + b',"d":'
                        tail = b',"module":' + dumps(targets[0][0]) + b',"port":'
                        tail += dumps(targets[0][1])
                        if len(targets) > 1:
                            tail += b',"also":' + dumps(targets[1:])
                        frames.append((ch, head, tail + b',"msgs":'))
                    emit_head = b'{"op":"emit","module":' + dumps(mid) + b',"port":'
                    direct = (frames, emit_head + dumps(port) + b',"n":')
                entry[port] = (local, bool(spec.get("external")), direct)
            table[mid] = entry
        channels = f.get("channels") or {}
        if not isinstance(channels, dict):
            raise ProtocolViolation("'route' field 'channels' is not an object")
        for ch in list(self.out_ch):
            if ch not in channels:
                self.give_up(ch)
        for ch, path in channels.items():
            if ch in self.out_ch or ch in self.dead_ch:
                continue
            try:
                self.out_ch[ch] = os.open(str(path), os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                self.dead_ch.add(ch)
                self.out_frames.append(b'{"op":"cut","ch":' + dumps(ch) + b"}\n")
        self.routes = table

    # ------------------------------------------------------------------ main loop

    def handle_line(self, line):
        try:
            f = loads(line)
        except DecodeError as exc:
            raise ProtocolViolation(f"line is not JSON ({exc}): {line[:200]!r}") from None
        if not isinstance(f, dict):
            raise ProtocolViolation(f"frame is not a JSON object: {line[:200]!r}")
        op = f.get("op")
        if op == "deliver":
            self.op_deliver(f)
            return True
        if not isinstance(op, str):
            raise ProtocolViolation(f"frame has no string 'op': {line[:200]!r}")
        # Control ops take effect between two messages: finish what came before.
        self.drain()
        if op == "load":
            self.op_load(f)
        elif op == "route":
            self.op_route(f)
        elif op == "unload":
            self.op_unload(f)
        elif op == "listen":
            self.op_listen(f)
        elif op == "cut":
            self.op_cut(f)
        elif op == "ping":
            self.frame({"op": "pong", "id": f.get("id")})
        elif op == "shutdown":
            return False
        else:
            self.frame({"op": "unsupported", "ref": op})
        return True

    def serve(self):
        # FIFOFLOW_NO_WATCHDOG=1 runs without the watchdog (tests the runner's fallback).
        watchdog = os.environ.get("FIFOFLOW_NO_WATCHDOG") != "1"
        self.write(
            dumps(
                {
                    "op": "hello",
                    "protocol": PROTOCOL,
                    "runtime": "python",
                    "version": VERSION,
                    "pid": os.getpid(),
                    "features": ["raw", "direct", "counts", "watchdog"]
                    if watchdog
                    else ["raw", "direct", "counts"],
                }
            )
            + b"\n"
        )
        if watchdog:
            threading.Thread(target=self.watchdog, name="fifoflow-watchdog", daemon=True).start()
        buf = b""
        rfd = self.rfd
        # Read into one buffer and copy out what came: os.read(fd, READ_SIZE) allocates
        # READ_SIZE bytes per call (an mmap above malloc's threshold) and shrinks them,
        # ~30 us per read, as much as handling a few hundred messages.
        into = bytearray(READ_SIZE)
        view = memoryview(into)
        while True:
            self.frames_in = 0
            if self.in_fds:
                # direct channels are read beside the runner pipe (channels first: the
                # latency path); the runner pipe is read only when it has data
                n = None
                for fd, _ in self.poller.poll():
                    if fd == rfd:
                        n = os.readv(rfd, (into,))
                    else:
                        try:
                            self.read_channel(fd)
                        except ProtocolViolation as exc:
                            return self.fatal(str(exc))
                if n is None:
                    try:
                        self.drain()
                    except ProtocolViolation as exc:
                        return self.fatal(str(exc))
                    self.flush()
                    continue
            else:
                n = os.readv(rfd, (into,))
            if not n:
                self.stop()
                return 0
            data = view[:n].tobytes()
            # Split what was read and join only the held partial line to the first
            # piece (no copy of the whole read into a buffer first).
            lines = data.split(b"\n")
            if buf:
                lines[0] = buf + lines[0]
            buf = lines.pop()
            if not lines:
                if len(buf) > MAX_LINE:
                    return self.fatal(f"line longer than {MAX_LINE} bytes")
                continue
            try:
                for line in lines:
                    if line and not self.handle_line(line):
                        self.stop()
                        return 0
                    if self.unflushed >= FLUSH_MESSAGES:
                        self.drain()
                        self.flush()
                self.drain()
            except ProtocolViolation as exc:
                return self.fatal(str(exc))
            self.flush()

    def read_channel(self, fd):
        entry = self.in_fds.get(fd)
        if entry is None:
            return
        if self.ch_into is None:
            # one buffer for every channel (read as the runner pipe is: serve())
            self.ch_into = bytearray(READ_SIZE)
        try:
            n = os.readv(fd, (self.ch_into,))
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            raise
        if not n:
            return
        data = bytes(memoryview(self.ch_into)[:n])
        ch, rest = entry
        buf = rest + data if rest else data
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                raise ProtocolViolation(f"direct channel {ch!r}: line longer than {MAX_LINE} bytes")
            entry[1] = buf
            return
        entry[1] = buf[end + 1 :]
        for line in buf[:end].split(b"\n"):
            if not line:
                continue
            try:
                f = loads(line)
            except DecodeError as exc:
                raise ProtocolViolation(
                    f"direct channel {ch!r}: line is not JSON ({exc}): {line[:200]!r}"
                ) from None
            if not isinstance(f, dict):
                raise ProtocolViolation(f"direct channel {ch!r}: frame is not a JSON object")
            self.op_direct(ch, f)

    def stop(self):
        self.drain()
        self.flush(final=True)
        self.write(b'{"op":"bye"}\n')

    def fatal(self, message):
        try:
            self.drain()
            self.flush()
        finally:
            self.write(dumps({"op": "fatal", "error": message}) + b"\n")
            sys.stderr.write(f"fifoflow python host: protocol error: {message}\n")
        return 3

    # ------------------------------------------------------------------ watchdog

    def watchdog(self):
        p = self.progress
        last = None
        since = 0.0
        reported = False
        while True:
            timeouts = [m.timeout for m in list(self.modules.values())] or [30.0]
            time.sleep(max(0.02, min(1.0, min(timeouts) / 5)))
            mod = p.mod
            if mod is None:
                last = None
                continue
            snap = (mod, p.gen, p.index())
            now = time.monotonic()
            if snap != last:
                last, since, reported = snap, now, False
                continue
            if reported or now - since < mod.timeout:
                continue
            reported = True
            msgs, i = p.msgs, snap[2]
            msg = msgs[i] if msgs is not None and 0 <= i < len(msgs) else None
            frame = {
                "op": "hung",
                "module": mod.id,
                "port": p.port,
                "msg": msg,
                "seq": p.seq,
                "index": i if p.direct else None,
                "elapsed": round(now - since, 3),
            }
            try:
                data = dumps(frame)
            except TypeError:
                frame["msg"] = repr(msg)
                data = dumps(frame)
            # The main thread holds the lock only while writing, never while in a handler.
            self.write(data + b"\n")


class LoadProblem(Exception):
    pass


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
    watch_runner()
    # Order matters (PROTOCOL.md section 1): read end first, then write end.
    rfd = os.open(argv[1], os.O_RDONLY)
    wfd = os.open(argv[2], os.O_WRONLY)
    return Host(rfd, wfd).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
