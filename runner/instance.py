"""A runtime instance: the modules of one flow that live in one runtime, and their host.

The instance is the unit of supervision. It keeps, outside the host process, everything
needed to rebuild it: each module's load frame, its last state snapshot, the route table,
and its :class:`~.queues.DeliveryQueues` (the deliveries not yet sent, and the window of
those sent but not yet acknowledged). When the host dies (exit, SIGKILL, garbage on its
pipe, a hung handler), :meth:`RuntimeInstance.run` starts a new one (``hosts.py``), loads
every module with its snapshot and sends the unacknowledged deliveries again, in order,
before anything new (PROTOCOL.md section 6). How long it backs off, when restarts are a
crash loop and what a hung handler costs are decided in ``faults.py``.

It also holds the conversation with the live host: the writer task, direct writes from
the routing task (:meth:`RuntimeInstance.kick`), the reader task (emits are routed,
``done`` empties the window), and the control frames of hot swap and the debugger.
(About 600 lines: the reader and writer share the host's state with the
supervisor; a second class reaching into this one's state would read worse.)

Resource handling: the host process, its FIFOs and its log pumps live inside
:meth:`run`; leaving it (stop, cancellation, error) kills and reaps the process group
and removes the FIFO directory.

Error handling: before ``task_status.started()`` a host that cannot start or a module
that fails to load raises (:class:`RuntimeStartError`, :class:`FlowLoadError`) to the
caller of ``nursery.start``. After it, nothing escapes: crashes are restarted, a crash
loop marks the instance failed and tells the flow.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
import trio

from .compiled import build_host
from .errors import FlowLoadError, FlowStateError, ProtocolError, RuntimeStartError, first
from .events import EventKind
from .faults import CrashWindow, deadline, hang_errors
from .framing import (
    COUNTS,
    RAW,
    RAW_EMIT,
    decode_frame,
    encode_frame,
    screen_frame,
    split_emit_head,
)
from .hosts import open_host
from .queues import DeliveryQueues
from .status import InstanceStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..runtimes.registry import RuntimeManifest
    from .config import RunnerConfig
    from .flowrun import FlowRun
    from .process import RuntimeProcess
    from .queues import Delivery

__all__ = ["RuntimeInstance"]


class _HostEnded(Exception):
    """The current host process is gone or must go; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RuntimeInstance:
    def __init__(
        self,
        flow: FlowRun,
        manifest: RuntimeManifest,
        config: RunnerConfig,
        *,
        environment: str | None = None,
        requirements: tuple[str, ...] = (),
    ) -> None:
        self.flow = flow
        self.manifest = manifest
        self.config = config
        #: the environment this host runs in (None: the runtime's bare one)
        self.environment = environment
        self.requirements = requirements
        self._host_options: dict[str, Any] | None = None
        self.name = f"{flow.flow_id}/{environment or manifest.id}"
        self.modules: dict[str, dict[str, Any]] = {}
        self.states: dict[str, Any] = {}
        self.routes: dict[str, Any] = {}
        self.status = InstanceStatus.STOPPED
        self.process: RuntimeProcess | None = None
        #: the running host lists ``counts``: it reports what it delivers inside itself
        self.counts_in_host = False
        self.restarts = 0
        #: module -> restarts of its child process, as the host reports them (exec)
        self.child_restarts: dict[str, int] = {}
        #: module -> how its child process last exited: {"code", "stderr"} (exec; the
        #: host's ``restart``/``failed`` frames, PROTOCOL.md section 7)
        self.child_exits: dict[str, dict[str, Any]] = {}
        self.last_error: str | None = None
        self.logs: deque[dict[str, Any]] = deque(maxlen=config.keep_logs)

        #: what waits to be sent and what was sent unacknowledged (queues.py); it outlives
        #: every host, which is how a restarted host gets the window again
        self.queues = DeliveryQueues(config.queue_capacity, config.window, on_room=flow.notify)
        self._loaded: dict[str, trio.Event] = {}
        self._load_errors: dict[str, dict[str, Any]] = {}
        self._stopping = False
        self._last_rx = 0.0
        self._stopped = trio.Event()
        # Bytes a direct write (kick) could not push into the pipe; the writer sends them first.
        self._leftover: memoryview | None = None
        # Set and replaced whenever the window shrinks: drain() waits on it.
        self._acked = trio.Event()
        self._unloaded: dict[str, trio.Event] = {}
        #: compiled runtimes: the load frames whose code the host binary is built with
        #: (set by the flow's plan; a swap starts such a host before it loads modules)
        self.build_loads: dict[str, dict[str, Any]] = {}
        #: the last build of its binary: {"key", "cached", "seconds"} (compiled runtimes)
        self.last_build: dict[str, Any] | None = None
        #: a journaled flow's: emits and states the host reported for deliveries not yet
        #: acknowledged; recorded and routed together at the ``done`` (runner/JOURNAL.md)
        #: (module, port, msgs or the raw JSON array bytes, their count)
        self.held_emits: list[tuple[str, str, list[Any] | bytes, int]] = []
        self.held_states: dict[str, Any] = {}
        #: the current host is booted and not ending: direct channels may open to it
        self.direct_ready = False

    def statistics(self) -> dict[str, Any]:
        queues = self.queues.statistics()
        return {
            "runtime": self.manifest.id,
            "status": self.status,
            "pid": self.process.pid if self.process else None,
            "queued": queues.queued,
            "unacknowledged": queues.unacknowledged,
            "restarts": self.restarts,
            "child_restarts": {self.flow.short(m): n for m, n in self.child_restarts.items()},
            "last_error": self.last_error,
            "delivered": queues.delivered,
            "redelivered": queues.redelivered,
        }

    # ------------------------------------------------------------------ sending

    def kick(self) -> None:
        """Send what may go now straight from the calling task, without blocking.

        Saves a task switch per hop (latency). Whatever the pipe does not take at once
        is left for the writer task, which sends it before anything else."""
        proc = self.process
        if (
            proc is None
            or self._stopping
            or self.queues.paused
            or self._leftover is not None
            or proc._send_lock.locked()
        ):
            return
        if self.status is not InstanceStatus.RUNNING:
            return
        debugger = self.flow.debugger
        chunks = self.queues.take(debugger if debugger.active else None)
        if not chunks:
            return
        data = b"".join(chunks)
        try:
            written = proc.try_write(data)
        except OSError:
            written = 0  # the writer task meets the same error and ends the host
        if written < len(data):
            self._leftover = memoryview(data)[written:]
            self.flow.notify()

    def send_nowait(self, data: bytes) -> None:
        """Write a control frame (a direct channel's ``listen``, ``cut`` or ``route``)
        from the calling task without waiting, behind everything already taken for the
        host: what the pipe does not take now goes with the leftover, which the writer
        (or the next send) writes before anything else."""
        proc = self.process
        if proc is None:
            return
        if self._leftover is None and not proc._send_lock.locked():
            try:
                written = proc.try_write(data)
            except OSError:
                return  # the host is gone; its reader ends it
            if written == len(data):
                return
            self._leftover = memoryview(data)[written:]
        else:
            self._leftover = memoryview(bytes(self._leftover or b"") + data)
        self.flow.notify()

    # ------------------------------------------------------------------ lifecycle

    def set_modules(self, loads: dict[str, dict[str, Any]], routes: dict[str, Any]) -> None:
        self.modules = loads
        self.routes = routes

    def adopt(self, flow: FlowRun) -> None:
        """Serve ``flow`` from now on (a warm host lent to a run, ``runner/runs/pool.py``,
        and given back): routing, errors, logs and wake-ups go to it. Only between two
        uses: the host holds no module and nothing is queued or in flight. The counters
        and logs of the previous use are cleared."""
        previous, self.flow = self.flow, flow
        self.queues._on_room = flow.notify  # the queues wake the writers of their flow
        self.restarts = 0
        self.child_restarts = {}
        self.child_exits = {}
        self.last_error = None
        self.logs.clear()
        previous.notify()  # the writer waits on the previous flow's wake-up: move it over

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        crashes = CrashWindow(
            # A page that goes away and comes back is no crash loop (attached hosts).
            limit=None if self.manifest.attach else self.config.crash_limit,
            period=self.config.crash_period,
            backoff_max=self.config.restart_backoff_max,
        )
        self._stopping = False
        self._stopped = trio.Event()
        self.status = InstanceStatus.STARTING
        try:
            while True:
                try:
                    reason = await self._run_host(task_status if not started else None)
                    started = True
                    if self._stopping:
                        return
                except (RuntimeStartError, FlowLoadError) as exc:
                    if not started:
                        self.status = InstanceStatus.FAILED
                        self.last_error = str(exc)
                        raise
                    reason = str(exc)
                except _HostEnded as exc:
                    started = True
                    reason = exc.reason
                if self._stopping:
                    return
                self.last_error = reason
                self._log(None, "error", f"runtime host {self.name} ended: {reason}; restarting")
                self.flow.publish(
                    {
                        "kind": EventKind.RUNTIME,
                        "runtime": self.manifest.id,
                        "event": "restart",
                        "reason": reason,
                    }
                )
                delay = crashes.crashed(trio.current_time())
                if delay is None:
                    self.status = InstanceStatus.FAILED
                    message = (
                        f"runtime {self.manifest.id} of flow {self.flow.flow_id} crashed {crashes.count} times "
                        f"within {self.config.crash_period:g} s; last: {reason}"
                    )
                    self.last_error = message
                    self.flow.instance_failed(self, message)
                    return
                self.status = InstanceStatus.RESTARTING
                self.restarts += 1
                if delay:
                    await trio.sleep(delay)
        finally:
            if self.status is not InstanceStatus.FAILED:
                self.status = InstanceStatus.STOPPED
            self.process = None
            self._stopped.set()

    async def _run_host(self, task_status: trio.TaskStatus[None] | None) -> str:
        """One host process lifetime. Returns (or raises _HostEnded) when it is over."""
        # Everything sent but not acknowledged goes again, first, in order.
        # What the gone host reported without a ``done`` is made again by the redelivery.
        self.held_emits.clear()
        self.held_states.clear()
        for d, problem in self.queues.drop_unreadable():
            self.flow.settle(d.count)
            error = {
                "type": "InvalidMessage",
                "message": f"{d.count} message(s) for port {d.port!r} were dropped: {problem};"
                " the module that emitted them broke the raw layout (PROTOCOL.md section 10)",
                "traceback": "",
            }
            self.flow.record_error(d.module, d.port, None, error, runtime=self.manifest.id)
        if self.queues.requeue_unacked():
            self._acked.set()  # a drain() waiting on the old host learns it is gone
            self._acked = trio.Event()
        if self.environment is not None and self._host_options is None:
            env = await self.flow.build_environment(self)
            self._host_options = env.host_options()
        if self.manifest.build is not None:
            # a compiled runtime: the binary for this host's module set (cached by hash)
            self._host_options = await build_host(self)
        host = open_host(
            self.manifest, self.config, self.name, self._host_options or {}, self._on_host_output
        )
        try:
            async with host as proc:
                self.process = proc
                try:
                    await self._serve_host(proc, task_status)
                finally:
                    # its direct channels end with it (their held copies go to the
                    # queues), and none opens to it while it is being taken down
                    self.direct_ready = False
                    self.flow.direct.cut_instance(self, gone=True)
        except BaseExceptionGroup as group:
            raise _single(group) from None
        return "stopped"

    async def _serve_host(
        self, proc: RuntimeProcess, task_status: trio.TaskStatus[None] | None
    ) -> None:
        """The life of one host process, from its boot to its end."""
        # A frame cut short for the dead host is in the window and goes again whole.
        self._leftover = None
        self._last_rx = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, proc, nursery.cancel_scope)
            await self._boot(proc)
            self.status = InstanceStatus.RUNNING
            self.direct_ready = True
            if self.restarts:
                self.flow.publish(
                    {
                        "kind": EventKind.RUNTIME,
                        "runtime": self.manifest.id,
                        "event": "ready",
                    }
                )
            if task_status is not None:
                task_status.started()
            nursery.start_soon(self._writer, proc)
            nursery.start_soon(self._deadline, proc)

    async def _boot(self, proc: RuntimeProcess) -> None:
        await self._load_all(proc.send)

    async def _load_all(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send every module's load (with its state) and the route table in one write;
        wait for every ``loaded``. Raises RuntimeStartError / FlowLoadError."""
        self._loaded = {m: trio.Event() for m in self.modules}
        self._load_errors = {}
        frames = []
        for module, load in self.modules.items():
            frames.append(encode_frame({**load, "state": self.states.get(module)}))
        frames.append(encode_frame({"op": "route", "routes": self.routes}))
        await send(b"".join(frames))
        with trio.move_on_after(self.config.start_timeout) as timer:
            for event in self._loaded.values():
                await event.wait()
        if timer.cancelled_caught:
            missing = sorted(m for m, e in self._loaded.items() if not e.is_set())
            raise RuntimeStartError(f"{self.name}: no answer to load of {', '.join(missing)}")
        if self._load_errors:
            module, error = next(iter(self._load_errors.items()))
            raise FlowLoadError(module, error)

    async def load_all(self) -> None:
        """Load the modules of :meth:`set_modules` and their route table into the running
        host (a warm host given a run's modules), as a start does. Raises FlowStateError
        (no running host), RuntimeStartError (no answer), FlowLoadError."""
        proc = self.process
        if proc is None or self.status is not InstanceStatus.RUNNING:
            raise FlowStateError(f"runtime host {self.name} is {self.status}")
        try:
            await self._load_all(lambda data: self._send(proc, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise FlowStateError(f"runtime host {self.name} went away: {exc}") from None

    async def unload_all(self) -> bool:
        """Unload every module and clear the route table in the running host; forget
        their load frames and states. True when the host answered every unload in
        time (it holds nothing of them any more)."""
        modules = list(self.modules)
        self.set_modules({}, {})
        events = {m: trio.Event() for m in modules}
        self._unloaded.update(events)
        frames = [{"op": "unload", "module": m} for m in modules]
        try:
            await self.control([*frames, {"op": "route", "routes": {}}])
            with trio.move_on_after(self.config.start_timeout):
                for event in events.values():
                    await event.wait()
        except FlowStateError:
            pass
        for m in modules:
            self._unloaded.pop(m, None)
            self._loaded.pop(m, None)
        self.states.clear()
        return all(e.is_set() for e in events.values())

    async def stop(self) -> None:
        """Graceful stop: the host handles what it was sent, snapshots state, says bye."""
        self._stopping = True
        proc = self.process
        if proc is None:
            return
        with trio.move_on_after(self.config.stop_timeout):
            try:
                await self._send(proc, encode_frame({"op": "shutdown"}))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await self._stopped.wait()
        proc.kill()

    # ------------------------------------------------------------------ I/O tasks

    async def _send(self, proc: RuntimeProcess, data: bytes) -> None:
        """Write ``data`` now, outside the writer task. A frame a direct write (kick) left
        half-written is finished first, or the host would read garbage."""
        async with proc._send_lock:
            leftover, self._leftover = self._leftover, None
            await proc._writer.send_all(bytes(leftover or b"") + data)

    async def _writer(self, proc: RuntimeProcess) -> None:
        while True:
            progress = self.flow.progress_event()
            if self._stopping:
                return
            async with proc._send_lock:
                if self._stopping:
                    return
                if self._leftover is not None:
                    leftover, self._leftover = self._leftover, None
                    try:
                        await proc._writer.send_all(leftover)
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _HostEnded(f"pipe to host broke: {exc}") from None
                debugger = self.flow.debugger
                chunks = self.queues.take(debugger if debugger.active else None)
                if chunks:
                    try:
                        await proc._writer.send_all(b"".join(chunks))
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _HostEnded(f"pipe to host broke: {exc}") from None
                    continue
            await progress.wait()

    async def _reader(self, proc: RuntimeProcess, host_scope: trio.CancelScope) -> None:
        queues = self.queues
        # A host with the raw feature writes emit frames whose messages need no parsing.
        raw = RAW in (proc.hello.get("features") or ())
        self.counts_in_host = COUNTS in (proc.hello.get("features") or ())
        while True:
            flow = self.flow  # read again for every batch: a warm host changes flows (adopt)
            journaled = flow.journal is not None
            try:
                lines = await proc.receive_lines()
            except ProtocolError as exc:
                self._log(None, "error", f"protocol error from {self.name}: {exc}")
                raise _HostEnded(f"broken: {exc}") from None
            if lines is None:
                code = await proc.wait()
                if self._stopping:
                    host_scope.cancel()
                    return
                raise _HostEnded(f"host exited with status {code}")
            self._last_rx = trio.current_time()
            for line in lines:
                if not line:
                    continue
                if raw and line.startswith(RAW_EMIT):
                    # The hot path: route the body as the bytes the host wrote (a
                    # journaled flow's are held, as bytes, for the done's record).
                    try:
                        head, body = split_emit_head(line)
                    except ProtocolError as exc:
                        self._log(None, "error", f"protocol error from {self.name}: {exc}")
                        raise _HostEnded(f"broken: {exc}") from None
                    n = head["n"]
                    if n and journaled:
                        self.held_emits.append((head["module"], head["port"], body, n))
                    elif n:
                        ch = head.get("ch")
                        if ch is not None:
                            d = head.get("d")
                            await flow.route(
                                head["module"],
                                head["port"],
                                None,
                                body=body,
                                count=n,
                                ch=ch if isinstance(ch, str) else None,
                                d=d if isinstance(d, int) else 0,
                            )
                        else:
                            await flow.route(head["module"], head["port"], None, body=body, count=n)
                    continue
                try:
                    frame = decode_frame(line)
                except ProtocolError as exc:
                    self._log(None, "error", f"protocol error from {self.name}: {exc}")
                    raise _HostEnded(f"broken: {exc}") from None
                taken = screen_frame(frame, line)
                if taken:
                    self._bad_values(frame, taken)
                op = frame["op"]
                if op != "emit":
                    # What was routed so far goes out before the rest is handled (usually
                    # the done after the emits): the next host's wake-up does not wait.
                    flow.kick()
                if op == "emit":
                    if journaled:
                        msgs = frame["msgs"]
                        self.held_emits.append((frame["module"], frame["port"], msgs, len(msgs)))
                    else:
                        ch, d = frame.get("ch"), frame.get("d")
                        await flow.route(
                            frame["module"],
                            frame["port"],
                            frame["msgs"],
                            ch=ch if isinstance(ch, str) else None,
                            d=d if isinstance(d, int) else 0,
                        )
                elif op == "done":
                    local = frame.get("local")
                    if local is not None:
                        # statistics only: a bad one is reported and left out, the
                        # done still acknowledges (nothing is lost for a bad count)
                        counted = _in_host_counts(local)
                        if counted is None:
                            self._log(
                                None, "error",
                                f"protocol error from {self.name}: a done's local must be"
                                f" [[src, port, dst, port, n >= 0], ...], got"
                                f" {orjson.dumps(local).decode()[:200]}: counts left out",
                            )  # fmt: skip
                        else:
                            flow.count_in_host(counted)
                    direct = frame.get("direct")
                    if direct is not None:
                        flow.direct.acknowledged(self, direct)
                    consumed: dict[str, int] | None = {} if journaled else None
                    acked = queues.ack(frame["seq"], consumed)
                    if consumed is not None:
                        await flow.commit(self, consumed)
                    if acked:
                        flow.settle(acked)
                        self._acked.set()
                        self._acked = trio.Event()
                elif op == "state":
                    if frame["state"] is None:
                        pass
                    elif journaled:
                        self.held_states[frame["module"]] = frame["state"]
                    else:
                        self.states[frame["module"]] = frame["state"]
                elif op == "error":
                    flow.record_error(
                        frame["module"],
                        frame.get("port"),
                        frame.get("msg"),
                        frame["error"],
                        runtime=self.manifest.id,
                    )
                elif op == "log":
                    self._log(frame.get("module"), frame.get("level", "info"), str(frame["text"]))
                elif op == "loaded":
                    module = frame["module"]
                    if frame.get("error"):
                        self._load_errors[module] = frame["error"]
                    event = self._loaded.get(module)
                    if event is not None:
                        event.set()
                elif op == "hung":
                    self._on_hung(frame)
                    raise _HostEnded(f"handler of {frame['module']} ran past its timeout")
                elif op == "restart":
                    self._on_child_restart(frame)
                elif op == "failed":
                    self._on_module_failed(frame)
                elif op == "cut":
                    flow.direct.host_cut(self, frame.get("ch"))
                elif op == "fatal":
                    self._log(None, "error", f"host reported a fatal error: {frame.get('error')}")
                elif op in ("bye", "pong", "unloaded", "unsupported", "ignored"):
                    if op == "unloaded":
                        if isinstance(frame.get("state"), dict):
                            self.states[frame["module"]] = frame["state"]
                        unloaded = self._unloaded.pop(frame["module"], None)
                        if unloaded is not None:
                            unloaded.set()
                    if op == "unsupported":
                        self._log(None, "warning", f"host does not support op {frame.get('ref')!r}")
                else:
                    self._log(None, "warning", f"ignoring unknown op {op!r} from host")
            if journaled and (self.held_emits or self.held_states) and not queues.in_flight:
                # reported outside of any delivery (a load's state, a module's own emits)
                await flow.commit(self, {})
            flow.kick()
            self.kick()  # acknowledgements may have opened the window
            flow.direct.poll()

    def _bad_values(self, frame: dict[str, Any], taken: list[str]) -> None:
        """What :func:`screen_frame` took out of a host's frame: an error of its module
        (the module's user code made a value no later stage could encode), the flow
        goes on; a frame of no module is a protocol error in the log."""
        module = frame.get("module")
        for text in taken:
            if isinstance(module, str) and module in self.modules:
                self.flow.record_error(
                    module,
                    frame.get("port") if isinstance(frame.get("port"), str) else None,
                    None,
                    {"type": "InvalidValue", "message": text, "traceback": ""},
                    runtime=self.manifest.id,
                )
            else:
                self._log(None, "error", f"protocol error from {self.name}: {text}")

    async def _deadline(self, proc: RuntimeProcess) -> None:
        """Fallback for hosts that cannot report ``hung`` themselves (PROTOCOL.md section 5).

        Only for hosts without the ``watchdog`` feature: a frame of many slow-but-legal
        messages can take longer than this limit, and a host with a watchdog says ``hung``."""
        if "watchdog" in (proc.hello.get("features") or ()):
            return
        limit = deadline(
            (m.get("timeout") for m in self.modules.values()), self.config.default_module_timeout
        )
        period = max(0.05, min(1.0, limit / 4))
        while True:
            await trio.sleep(period)
            d = self.queues.oldest_in_flight()
            if d is not None and trio.current_time() - self._last_rx > limit:
                self._on_hung(
                    {"module": d.module, "port": d.port, "seq": d.seq, "index": None, "msg": None}
                )
                raise _HostEnded(f"no answer from host for {limit:g} s with deliveries pending")

    def _on_child_restart(self, frame: dict[str, Any]) -> None:
        """A host restarted a module's child process (exec; PROTOCOL.md section 7)."""
        module = str(frame.get("module"))
        restarts = frame.get("restarts")
        self.child_restarts[module] = (
            restarts if isinstance(restarts, int) else self.child_restarts.get(module, 0) + 1
        )
        self._child_exit(module, frame)
        self.flow.publish(
            {
                "kind": EventKind.RUNTIME,
                "runtime": self.manifest.id,
                "event": "child-restart",
                "module": self.flow.short(module),
                "restarts": self.child_restarts[module],
                "reason": frame.get("reason"),
            }
        )
        self._log(
            module,
            "warning",
            f"child process restarted ({self.child_restarts[module]} so far): {frame.get('reason')}"
            + (f"; next start in {frame['delay']:g} s" if frame.get("delay") else ""),
        )

    def _on_module_failed(self, frame: dict[str, Any]) -> None:
        """A host gave a module up (its child crash-loops): the flow fails with the
        reason, as it does when a host crash-loops (PROTOCOL.md section 6)."""
        module = str(frame.get("module"))
        self._child_exit(module, frame)
        error = frame.get("error") if isinstance(frame.get("error"), dict) else {}
        message = (
            f"module {self.flow.short(module)} of flow {self.flow.flow_id} failed: "
            f"{error.get('message') or 'given up by its host'}"
        )
        self.status = InstanceStatus.FAILED
        self.last_error = message
        self.flow.instance_failed(
            self, message, module=module, kind=str(error.get("type") or "CrashLoop")
        )

    def _child_exit(self, module: str, frame: dict[str, Any]) -> None:
        """Keep the exit code and stderr tail a ``restart``/``failed`` frame carries
        (hosts that send neither leave nothing)."""
        code, stderr = frame.get("code"), frame.get("stderr")
        if isinstance(code, int) or isinstance(stderr, str):
            self.child_exits[module] = {
                "code": code if isinstance(code, int) else None,
                "stderr": stderr if isinstance(stderr, str) else "",
            }

    def _on_hung(self, frame: dict[str, Any]) -> None:
        removed = self.queues.hung(frame.get("seq"), frame.get("index"))
        if removed is not None:
            self.flow.settle(removed.count)
        timeout = self.modules.get(frame["module"], {}).get("timeout")
        for e in hang_errors(frame, timeout, removed):
            self.flow.record_error(e.module, e.port, e.msg, e.error, runtime=self.manifest.id)

    # ------------------------------------------------------------------ hot swap

    def pause(self) -> None:
        """Send no new deliveries (queues keep filling, with their usual bounds). Its
        direct channels are cut: every message then passes through the runner."""
        self.queues.paused = True
        self.flow.direct.cut_instance(self)

    def resume(self) -> None:
        self.queues.paused = False
        self.flow.notify()
        self.kick()
        self.flow.direct.poll()

    def wake_drain(self) -> None:
        """Something :meth:`drain` waits for happened."""
        self._acked.set()
        self._acked = trio.Event()

    async def drain(self) -> None:
        """After :meth:`pause`: wait until the host has acknowledged everything it was
        sent, so that no message is inside it, and has confirmed that it stopped reading
        its cut direct channels (its last acknowledgements of them came before). Raises
        if the host is not running."""
        while self.queues.in_flight or self.flow.direct.unconfirmed(self):
            if self.status is not InstanceStatus.RUNNING:
                raise FlowStateError(
                    f"runtime {self.manifest.id} of flow {self.flow.flow_id} is "
                    f"{self.status}; try the update again"
                )
            await self._acked.wait()

    async def control(self, frames: list[dict[str, Any]]) -> None:
        """Send control frames (load, unload, route) now, after any half-sent frame."""
        proc = self.process
        if proc is None or self.status is not InstanceStatus.RUNNING:
            raise FlowStateError(
                f"runtime {self.manifest.id} of flow {self.flow.flow_id} is "
                f"{self.status}; try the update again"
            )
        try:
            await self._send(proc, b"".join(encode_frame(f) for f in frames))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise FlowStateError(f"runtime {self.manifest.id} went away: {exc}") from None

    async def load_module(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        """Load (or replace) one module in the running host; the host's error, or None."""
        module = frame["module"]
        event = self._loaded[module] = trio.Event()
        self._load_errors.pop(module, None)
        previous = self.states.get(module)
        if frame.get("state") is not None:
            # The host reports a state only when the load changed it (PROTOCOL.md, load).
            self.states[module] = frame["state"]
        try:
            await self.control([frame])
        except FlowStateError:
            self._restore_state(module, previous)
            raise
        with trio.move_on_after(self.config.start_timeout):
            await event.wait()
        if not event.is_set():
            self._restore_state(module, previous)
            return {
                "type": "Timeout",
                "message": f"no answer to load within {self.config.start_timeout:g} s",
            }
        error = self._load_errors.pop(module, None)
        if error is not None:
            self._restore_state(module, previous)
        return error

    def _restore_state(self, module: str, state: Any) -> None:
        if state is None:
            self.states.pop(module, None)
        else:
            self.states[module] = state

    async def unload_module(self, module: str) -> Any:
        """Remove a module from the running host; its last state (also dropped here)."""
        event = self._unloaded[module] = trio.Event()
        await self.control([{"op": "unload", "module": module}])
        with trio.move_on_after(self.config.start_timeout):
            await event.wait()
        self._loaded.pop(module, None)
        return self.states.pop(module, None)

    # ------------------------------------------------------------------ debugger

    async def deliver_now(self, deliveries: list[Delivery]) -> None:
        """Send these deliveries at once (a debugger step), bypassing queues and gates."""
        self.queues.admit(deliveries)
        proc = self.process
        if proc is None or self.status is not InstanceStatus.RUNNING:
            return  # the restarted host gets them again from the window
        try:
            await self._send(proc, b"".join(d.encode() for d in deliveries))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader sees the host go; the window is delivered again

    # ------------------------------------------------------------------ logs

    def _on_host_output(self, stream: str, line: str) -> None:
        self._log(None, "info" if stream == "stdout" else "warning", line, stream=stream)

    def _log(self, module: str | None, level: str, text: str, *, stream: str = "protocol") -> None:
        entry = {
            "time": time.time(),
            "runtime": self.manifest.id,
            "module": self.flow.short(module) if module else None,
            "level": level,
            "stream": stream,
            "text": text,
        }
        self.logs.append(entry)
        self.flow.publish({"kind": EventKind.LOG, **entry})


def _in_host_counts(local: Any) -> list[tuple[str, str, str, str, int]] | None:
    """A ``done``'s ``local`` (PROTOCOL.md section 12) as tuples; None if malformed."""
    if not isinstance(local, list):
        return None
    counted = []
    for entry in local:
        if not (
            isinstance(entry, list)
            and len(entry) == 5
            and all(isinstance(x, str) for x in entry[:4])
            and type(entry[4]) is int
            and entry[4] >= 0
        ):
            return None
        counted.append((entry[0], entry[1], entry[2], entry[3], entry[4]))
    return counted


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one meaningful exception of a task group (ours first), for a clear message."""
    return (
        first(group, (_HostEnded, FlowLoadError, RuntimeStartError))
        or first(group, Exception)
        or group
    )
