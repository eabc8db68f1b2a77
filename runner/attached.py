"""Runtime hosts that attach themselves over a socket (the browser client runner).

A runtime whose manifest says ``"attach": true`` has no command: its hosts are web
pages (``runtimes/browser/DESIGN.md``). :class:`AttachedHosts` is where a runner gets
them. When a :class:`~fifoflow.runner.instance.RuntimeInstance` needs a host it calls
:func:`attach_runtime` instead of spawning a process: that asks the page (through the
``request`` callback the page's session installs) to open a host socket named after the
instance, and waits for it. The socket is then an :class:`AttachedProcess`, the same
interface as a host process on FIFOs (``receive_lines``, ``send``, ``kill``, ``wait``):
everything the runner does for hosts — queues, the window of unacknowledged deliveries,
redelivery after a crash, hot swap, the debugger — works unchanged. A page that goes
away is a host that died; when it comes back, each host is asked for again, gets its
modules' last states and the unacknowledged messages, in order.

Resource handling: the socket belongs to the web handler that accepted it;
:meth:`AttachedProcess.kill` asks that handler to close it, and :meth:`wait` returns once
it has.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import trio

from .errors import RuntimeStartError
from .framing import LineSplitter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["AttachedHosts", "AttachedProcess", "attach_runtime"]


class _Writer:
    def __init__(self, proc: AttachedProcess) -> None:
        self.proc = proc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.proc._send_text(bytes(data))


class AttachedProcess:
    """A host on the other end of a socket; the runner's side of it."""

    pid = 0

    def __init__(self, name: str, send_text: Callable[[str], Awaitable[None]]) -> None:
        self.name = name
        self.hello: dict[str, Any] = {}
        self._send = send_text
        self._send_lock = trio.Lock()
        self._writer = _Writer(self)
        self._incoming_send, self._incoming = trio.open_memory_channel[bytes | None](1000)
        self._splitter = LineSplitter()
        self._pending: list[bytes] = []
        self.closed = trio.Event()
        self.close_requested = trio.Event()
        self.bytes_in = 0
        self.bytes_out = 0

    # -- the web handler's side

    async def feed(self, data: bytes) -> None:
        """A message from the page (complete lines); waits while the runner is 1000
        messages behind (backpressure on the socket)."""
        await self._incoming_send.send(data)

    def ended(self) -> None:
        """The socket is closed."""
        if not self.closed.is_set():
            self.closed.set()
            try:
                self._incoming_send.send_nowait(None)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self._incoming_send.close()

    # -- the runner's side (RuntimeProcess's interface)

    async def receive_lines(self) -> list[bytes] | None:
        if self._pending:
            lines, self._pending = self._pending, []
            return lines
        while True:
            try:
                data = await self._incoming.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
            if data is None:
                return None
            self.bytes_in += len(data)
            lines = self._splitter.feed(data if data.endswith(b"\n") else data + b"\n")
            if lines:
                return lines

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self._send_text(data)

    async def _send_text(self, data: bytes) -> None:
        if self.closed.is_set():
            raise trio.BrokenResourceError(f"{self.name}: the page's socket is closed")
        self.bytes_out += len(data)
        try:
            await self._send(data.decode())
        except Exception as exc:
            raise trio.BrokenResourceError(f"{self.name}: {exc}") from None

    def try_write(self, data: bytes) -> int:
        return 0  # nothing goes past the writer task: the socket has no non-blocking write

    def kill(self) -> None:
        self.close_requested.set()

    async def wait(self) -> int:
        await self.closed.wait()
        return 0


class AttachedHosts:
    """Where one runner's attached hosts come from (one page)."""

    def __init__(self) -> None:
        #: installed by the page's session: ask the page to open host ``name``
        self.request: Callable[[str], Awaitable[None]] | None = None
        self._connected = trio.Event()
        self._waiting: dict[str, trio.MemorySendChannel[AttachedProcess]] = {}

    def page_connected(self, request: Callable[[str], Awaitable[None]]) -> None:
        self.request = request
        self._connected.set()

    def page_gone(self) -> None:
        self.request = None
        self._connected = trio.Event()

    def offer(self, proc: AttachedProcess) -> bool:
        """A host socket arrived; False if nobody asked for it."""
        send = self._waiting.pop(proc.name, None)
        if send is None:
            return False
        try:
            send.send_nowait(proc)
        except (trio.WouldBlock, trio.BrokenResourceError):
            return False
        return True

    async def attach(self, name: str, start_timeout: float) -> AttachedProcess:
        while True:
            await self._connected.wait()  # however long the page is away
            request = self.request
            if request is None:
                continue
            send, receive = trio.open_memory_channel[AttachedProcess](1)
            self._waiting[name] = send
            try:
                await request(name)
                with trio.move_on_after(start_timeout):
                    return await receive.receive()
            except trio.BrokenResourceError:
                pass  # the page went away while asked: ask again when it is back
            finally:
                self._waiting.pop(name, None)
            if self.request is request:
                raise RuntimeStartError(
                    f"{name}: the page did not open its host within {start_timeout:g} s"
                )


@asynccontextmanager
async def attach_runtime(
    hosts: AttachedHosts, name: str, *, start_timeout: float = 10.0
) -> AsyncIterator[AttachedProcess]:
    """Like ``spawn_runtime``: a host (here: a page's socket) that said ``hello``."""
    proc = await hosts.attach(name, start_timeout)
    with trio.move_on_after(start_timeout):
        lines = await proc.receive_lines()
        if lines:
            try:
                hello = orjson.loads(lines[0])
            except orjson.JSONDecodeError:
                hello = {}
            if isinstance(hello, dict) and hello.get("op") == "hello":
                proc.hello = hello
                proc._pending = lines[1:]
    if not proc.hello:
        proc.kill()
        raise RuntimeStartError(f"{name}: the page's host did not say hello")
    try:
        yield proc
    finally:
        proc.kill()
