"""One runtime host process: spawn, hello handshake, framed I/O, logs, kill and reap.

Resource handling: :func:`spawn_runtime` is an async context manager. Inside it the
process runs, its stdout/stderr are pumped line by line into ``on_log``, and the FIFO pair
is open. On exit (normal, error or cancellation) the whole process group is killed with
SIGKILL, the process is reaped, both fds are closed and the private directory removed.
A graceful stop is the caller's job (send ``shutdown``, wait for :meth:`wait`) before
leaving the context.

Error handling: a host that exits, or does not say a valid ``hello`` within
``start_timeout``, raises :class:`RuntimeStartError` carrying the tail of its stderr.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from pathlib import Path

from .errors import ProtocolError, RuntimeStartError
from .framing import LineSplitter, decode_frame
from .pipes import FifoPair

__all__ = ["PROTOCOL_VERSION", "RuntimeProcess", "spawn_runtime"]

PROTOCOL_VERSION = 1
READ_CHUNK = 1 << 20
#: what the host pipes are read into (``os.readv``) and copied out of at once, before
#: any await: one buffer per thread (a trio run is one thread) serves all its readers.
#: ``os.read(fd, READ_CHUNK)`` allocates READ_CHUNK bytes per call (an mmap above
#: malloc's threshold) and shrinks them to what came: ~30 us per read, as much as a
#: thousand small messages cost to route.
_read_buffers = threading.local()


def _read_buffer() -> tuple[bytearray, memoryview]:
    found = getattr(_read_buffers, "buffer", None)
    if found is None:
        buffer = bytearray(READ_CHUNK)
        found = _read_buffers.buffer = (buffer, memoryview(buffer))
    return found


#: reads that found data in a row before the reader yields to other tasks anyway
_YIELD_EVERY = 16

LogSink = Callable[[str, str], None]  # (stream name, line)


class RuntimeProcess:
    def __init__(self, process: trio.Process, fifos: FifoPair, hello: dict[str, Any]) -> None:
        self.process = process
        self.fifos = fifos
        self.hello = hello
        assert fifos.read_fd is not None
        assert fifos.write_fd is not None
        self._reader = trio.lowlevel.FdStream(os.dup(fifos.read_fd))
        self._read_fd = self._reader.fileno()
        self._streak = 0
        self._writer = trio.lowlevel.FdStream(os.dup(fifos.write_fd))
        self._splitter = LineSplitter()
        self._pending: list[bytes] = []
        self._send_lock = trio.Lock()
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    async def receive_lines(self) -> list[bytes] | None:
        """The complete lines the pipe holds now (waits for at least one read).
        ``None`` at end of file (the host closed its end or died)."""
        if self._pending:
            lines, self._pending = self._pending, []
            return lines
        # os.read first, and wait for the pipe only when it is empty: trio's
        # FdStream.receive_some yields to the scheduler before every read, one more pass
        # of the run loop per wake-up on the latency path of every hop (PROTOCOL.md
        # section 10, "the latency path"). A reader that always finds data yields every
        # _YIELD_EVERY reads, so other tasks still run and cancellation is seen.
        fd = self._read_fd
        buffer, view = _read_buffer()
        while True:
            try:
                n = os.readv(fd, (buffer,))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                self._streak = 0
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("the pipe was already closed") from None
                raise trio.BrokenResourceError(str(exc)) from exc
            if not n:
                return None
            data = view[:n].tobytes()
            self.bytes_in += len(data)
            lines = self._splitter.feed(data)
            if lines:
                self._streak += 1
                if self._streak >= _YIELD_EVERY:
                    self._streak = 0
                    await trio.lowlevel.checkpoint()
                return lines

    def try_write(self, data: bytes) -> int:
        """Write what the pipe takes now, without waiting (bytes written)."""
        try:
            return os.write(self._writer.fileno(), data)
        except BlockingIOError:
            return 0

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self._writer.send_all(data)
            self.bytes_out += len(data)

    def kill(self) -> None:
        """SIGKILL the host's process group (exec children included). Idempotent."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.kill()
        except ProcessLookupError:
            pass

    async def wait(self) -> int:
        return await self.process.wait()

    async def _close(self) -> None:
        for stream in (self._reader, self._writer):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def _pump_log(
    stream: trio.abc.ReceiveStream, name: str, on_log: LogSink, tail: deque[str], done: trio.Event
) -> None:
    splitter = LineSplitter(max_line=1 << 20)
    while True:
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            done.set()
            return
        try:
            lines = splitter.feed(data)
        except ProtocolError:
            lines = [b"<log line longer than 1 MiB dropped>"]
            splitter = LineSplitter(max_line=1 << 20)
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            tail.append(line)
            on_log(name, line)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:40]


@asynccontextmanager
async def spawn_runtime(
    argv: Sequence[str],
    *,
    name: str,
    on_log: LogSink,
    start_timeout: float = 10.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    fifo_parent: Path | None = None,
) -> AsyncIterator[RuntimeProcess]:
    fifos = FifoPair.create(prefix=f"fifoflow-{_safe(name)}-", parent=fifo_parent)
    stderr_tail: deque[str] = deque(maxlen=20)
    process: trio.Process | None = None
    runtime: RuntimeProcess | None = None
    try:
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["FIFOFLOW_PROTOCOL"] = str(PROTOCOL_VERSION)
        # a host exits when this process is gone (PROTOCOL.md section 1)
        child_env["FIFOFLOW_RUNNER_PID"] = str(os.getpid())
        try:
            process = await trio.lowlevel.open_process(
                [*argv, str(fifos.to_runtime), str(fifos.from_runtime)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=child_env,
                cwd=cwd,
            )
        except OSError as exc:
            raise RuntimeStartError(f"{name}: cannot start {argv[0]!r}: {exc}") from exc
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            assert process.stderr is not None
            stderr_done = trio.Event()
            nursery.start_soon(
                _pump_log, process.stdout, "stdout", on_log, deque(maxlen=1), trio.Event()
            )
            nursery.start_soon(
                _pump_log, process.stderr, "stderr", on_log, stderr_tail, stderr_done
            )
            hello = await _handshake(process, fifos, name, start_timeout, stderr_tail, stderr_done)
            runtime = RuntimeProcess(process, fifos, hello)
            runtime._splitter = hello.pop("_splitter")
            runtime._pending = hello.pop("_pending")
            try:
                yield runtime
            finally:
                runtime.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
                    await runtime._close()
                # The pumps end at EOF once the process group is gone.
    finally:
        if process is not None:
            if process.returncode is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        fifos.close()


async def _handshake(
    process: trio.Process,
    fifos: FifoPair,
    name: str,
    start_timeout: float,
    stderr_tail: deque[str],
    stderr_done: trio.Event,
) -> dict[str, Any]:
    """Wait for the host's ``hello`` and open our write end, racing the host's exit."""
    result: dict[str, Any] = {}

    def failure(reason: str) -> RuntimeStartError:
        tail = "\n".join(stderr_tail)
        return RuntimeStartError(
            f"{name}: {reason}" + (f"\n--- stderr ---\n{tail}" if tail else "")
        )

    async def handshake(cancel: trio.CancelScope) -> None:
        await fifos.open_write_end()
        await fifos.wait_host_writer()
        splitter = LineSplitter()
        assert fifos.read_fd is not None
        while True:
            await trio.lowlevel.wait_readable(fifos.read_fd)
            try:
                data = os.read(fifos.read_fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not data:
                raise failure("closed its pipe before saying hello")
            lines = splitter.feed(data)
            if lines:
                break
        try:
            hello = decode_frame(lines[0])
        except ProtocolError as exc:
            raise failure(f"first frame is not a valid hello: {exc}") from None
        if hello.get("op") != "hello":
            raise failure(f"first frame is {hello.get('op')!r}, expected 'hello'")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise failure(
                f"speaks protocol {hello.get('protocol')!r}, this runner speaks {PROTOCOL_VERSION}"
            )
        # Frames after hello that came in the same read are kept for the first receive.
        hello["_pending"] = lines[1:]
        hello["_splitter"] = splitter
        result.update(hello)
        cancel.cancel()

    async def watch_exit(cancel: trio.CancelScope) -> None:
        code = await process.wait()
        # Let the pump drain stderr so the error shows why.
        with trio.move_on_after(1.0):
            await stderr_done.wait()
        result["_exit"] = code
        cancel.cancel()

    with trio.move_on_after(start_timeout) as timer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handshake, nursery.cancel_scope)
            nursery.start_soon(watch_exit, nursery.cancel_scope)
    if "op" in result:
        return result
    if "_exit" in result:
        raise failure(f"exited with status {result['_exit']} before saying hello")
    if timer.cancelled_caught:
        raise failure(f"did not say hello within {start_timeout:g} s")
    raise failure("did not say hello")
