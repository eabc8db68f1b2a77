"""Runner-to-runner relay: a cross-runner wire goes straight to the runner that holds
its target module (design: dispatcher/README.md, "Runner-to-runner relay").

The dispatcher keeps placement, failure handling and the debugger; it tells each
runner, in every ``deploy``, where the targets of its part's leaving wires are
(``routes``: the target runner, its peer endpoint, and a credential it minted for this
sender and flow). Two sides here:

- :class:`PeerServer` (receiving): a WebSocket listener (``/peer``, its own port; the
  endpoint is said in ``hello``). A sender says who it is and its session; every batch
  names its flow and carries the credential, checked against this runner's peer key
  (from the dispatcher's ``hello`` answer): ``HMAC-SHA256(key, sender \\n flow)``. Batches
  are injected in the order they came (per-wire order), then acknowledged (cumulative
  ``seq``); a batch already accepted in this session (a resend after a reconnect) is
  acknowledged without being injected again. A batch it cannot take (bad credential, a
  flow or module not held here, a stopped flow) is refused and the connection closed:
  nothing after it on that connection was taken.
- :class:`PeerLinks` / :class:`PeerSender` (sending): one sender per target runner, one
  connection carrying every wire to it. The flow's output sink hands it batches; each is
  kept until the receiver acknowledged it (at least once), at most ``credit`` messages
  unacknowledged per target (backpressure: the sink waits, so the emitting host is not
  acknowledged). After a reconnect the unacknowledged batches go again, in order. A
  connection that cannot be made, or a refusal, switches the target to the dispatcher
  relay (the ``relay`` call over the control link, one batch at a time, awaited) for
  ``RETRY_DIRECT`` seconds, then the direct connection is tried again. A new ``deploy``
  whose routes send a wire elsewhere (its target was placed again) moves that wire's
  waiting batches, in order, to the new target.

Resource handling: the listener, the senders and their connections live in the nursery
of :meth:`PeerLinks.run` / :meth:`PeerServer.run` (the runner's link owns both).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import uuid
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio
import trio_websocket

from .errors import RunnerError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .service import Runner

__all__ = ["Batch", "PeerLinks", "PeerServer", "Route", "credential"]

#: messages a sender may have unacknowledged per receiving runner (the receiver says it)
CREDIT = 20_000
#: seconds a target stays on the dispatcher relay after a failed connection or a refusal
RETRY_DIRECT = 2.0
#: seconds to open a peer connection and hear its hello
CONNECT_SECONDS = 3.0
#: batches sent in one frame at most (what waited while the previous frame went)
FRAME_BATCHES = 64
#: largest peer frame
MAX_FRAME = 256 * 1024 * 1024
#: read buffer of a peer connection (trio_websocket's default, 4 KiB, halves throughput)
RECEIVE_BYTES = 256 * 1024

_DOWN = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    orjson.JSONDecodeError,
    KeyError,
    TypeError,
    ValueError,
)


def credential(key: bytes, sender: str, flow: str) -> str:
    """What the dispatcher gives ``sender`` to reach the runner whose peer key is
    ``key`` for ``flow``; that runner checks it with its own key."""
    return hmac.new(key, f"{sender}\n{flow}".encode(), hashlib.sha256).hexdigest()


def advertised_host(host: str) -> str:
    """The address others reach a listener bound to ``host`` at: the host itself, or
    for a wildcard this machine's (a container's) address."""
    if host in ("", "0.0.0.0", "::"):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return host


@attrs.frozen
class Route:
    """Where a leaving wire goes: the target module's port, its runner, and how to
    reach it directly (``url`` None: through the dispatcher only)."""

    dst: str
    dst_port: str
    runner: str
    url: str | None = None
    cred: str | None = None


@attrs.define(slots=True, eq=False)
class Batch:
    """Messages one module emitted on one port, for one target module's port."""

    flow: str
    src: str
    src_port: str
    route: Route
    msgs: list[Any]
    #: the sender's number for it (set when it is queued for a target)
    seq: int = 0


class Refused(RunnerError):
    code = "peer_refused"


class PeerServer:
    """The receiving side: takes batches from senders and injects them here."""

    def __init__(self, runner: Runner, host: str = "127.0.0.1", port: int = 0) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        #: set from the dispatcher's ``hello`` answer; None: nothing is accepted yet
        self.key: bytes | None = None
        #: (sender runner id, session) -> the last seq accepted
        self.accepted: dict[tuple[str, str], int] = {}
        #: messages accepted from peers (all sessions)
        self.received = 0
        self.url: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    self._serve,
                    self.host,
                    self.port,
                    None,
                    handler_nursery=nursery,
                    max_message_size=MAX_FRAME,
                    receive_buffer_size=RECEIVE_BYTES,
                )
            )
            self.url = f"ws://{advertised_host(self.host)}:{server.port}/peer"
            task_status.started(self.url)

    async def _serve(self, request: trio_websocket.WebSocketRequest) -> None:
        if request.path != "/peer":
            await request.reject(404, body=b"the peer endpoint is /peer")
            return
        ws = await request.accept()
        try:
            with trio.fail_after(CONNECT_SECONDS):
                hello = orjson.loads(await ws.get_message())
            sender, session = str(hello["from"]), str(hello["session"])
            key = (sender, session)
            await ws.send_message(
                orjson.dumps({"t": "hello", "credit": CREDIT, "acked": self.accepted.get(key, 0)})
            )
            allowed: set[tuple[str, str]] = set()
            while True:
                frame = orjson.loads(await ws.get_message())
                # several batches per frame (``batches``), or one (the frame itself)
                batches = frame["batches"] if "batches" in frame else [frame]
                if not isinstance(batches, list):
                    raise TypeError("batches must be an array")
                last = None
                for batch in batches:
                    seq = int(batch["seq"])
                    last = seq
                    if seq <= self.accepted.get(key, 0):
                        continue  # sent again after a reconnect: taken already
                    flow, cred = str(batch["flow"]), str(batch["cred"])
                    try:
                        if (flow, cred) not in allowed:
                            self._check(sender, flow, cred)
                            allowed.add((flow, cred))
                        msgs = batch["msgs"]
                        if not isinstance(msgs, list):
                            raise TypeError("msgs must be an array")
                        await self.runner.inject(flow, str(batch["dst"]), str(batch["port"]), msgs)
                    except (RunnerError, TypeError) as exc:
                        code = getattr(exc, "code", "bad_frame")
                        answer = {"t": "refused", "seq": seq, "code": code, "why": str(exc)}
                        await ws.send_message(orjson.dumps(answer))
                        return
                    self.accepted[key] = seq
                    self.received += len(msgs)
                if last is not None:
                    await ws.send_message(orjson.dumps({"t": "ack", "seq": last}))
        except _DOWN:
            return
        finally:
            with trio.move_on_after(1, shield=True):
                await ws.aclose()

    def _check(self, sender: str, flow: str, cred: str) -> None:
        if self.key is None:
            raise Refused("this runner has no peer key yet (not linked to its dispatcher)")
        if not hmac.compare_digest(credential(self.key, sender, flow), cred):
            raise Refused(f"bad credential from {sender} for flow {flow!r}")


class PeerSender:
    """Every batch for one target runner, in order, until it acknowledged them."""

    def __init__(self, links: PeerLinks, runner_id: str, url: str | None) -> None:
        self.links = links
        self.runner_id = runner_id
        self.url = url
        self.session = uuid.uuid4().hex
        self.credit = CREDIT
        #: batches not sent yet, in order; then those sent and not yet acknowledged
        self.unsent: deque[Batch] = deque()
        self.unacked: deque[Batch] = deque()
        #: messages held (unsent + unacked)
        self.held = 0
        self._seq = 0
        self._work = trio.Event()
        self._room = trio.Event()
        #: trio.current_time() until which batches go through the dispatcher
        self.fallback_until = 0.0
        self.scope = trio.CancelScope()
        #: how many connections were made, and batches relayed through the dispatcher
        self.connections = 0
        self.relayed = 0
        #: why the last direct connection ended
        self.last_error: str | None = None

    def _wake(self) -> None:
        self._work.set()
        self._work = trio.Event()

    def _freed(self) -> None:
        self._room.set()
        self._room = trio.Event()

    @property
    def full(self) -> bool:
        return self.held >= self.credit

    async def room(self) -> None:
        """Until something left this sender (acknowledged, or moved elsewhere)."""
        await self._room.wait()

    def append(self, batch: Batch) -> None:
        """Queue without waiting for credit (batches moved here from another target)."""
        self._seq += 1
        batch.seq = self._seq
        self.unsent.append(batch)
        self.held += len(batch.msgs)
        self._wake()

    def take_flow(self, flow: str, keep: Callable[[Batch], bool]) -> list[Batch]:
        """Remove the flow's batches ``keep`` rejects, in order (unacknowledged first)."""
        moved: list[Batch] = []
        for queue in (self.unacked, self.unsent):
            stay = deque()
            for b in queue:
                (stay if b.flow != flow or keep(b) else moved).append(b)
            queue.clear()
            queue.extend(stay)
        if moved:
            self.held -= sum(len(b.msgs) for b in moved)
            self._freed()
        return moved

    def _acked(self, seq: int) -> None:
        n = 0
        while self.unacked and self.unacked[0].seq <= seq:
            b = self.unacked.popleft()
            n += len(b.msgs)
            self.links.count(b)
        # batches that were moved away meanwhile are simply not here any more
        while self.unsent and self.unsent[0].seq <= seq:
            b = self.unsent.popleft()
            n += len(b.msgs)
            self.links.count(b)
        if n:
            self.held -= n
            self._freed()

    def _requeue(self) -> None:
        """The connection is gone: what was sent and not acknowledged goes again first."""
        self.unsent.extendleft(reversed(self.unacked))
        self.unacked.clear()

    async def run(self) -> None:
        with self.scope:
            while True:
                if not self.unsent:
                    if self.links.retire(self):
                        return  # no route leads here any more and nothing is held
                    await self._work.wait()
                    continue
                if self.url is None or trio.current_time() < self.fallback_until:
                    await self._relay_head()
                    continue
                try:
                    await self._direct()
                except Exception as exc:  # a group from the connection's nursery too
                    # unreachable, refused, or the connection broke: the rest goes through
                    # the dispatcher for a while (what was not acknowledged, again)
                    self.last_error = repr(exc)
                self._requeue()
                self.fallback_until = trio.current_time() + RETRY_DIRECT

    async def _relay_head(self) -> None:
        """The first batch through the dispatcher (awaited until it delivered it)."""
        head = self.unsent[0]
        await self.links.relay(head)
        self.relayed += 1
        if self.unsent and self.unsent[0] is head:
            self.unsent.popleft()
            self.held -= len(head.msgs)
            self._freed()

    async def _direct(self) -> None:
        assert self.url is not None
        with trio.fail_after(CONNECT_SECONDS):
            ws = await trio_websocket.connect_websocket_url(
                self.links.nursery,
                self.url,
                max_message_size=MAX_FRAME,
                receive_buffer_size=RECEIVE_BYTES,
            )
        try:
            with trio.fail_after(CONNECT_SECONDS):
                await ws.send_message(
                    orjson.dumps(
                        {"t": "hello", "from": self.links.runner_id, "session": self.session}
                    )
                )
                hello = orjson.loads(await ws.get_message())
            self.connections += 1
            self.credit = int(hello.get("credit") or CREDIT)
            self._requeue()
            self._acked(int(hello.get("acked") or 0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_acks, ws)
                while True:
                    while self.unsent:
                        # what waits goes in one frame (up to FRAME_BATCHES batches)
                        frame = []
                        while self.unsent and len(frame) < FRAME_BATCHES:
                            b = self.unsent.popleft()
                            self.unacked.append(b)
                            r = b.route
                            frame.append(
                                {
                                    "seq": b.seq,
                                    "flow": b.flow,
                                    "cred": r.cred,
                                    "dst": r.dst,
                                    "port": r.dst_port,
                                    "msgs": b.msgs,
                                }
                            )
                        await ws.send_message(orjson.dumps({"batches": frame}))
                    await self._work.wait()
        finally:
            with trio.move_on_after(1, shield=True):
                await ws.aclose()

    async def _read_acks(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            frame = orjson.loads(await ws.get_message())
            if frame.get("t") == "refused":
                # nothing after it on this connection was taken: it goes again (through
                # the dispatcher first), then the rest
                raise Refused(str(frame.get("why")))
            self._acked(int(frame["seq"]))


class PeerLinks:
    """The sending side of one runner: a :class:`PeerSender` per target runner and the
    routes of each flow part."""

    def __init__(self, relay: Callable[[Batch], Awaitable[None]]) -> None:
        #: delivers a batch through the dispatcher (the fallback), awaited
        self.relay = relay
        #: this runner's id (from the link's hello)
        self.runner_id = ""
        #: (target runner id, flow id) -> its sender: one connection per runner pair and
        #: flow, so a paused or slow flow holds up no other flow's wires
        self.senders: dict[tuple[str, str], PeerSender] = {}
        #: flow id -> (module, port) -> its routes
        self.routes: dict[str, dict[tuple[str, str], list[Route]]] = {}
        #: flow id -> "src.port->dst.port" -> messages delivered directly
        self.delivered: dict[str, dict[str, int]] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "PeerLinks.run is not running"
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def count(self, b: Batch) -> None:
        wire = f"{b.src}.{b.src_port}->{b.route.dst}.{b.route.dst_port}"
        counts = self.delivered.setdefault(b.flow, {})
        counts[wire] = counts.get(wire, 0) + len(b.msgs)

    def _sender(self, flow: str, route: Route) -> PeerSender:
        sender = self.senders.get((route.runner, flow))
        if sender is not None and sender.url != route.url:
            sender.url = route.url  # the runner restarted on another port
            sender.fallback_until = 0.0
        if sender is None:
            sender = PeerSender(self, route.runner, route.url)
            self.senders[(route.runner, flow)] = sender
            self.nursery.start_soon(sender.run)
        return sender

    def set_routes(
        self, flow: str, routes: list[dict[str, Any]]
    ) -> dict[tuple[str, str], list[Route]]:
        """The flow part's routes from a ``deploy``; batches waiting for a target that
        moved go to its new place, in order, before anything newer."""
        table: dict[tuple[str, str], list[Route]] = {}
        for r in routes:
            route = Route(
                dst=str(r["to"]),
                dst_port=str(r["toPort"]),
                runner=str(r["runner"]),
                url=r.get("peer") or None,
                cred=r.get("credential") or None,
            )
            table.setdefault((str(r["from"]), str(r["fromPort"])), []).append(route)
        self.routes[flow] = table
        where = {(r.dst, r.dst_port): r for rs in table.values() for r in rs}
        for (_, of), sender in list(self.senders.items()):
            if of != flow:
                continue
            sender._freed()  # a sink waiting for its credit looks its route up again
            if sender.url is not None:
                sender.fallback_until = 0.0  # a new deploy: try directly again
            moved = sender.take_flow(
                flow,
                lambda b, s=sender: (
                    (r := where.get((b.route.dst, b.route.dst_port))) is not None
                    and r.runner == s.runner_id
                ),
            )
            for b in moved:
                new = where.get((b.route.dst, b.route.dst_port))
                if new is not None:  # else the wire is gone: nobody waits for these
                    b.route = new
                    self._sender(flow, new).append(b)
        self._close_idle()
        return table

    def retire(self, sender: PeerSender) -> bool:
        """Drop an empty sender no route uses any more; whether it was dropped."""
        for key, known in list(self.senders.items()):
            if known is sender:
                if sender.held or any(
                    r.runner == key[0] for rs in self.routes.get(key[1], {}).values() for r in rs
                ):
                    return False
                del self.senders[key]
                return True
        return True

    def forget(self, flow: str) -> None:
        self.routes.pop(flow, None)
        self._close_idle()

    def _close_idle(self) -> None:
        used = {
            (r.runner, flow)
            for flow, table in self.routes.items()
            for rs in table.values()
            for r in rs
        }
        for key, sender in list(self.senders.items()):
            if key not in used and not sender.held:
                sender.scope.cancel()
                del self.senders[key]

    async def send(self, flow: str, module: str, port: str, route: Route, msgs: list[Any]) -> None:
        """Queue a batch for the target of ``route`` where it is now, waiting while that
        target has no credit left. The route is looked up again after every wait: a
        deploy may have placed the target elsewhere meanwhile (its old runner dead)."""
        while True:
            now = next(
                (
                    r
                    for rs in self.routes.get(flow, {}).values()
                    for r in rs
                    if (r.dst, r.dst_port) == (route.dst, route.dst_port)
                ),
                None,
            )
            if now is None:
                return  # the wire is gone (or the flow): nobody waits for these
            sender = self._sender(flow, now)
            if not sender.full:
                sender.append(Batch(flow, module, port, now, msgs))
                return
            await sender.room()
