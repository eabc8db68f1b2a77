"""A runtime instance: the modules of one flow that live in one runtime, and their host.

The instance is the unit of supervision. It keeps, outside the host process, everything
needed to rebuild it: each module's load frame, its last state snapshot, the route table,
the queue of deliveries not yet sent and the window of deliveries sent but not yet
acknowledged. When the host dies (exit, SIGKILL, garbage on its pipe, a hung handler),
:meth:`RuntimeInstance.run` starts a new one, loads every module with its snapshot and
sends the unacknowledged deliveries again, in order, before anything new (PROTOCOL.md
section 6).

Resource handling: the host process, its FIFOs and its log pumps live inside
:meth:`run`; leaving it (stop, cancellation, error) kills and reaps the process group
and removes the FIFO directory.

Error handling: before ``task_status.started()`` a host that cannot start or a module
that fails to load raises (:class:`RuntimeStartError`, :class:`FlowLoadError`) to the
caller of ``nursery.start``. After it, nothing escapes: crashes are restarted, a crash
loop marks the instance failed and tells the flow.
"""

from __future__ import annotations

import enum
import math
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from .attached import attach_runtime
from .errors import FlowLoadError, FlowStateError, ProtocolError, RuntimeStartError, first
from .framing import decode_frame, encode_frame
from .process import RuntimeProcess, spawn_runtime

if TYPE_CHECKING:
    from ..runtimes.registry import RuntimeManifest
    from .config import RunnerConfig
    from .flowrun import FlowRun

__all__ = ["Delivery", "InstanceStatus", "RuntimeInstance"]


class InstanceStatus(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"


@attrs.define(slots=True)
class Delivery:
    module: str
    port: str
    msgs: list[Any]
    seq: int = 0
    hangs: int = 0

    def encode(self) -> bytes:
        return (
            orjson.dumps(
                {
                    "op": "deliver",
                    "seq": self.seq,
                    "module": self.module,
                    "port": self.port,
                    "msgs": self.msgs,
                }
            )
            + b"\n"
        )


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
        self.restarts = 0
        self.last_error: str | None = None
        self.logs: deque[dict[str, Any]] = deque(maxlen=config.keep_logs)

        # One queue per module: a delivery waits until every queue its module feeds has
        # room (``downstream``), so modules never block each other (see README.md).
        self._queues: dict[str, deque[Delivery]] = {}
        self._queued: dict[str, int] = {}
        self._queued_msgs = 0
        self.downstream: dict[str, list[tuple[RuntimeInstance, str]]] = {}
        self._unacked: deque[Delivery] = deque()
        self._unacked_msgs = 0
        self._next_seq = 1
        self._loaded: dict[str, trio.Event] = {}
        self._load_errors: dict[str, dict[str, Any]] = {}
        self._stopping = False
        self._last_rx = 0.0
        self._stopped = trio.Event()
        self.delivered_msgs = 0
        self.redelivered_msgs = 0
        # Bytes a direct write (kick) could not push into the pipe; the writer sends them first.
        self._leftover: memoryview | None = None
        # Hot swap: while paused nothing new is sent; drain() waits for the window to empty.
        self._paused = False
        self._acked = trio.Event()
        self._unloaded: dict[str, trio.Event] = {}

    # ------------------------------------------------------------------ queueing

    def statistics(self) -> dict[str, Any]:
        return {
            "runtime": self.manifest.id,
            "status": self.status.value,
            "pid": self.process.pid if self.process else None,
            "queued": self._queued_msgs,
            "unacknowledged": self._unacked_msgs,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "delivered": self.delivered_msgs,
            "redelivered": self.redelivered_msgs,
        }

    def pending_for(self, module: str) -> list[dict[str, Any]]:
        """Deliveries for ``module`` not yet acknowledged (sent or waiting), in order."""
        out = []
        for d in (*self._unacked, *self._queues.get(module, ())):
            if d.module == module:
                out.append({"port": d.port, "msgs": list(d.msgs), "sent": d.seq != 0})
        return out

    def has_room(self, module: str) -> bool:
        return self._queued.get(module, 0) < self.config.queue_capacity

    async def put(self, module: str, port: str, msgs: list[Any]) -> None:
        """Queue messages from outside the flow; waits while the module's queue is full."""
        while not self.has_room(module):
            await self.flow.progress_event().wait()
        self.enqueue(module, port, msgs)
        self.kick()

    def enqueue(self, module: str, port: str, msgs: list[Any]) -> None:
        """Queue messages routed inside the flow. Never waits: the producer's delivery
        was only sent when this queue had room, which bounds what can arrive."""
        queue = self._queues.get(module)
        if queue is None:
            queue = self._queues[module] = deque()
        queue.append(Delivery(module, port, msgs))
        self._queued[module] = self._queued.get(module, 0) + len(msgs)
        self._queued_msgs += len(msgs)

    def kick(self) -> None:
        """Send what may go now straight from the calling task, without blocking.

        Saves a task switch per hop (latency). Whatever the pipe does not take at once
        is left for the writer task, which sends it before anything else."""
        proc = self.process
        if (
            proc is None
            or self._stopping
            or self._paused
            or self._leftover is not None
            or proc._send_lock.locked()
        ):
            return
        if self.status is not InstanceStatus.RUNNING:
            return
        chunks = self._take()
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

    def _take(self) -> list[bytes]:
        """Deliveries that may go now, encoded, moved into the window."""
        chunks: list[bytes] = []
        window = self.config.window
        capacity = self.config.queue_capacity
        if self._paused or self._unacked_msgs >= window or not self._queued_msgs:
            return chunks
        freed = False
        debugger = self.flow.debugger
        debugging = debugger.active
        for module, queue in self._queues.items():
            if not queue:
                continue
            if not all(inst.has_room(m) for inst, m in self.downstream.get(module, ())):
                continue
            # While debugged, the debugger says how many messages may go (None: all).
            limit = debugger.allowance(module, queue) if debugging else None
            if limit == 0:
                continue
            taken = 0
            while queue and self._unacked_msgs < window and len(chunks) < 512:
                if limit is not None and taken >= limit:
                    break
                d = queue[0]
                if limit is not None and taken + len(d.msgs) > limit:
                    # Split the delivery: only the allowed messages go.
                    keep = limit - taken
                    d = Delivery(d.module, d.port, d.msgs[:keep])
                    queue[0].msgs = queue[0].msgs[keep:]  # rebound: lists may be shared
                else:
                    queue.popleft()
                n = len(d.msgs)
                taken += n
                d.seq = self._next_seq
                self._next_seq += 1
                self._unacked.append(d)
                self._unacked_msgs += n
                chunks.append(d.encode())
            if debugging and taken:
                debugger.taken(module, taken)
            before = self._queued[module]
            self._queued[module] = before - taken
            self._queued_msgs -= taken
            if before >= capacity > before - taken:
                freed = True
        if freed:
            # A full queue got room: producers waiting on it (writers upstream, inject) may go.
            self.flow.notify()
        return chunks

    def _ack(self, seq: int) -> None:
        acked = 0
        unacked = self._unacked
        while unacked and unacked[0].seq <= seq:
            d = unacked.popleft()
            acked += len(d.msgs)
        if acked:
            self._unacked_msgs -= acked
            self.delivered_msgs += acked
            self.flow.settle(acked)
            self._acked.set()
            self._acked = trio.Event()

    # ------------------------------------------------------------------ lifecycle

    def set_modules(self, loads: dict[str, dict[str, Any]], routes: dict[str, Any]) -> None:
        self.modules = loads
        self.routes = routes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        crashes: deque[float] = deque()
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
                        "kind": "runtime",
                        "runtime": self.manifest.id,
                        "event": "restart",
                        "reason": reason,
                    }
                )
                now = trio.current_time()
                crashes.append(now)
                while crashes and now - crashes[0] > self.config.crash_period:
                    crashes.popleft()
                # A page that goes away and comes back is no crash loop (attached hosts).
                if len(crashes) >= self.config.crash_limit and not self.manifest.attach:
                    self.status = InstanceStatus.FAILED
                    message = (
                        f"runtime {self.manifest.id} of flow {self.flow.flow_id} crashed {len(crashes)} times "
                        f"within {self.config.crash_period:g} s; last: {reason}"
                    )
                    self.last_error = message
                    self.flow.instance_failed(self, message)
                    return
                self.status = InstanceStatus.RESTARTING
                self.restarts += 1
                delay = min(
                    self.config.restart_backoff_max,
                    0.0 if len(crashes) <= 1 else 0.1 * 2 ** (len(crashes) - 2),
                )
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
        if self._unacked:
            self.redelivered_msgs += self._unacked_msgs
            for d in reversed(self._unacked):
                d.seq = 0
                self._queues.setdefault(d.module, deque()).appendleft(d)
                self._queued[d.module] = self._queued.get(d.module, 0) + len(d.msgs)
                self._queued_msgs += len(d.msgs)
            self._unacked.clear()
            self._unacked_msgs = 0
            self._acked.set()  # a drain() waiting on the old host learns it is gone
            self._acked = trio.Event()
        if self.environment is not None and self._host_options is None:
            env = await self.flow.build_environment(self)
            self._host_options = env.host_options()
        options = self._host_options or {}
        argv = self.manifest.argv()
        if options.get("python"):
            argv = [options["python"] if part == sys.executable else part for part in argv]
        if self.manifest.attach:
            if self.config.attached is None:
                raise RuntimeStartError(
                    f"{self.name}: runtime {self.manifest.id} has hosts that attach"
                    " themselves (a web page), and this runner takes none"
                )
            host = attach_runtime(
                self.config.attached, self.name, start_timeout=self.config.start_timeout
            )
        else:
            host = spawn_runtime(
                argv,
                name=self.name,
                on_log=self._on_host_output,
                start_timeout=self.config.start_timeout,
                fifo_parent=self.config.fifo_dir,
                env=options.get("env") or None,
                cwd=options.get("cwd"),
            )
        try:
            async with host as proc:
                self.process = proc
                # A frame cut short for the dead host is in the window and goes again whole.
                self._leftover = None
                self._last_rx = trio.current_time()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, proc, nursery.cancel_scope)
                    await self._boot(proc)
                    self.status = InstanceStatus.RUNNING
                    if self.restarts:
                        self.flow.publish(
                            {"kind": "runtime", "runtime": self.manifest.id, "event": "ready"}
                        )
                    if task_status is not None:
                        task_status.started()
                    nursery.start_soon(self._writer, proc)
                    nursery.start_soon(self._deadline, proc)
        except BaseExceptionGroup as group:
            raise _single(group) from None
        return "stopped"

    async def _boot(self, proc: RuntimeProcess) -> None:
        self._loaded = {m: trio.Event() for m in self.modules}
        self._load_errors = {}
        frames = []
        for module, load in self.modules.items():
            frames.append(encode_frame({**load, "state": self.states.get(module)}))
        frames.append(encode_frame({"op": "route", "routes": self.routes}))
        await proc.send(b"".join(frames))
        with trio.move_on_after(self.config.start_timeout) as timer:
            for event in self._loaded.values():
                await event.wait()
        if timer.cancelled_caught:
            missing = sorted(m for m, e in self._loaded.items() if not e.is_set())
            raise RuntimeStartError(f"{self.name}: no answer to load of {', '.join(missing)}")
        if self._load_errors:
            module, error = next(iter(self._load_errors.items()))
            raise FlowLoadError(module, error)

    async def stop(self) -> None:
        """Graceful stop: the host handles what it was sent, snapshots state, says bye."""
        self._stopping = True
        proc = self.process
        if proc is None:
            return
        with trio.move_on_after(self.config.stop_timeout):
            try:
                async with proc._send_lock:
                    # Finish a frame a direct send left half-written, or the host reads garbage.
                    leftover, self._leftover = self._leftover, None
                    await proc._writer.send_all(
                        bytes(leftover or b"") + encode_frame({"op": "shutdown"})
                    )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await self._stopped.wait()
        proc.kill()

    # ------------------------------------------------------------------ I/O tasks

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
                chunks = self._take()
                if chunks:
                    try:
                        await proc._writer.send_all(b"".join(chunks))
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        raise _HostEnded(f"pipe to host broke: {exc}") from None
                    continue
            await progress.wait()

    async def _reader(self, proc: RuntimeProcess, host_scope: trio.CancelScope) -> None:
        flow = self.flow
        while True:
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
                try:
                    frame = decode_frame(line)
                except ProtocolError as exc:
                    self._log(None, "error", f"protocol error from {self.name}: {exc}")
                    raise _HostEnded(f"broken: {exc}") from None
                op = frame["op"]
                if op == "emit":
                    await flow.route(frame["module"], frame["port"], frame["msgs"])
                elif op == "done":
                    self._ack(frame["seq"])
                elif op == "state":
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
                elif op == "fatal":
                    self._log(None, "error", f"host reported a fatal error: {frame.get('error')}")
                elif op in ("bye", "pong", "unloaded", "unsupported"):
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
            flow.kick()
            self.kick()  # acknowledgements may have opened the window

    async def _deadline(self, proc: RuntimeProcess) -> None:
        """Fallback for hosts that cannot report ``hung`` themselves (PROTOCOL.md section 5).

        Only for hosts without the ``watchdog`` feature: a frame of many slow-but-legal
        messages can take longer than this limit, and a host with a watchdog says ``hung``."""
        if "watchdog" in (proc.hello.get("features") or ()):
            return
        timeouts = [
            float(m.get("timeout") or self.config.default_module_timeout)
            for m in self.modules.values()
        ]
        limit = 2 * max(timeouts, default=self.config.default_module_timeout) + 1.0
        period = max(0.05, min(1.0, limit / 4))
        while True:
            await trio.sleep(period)
            if self._unacked and trio.current_time() - self._last_rx > limit:
                d = self._unacked[0]
                self._on_hung(
                    {"module": d.module, "port": d.port, "seq": d.seq, "index": None, "msg": None}
                )
                raise _HostEnded(f"no answer from host for {limit:g} s with deliveries pending")

    # ------------------------------------------------------------------ faults

    def _on_hung(self, frame: dict[str, Any]) -> None:
        module = frame["module"]
        seq = frame.get("seq")
        index = frame.get("index")
        elapsed = frame.get("elapsed")
        timeout = self.modules.get(module, {}).get("timeout")
        detail = (
            f"handler ran past its timeout of {timeout:g} s"
            if isinstance(timeout, (int, float))
            else "handler hung"
        )
        if isinstance(elapsed, (int, float)) and math.isfinite(elapsed):
            detail += f" (running for {elapsed:.3g} s); runtime restarted"
        target = next((d for d in self._unacked if d.seq == seq), None)
        if target is not None and isinstance(index, int) and 0 <= index < len(target.msgs):
            msg = target.msgs[index]
            # rebound, not cut: the same list may be queued for another module too
            target.msgs = target.msgs[:index] + target.msgs[index + 1 :]
            self._unacked_msgs -= 1
            self.flow.settle(1)
            self.flow.record_error(
                module,
                frame.get("port"),
                msg,
                {"type": "Timeout", "message": detail},
                runtime=self.manifest.id,
            )
            return
        if target is None and self._unacked:
            target = self._unacked[0]
        if target is None:
            self.flow.record_error(
                module,
                frame.get("port"),
                frame.get("msg"),
                {"type": "Timeout", "message": detail},
                runtime=self.manifest.id,
            )
            return
        target.hangs += 1
        if target.hangs >= 2:
            # Twice stuck on the same frame: record its messages instead of looping forever.
            self._unacked.remove(target)
            self._unacked_msgs -= len(target.msgs)
            self.flow.settle(len(target.msgs))
            for msg in target.msgs:
                self.flow.record_error(
                    target.module,
                    target.port,
                    msg,
                    {
                        "type": "Timeout",
                        "message": detail + "; frame hung twice, not delivered again",
                    },
                    runtime=self.manifest.id,
                )
        else:
            self.flow.record_error(
                module,
                frame.get("port"),
                frame.get("msg"),
                {"type": "Timeout", "message": detail},
                runtime=self.manifest.id,
            )

    # ------------------------------------------------------------------ hot swap

    def pause(self) -> None:
        """Send no new deliveries (queues keep filling, with their usual bounds)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.flow.notify()
        self.kick()

    async def drain(self) -> None:
        """After :meth:`pause`: wait until the host has acknowledged everything it was
        sent, so that no message is inside it. Raises if the host is not running."""
        while self._unacked:
            if self.status is not InstanceStatus.RUNNING:
                raise FlowStateError(
                    f"runtime {self.manifest.id} of flow {self.flow.flow_id} is "
                    f"{self.status.value}; try the update again"
                )
            await self._acked.wait()

    async def control(self, frames: list[dict[str, Any]]) -> None:
        """Send control frames (load, unload, route) now, after any half-sent frame."""
        proc = self.process
        if proc is None or self.status is not InstanceStatus.RUNNING:
            raise FlowStateError(
                f"runtime {self.manifest.id} of flow {self.flow.flow_id} is "
                f"{self.status.value}; try the update again"
            )
        data = b"".join(encode_frame(f) for f in frames)
        try:
            async with proc._send_lock:
                leftover, self._leftover = self._leftover, None
                await proc._writer.send_all(bytes(leftover or b"") + data)
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

    def take_queue(self, module: str) -> deque[Delivery]:
        """Remove and return what waits for ``module`` (not yet sent), in order."""
        queue = self._queues.pop(module, None) or deque()
        self._queued_msgs -= self._queued.pop(module, 0)
        return queue

    def prepend_queue(self, module: str, deliveries: deque[Delivery]) -> int:
        """Put deliveries in front of what waits for ``module``; the number of messages."""
        if not deliveries:
            return 0
        queue = self._queues.setdefault(module, deque())
        queue.extendleft(reversed(deliveries))
        n = sum(len(d.msgs) for d in deliveries)
        self._queued[module] = self._queued.get(module, 0) + n
        self._queued_msgs += n
        return n

    # ------------------------------------------------------------------ debugger

    def queued(self, module: str) -> list[Delivery]:
        """What waits for ``module`` in the runner (not sent yet), in order."""
        return list(self._queues.get(module, ()))

    def pop_one(self, module: str) -> Delivery | None:
        """Take the first message waiting for ``module``, as a delivery of its own."""
        queue = self._queues.get(module)
        if not queue:
            return None
        head = queue[0]
        one = Delivery(module, head.port, head.msgs[:1])
        head.msgs = head.msgs[1:]  # rebound, not cut: a routed list may be shared
        if not head.msgs:
            queue.popleft()
        self._queued[module] -= 1
        self._queued_msgs -= 1
        return one

    def replace_queued(self, module: str, index: int, msg: Any | None) -> Any:
        """Edit (``msg``) or drop (``None``) the ``index``-th message waiting for
        ``module``; returns the old message. Raises IndexError."""
        position = 0
        queue = self._queues.get(module) or deque()
        for d in queue:
            if index < position + len(d.msgs):
                i = index - position
                old = d.msgs[i]
                if msg is None:
                    d.msgs = d.msgs[:i] + d.msgs[i + 1 :]  # rebound: lists may be shared
                    if not d.msgs:
                        queue.remove(d)
                    self._queued[module] -= 1
                    self._queued_msgs -= 1
                else:
                    d.msgs = [*d.msgs[:i], msg, *d.msgs[i + 1 :]]
                return old
            position += len(d.msgs)
        raise IndexError(index)

    async def deliver_now(self, deliveries: list[Delivery]) -> None:
        """Send these deliveries at once (a debugger step), bypassing queues and gates."""
        for d in deliveries:
            d.seq = self._next_seq
            self._next_seq += 1
            self._unacked.append(d)
            self._unacked_msgs += len(d.msgs)
        proc = self.process
        if proc is None or self.status is not InstanceStatus.RUNNING:
            return  # the restarted host gets them again from the window
        data = b"".join(d.encode() for d in deliveries)
        try:
            async with proc._send_lock:
                leftover, self._leftover = self._leftover, None
                await proc._writer.send_all(bytes(leftover or b"") + data)
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
        self.flow.publish({"kind": "log", **entry})


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one meaningful exception of a task group (ours first), for a clear message."""
    return (
        first(group, (_HostEnded, FlowLoadError, RuntimeStartError))
        or first(group, Exception)
        or group
    )
