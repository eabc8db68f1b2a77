"""Direct host-to-host channels of one flow (PROTOCOL.md section 11, protocol 1.2).

A *channel* is a FIFO from one host instance X (the sender) to another host instance Y
(the receiver) of the same flow, both listing ``direct`` in ``hello.features``. X writes
the messages of its cross-host wires to Y straight into it (one pipe crossing and one
wake-up less than through the runner) and ALWAYS also sends the runner its usual
``emit``, with ``d`` (the frame's number) and ``ch`` (the channels it went through).
The runner keeps that copy: it is not queued for Y but held per channel, in order, until
Y's ``done`` acknowledges the channel up to it (``"direct": {c: k}``). So the runner is
still the keeper of every unacknowledged message, and of the bounds: held copies count
in the flow's ``pending`` and in the target module's depth (``has_room``).

Cutting a channel (the sender gave up on a full pipe, a host ended, a swap, the
debugger, a watch) puts the held copies in Y's queues, marked ``(c, k)``; Y skips those
it handled already (it remembers, per channel and target, the last ``d`` it handled),
so nothing is lost and per-wire order holds. Copies that arrive later for a cut channel
are routed like any emit, still marked.

Opening is lazy on the receiving side: the runner gives X the channel in its ``route``
table right away, but tells Y to ``listen`` only after X's first frame on it arrived and
nothing waits in Y's queues for the channel's targets: what X emitted before it switched
reaches Y through the runner, and Y's runner pipe is read in order, so Y handles those
before it reads the channel (direct messages never overtake runner-delivered ones of the
same wire). A channel re-opens when the flow allows it (running, not journaled, not
watched, no breakpoint, not paused, no swap) and nothing is queued or held for its
targets.

Resource handling: the runner creates each channel's FIFO in Y's private FIFO directory
and holds it open O_RDWR (so X's non-blocking open never fails with ENXIO and the pipe
never reports end of file) until the channel is cut; then it closes its fd and unlinks
the FIFO. Error handling: nothing here raises; a FIFO that cannot be made leaves the pair
on the runner path.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any

from .framing import encode_frame
from .pipes import grow_pipe
from .status import FlowStatus, InstanceStatus

if TYPE_CHECKING:
    from pathlib import Path

    from .flowrun import FlowRun
    from .instance import RuntimeInstance
    from .queues import Delivery

__all__ = ["DIRECT", "Channel", "DirectChannels"]

#: the ``hello.features`` entry of a host that reads and writes channels
DIRECT = "direct"

#: cut channels remembered per flow (for late acknowledgements and copies that name
#: them); a copy naming a forgotten one is delivered unmarked: maybe twice, never lost
KEEP_CUT = 256


class Channel:
    """One FIFO from ``sender`` to ``receiver`` (see the module docstring)."""

    __slots__ = (
        "acked",
        "confirmed",
        "fd",
        "id",
        "listening",
        "open",
        "path",
        "pending",
        "receiver",
        "receiver_proc",
        "seen",
        "sender",
        "sender_proc",
        "targets",
    )

    def __init__(
        self,
        cid: str,
        sender: RuntimeInstance,
        receiver: RuntimeInstance,
        path: Path,
        fd: int,
        targets: frozenset[str],
    ) -> None:
        self.id = cid
        self.sender = sender
        self.receiver = receiver
        self.sender_proc = sender.process
        self.receiver_proc = receiver.process
        self.path = path
        self.fd = fd
        #: the receiver's modules this channel feeds
        self.targets = targets
        self.open = True
        #: a frame of the sender's came through it (the sender switched)
        self.seen = False
        #: the receiver was told to read it
        self.listening = False
        #: copies held for the receiver: (d, delivery), in order
        self.pending: deque[tuple[int, Delivery]] = deque()
        #: the highest d the receiver acknowledged
        self.acked = 0
        #: after a cut: the receiver said it stopped reading (its last acknowledgement
        #: of the channel came before), or it is gone, or it never listened
        self.confirmed = False


class DirectChannels:
    """The channels of one flow; the flow calls it from its routing and its readers."""

    def __init__(self, flow: FlowRun) -> None:
        self.flow = flow
        self.enabled = flow.config.direct
        #: every channel of the flow by id, cut ones included (late acks and copies)
        self.channels: dict[str, Channel] = {}
        self._open: dict[tuple[RuntimeInstance, RuntimeInstance], Channel] = {}
        #: (sender, receiver) -> the receiver's modules the sender's wires reach
        self._pairs: dict[tuple[RuntimeInstance, RuntimeInstance], frozenset[str]] = {}
        self._want_open = True
        self._unlistened = 0
        self._next = 0
        self._cut: deque[str] = deque()
        #: cut channels whose receiver has not confirmed yet (pruned as they confirm)
        self._unconfirmed: list[Channel] = []
        #: channels cut so far
        self.cuts = 0

    # ------------------------------------------------------------------ wiring

    def configure(self) -> None:
        """The flow installed a new wiring: cut every channel and learn the pairs."""
        self.cut_all()
        flow = self.flow
        by_qid = {flow.qualified(m.id): m.host for m in flow.flow.modules}
        pairs: dict[tuple[RuntimeInstance, RuntimeInstance], set[str]] = {}
        for (module, _port), targets in flow._routes.items():
            host = by_qid.get(module)
            sender = flow.instances.get(host) if host is not None else None
            if sender is None:
                continue
            for target in targets:
                if target is not None and target[0] is not sender:
                    pairs.setdefault((sender, target[0]), set()).add(target[1])
        self._pairs = {pair: frozenset(t) for pair, t in pairs.items()}
        self._want_open = True

    def allowed(self) -> bool:
        flow = self.flow
        return (
            self.enabled
            and flow.status is FlowStatus.RUNNING
            and flow.journal is None
            and not flow.watched
            and not flow.debugger.active
        )

    def route_frame(self, sender: RuntimeInstance) -> dict[str, Any]:
        """``sender``'s route table with its open channels' ``direct`` targets."""
        routes: dict[str, Any] = {
            m: {p: dict(spec) for p, spec in ports.items()} for m, ports in sender.routes.items()
        }
        channels: dict[str, str] = {}
        flow = self.flow
        for (src, receiver), c in self._open.items():
            if src is not sender:
                continue
            channels[c.id] = str(c.path)
            for (module, port), targets in flow._routes.items():
                spec = routes.get(module, {}).get(port)
                if spec is None:
                    continue
                for target in targets:
                    if target is not None and target[0] is receiver:
                        spec.setdefault("direct", []).append([c.id, target[1], target[2]])
        frame: dict[str, Any] = {"op": "route", "routes": routes}
        if channels:
            frame["channels"] = channels
        return frame

    # ------------------------------------------------------------------ the hot path

    def poll(self) -> None:
        """After a batch of a reader: tell receivers to listen, open what may open."""
        if self._unlistened:
            for c in list(self._open.values()):
                if c.seen and not c.listening and self._clear(c.receiver, c.targets):
                    self._listen(c)
        if self._want_open:
            self._try_open()

    def channel(self, ch: str, receiver: RuntimeInstance) -> Channel | None:
        """Which of the channels ``ch`` (ids separated by spaces, from an ``emit``)
        leads to ``receiver``, if any."""
        channels = self.channels
        for cid in ch.split(" ") if " " in ch else (ch,):
            c = channels.get(cid)
            if c is not None and c.receiver is receiver:
                return c
        return None

    def hold(self, c: Channel, d: int, delivery: Delivery) -> None:
        """Keep the copy of a message that went through the open channel ``c``."""
        if not c.seen:
            c.seen = True
            self._unlistened += 1
        c.pending.append((d, delivery))
        c.receiver.queues.reserve(delivery.module, delivery.count)

    def acknowledged(self, receiver: RuntimeInstance, acks: Any) -> None:
        """The receiver's ``done`` said ``"direct": {c: k}``."""
        if not isinstance(acks, dict):
            return
        flow = self.flow
        for cid, k in acks.items():
            c = self.channels.get(cid)
            if c is None or c.receiver is not receiver or not isinstance(k, int) or k <= c.acked:
                continue
            c.acked = k
            if not c.open:
                # a late acknowledgement: copies queued at the cut that it covers were
                # handled from the channel (the receiver would skip them; a hot swap
                # may move them to another host, which would not)
                dropped = receiver.queues.drop_marked(cid, k, c.targets)
                if dropped:
                    receiver.queues.delivered_msgs += dropped
                    flow.settle(dropped)
                continue
            pending = c.pending
            settled = 0
            queues = receiver.queues
            while pending and pending[0][0] <= k:
                _, delivery = pending.popleft()
                queues.release(delivery.module, delivery.count)
                settled += delivery.count
            if settled:
                queues.delivered_msgs += settled
                flow.settle(settled)

    # ------------------------------------------------------------------ cutting

    def host_cut(self, instance: RuntimeInstance, cid: Any) -> None:
        """A host wrote ``cut``: the sender gave the channel up (a full pipe, a failed
        write), or the receiver confirms it stopped reading it."""
        c = self.channels.get(cid) if isinstance(cid, str) else None
        if c is None:
            return
        if c.sender is instance:
            self.cut(c)
        elif c.receiver is instance and not c.open:
            self._confirm(c)

    def _confirm(self, c: Channel) -> None:
        if not c.confirmed:
            c.confirmed = True
            self._unconfirmed = [u for u in self._unconfirmed if not u.confirmed]
            c.receiver.wake_drain()

    def unconfirmed(self, receiver: RuntimeInstance) -> bool:
        """Whether a channel to ``receiver`` was cut and it has not said it stopped
        reading it (its last acknowledgements may still come)."""
        return any(
            not c.confirmed and c.receiver is receiver and not c.open for c in self._unconfirmed
        )

    def cut_instance(self, instance: RuntimeInstance, *, gone: bool = False) -> None:
        """Cut the channels of a host that ended (``gone``: nothing is written to it any
        more) or is paused (a swap, the debugger)."""
        for c in list(self._open.values()):
            if c.sender is instance or c.receiver is instance:
                self.cut(c, gone=instance if gone else None)
        if gone:
            for c in self._unconfirmed:
                if c.receiver is instance:
                    c.confirmed = True  # it reads nothing any more
        self._unconfirmed = [c for c in self._unconfirmed if not c.confirmed]

    def cut_all(self) -> None:
        for c in list(self._open.values()):
            self.cut(c)

    def cut(self, c: Channel, *, gone: RuntimeInstance | None = None) -> None:
        """Cut ``c``: the receiver stops reading it, the held copies go to its queues
        (marked), the sender gets a route table without it. ``gone``: a host that ended."""
        if not c.open:
            return
        c.open = False
        del self._open[(c.sender, c.receiver)]
        receiver, sender = c.receiver, c.sender
        if c.seen and not c.listening:
            self._unlistened -= 1
        if c.listening and receiver is not gone and receiver.process is c.receiver_proc:
            receiver.send_nowait(encode_frame({"op": "cut", "ch": c.id}))
            self._unconfirmed.append(c)
        else:
            c.confirmed = True
        queues = receiver.queues
        for d, delivery in c.pending:
            queues.release(delivery.module, delivery.count)
            delivery.ch = c.id
            delivery.d = d
            queues.append(delivery)
        c.pending.clear()
        if (
            sender is not gone
            and sender.process is c.sender_proc
            and sender.status is InstanceStatus.RUNNING
        ):
            sender.send_nowait(encode_frame(self.route_frame(sender)))
        try:
            os.close(c.fd)
        except OSError:
            pass
        try:
            os.unlink(c.path)
        except OSError:
            pass
        self.cuts += 1
        self._cut.append(c.id)
        if len(self._cut) > KEEP_CUT:
            self.channels.pop(self._cut.popleft(), None)
        self._want_open = True
        self.flow._touched.add(receiver)
        self.flow.notify()

    # ------------------------------------------------------------------ opening

    def _clear(self, receiver: RuntimeInstance, targets: frozenset[str]) -> bool:
        queues = receiver.queues
        return all(queues.depth(t) == 0 for t in targets)

    def _listen(self, c: Channel) -> None:
        if c.receiver.process is not c.receiver_proc:
            self.cut(c)  # its receiver's process ended meanwhile
            return
        c.listening = True
        self._unlistened -= 1
        c.receiver.send_nowait(encode_frame({"op": "listen", "ch": c.id, "path": str(c.path)}))

    def _try_open(self) -> None:
        if not self.allowed():
            return
        waiting = False
        for (sender, receiver), targets in self._pairs.items():
            if (sender, receiver) in self._open:
                continue
            if not (_ready(sender) and _ready(receiver)):
                waiting = True
                continue
            queues = receiver.queues
            if any(queues.depth(t) or queues.reserved(t) for t in targets):
                waiting = True  # re-open only when the wire is empty
                continue
            if not self._open_channel(sender, receiver, targets):
                continue
        self._want_open = waiting

    def _open_channel(
        self, sender: RuntimeInstance, receiver: RuntimeInstance, targets: frozenset[str]
    ) -> bool:
        proc = receiver.process
        fifos = getattr(proc, "fifos", None)
        if fifos is None:
            return False
        self._next += 1
        cid = f"c{self._next}"
        path = fifos.directory / f"ch-{cid}"
        try:
            os.mkfifo(path, 0o600)
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            receiver._log(None, "warning", f"no direct channel from {sender.name}: {exc}")
            return False
        grow_pipe(fd)
        c = Channel(cid, sender, receiver, path, fd, targets)
        self.channels[cid] = c
        self._open[(sender, receiver)] = c
        sender.send_nowait(encode_frame(self.route_frame(sender)))
        return True

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "open": sorted(c.id for c in self._open.values()),
            "cut": self.cuts,
            "held": sum(d.count for c in self._open.values() for _, d in c.pending),
        }


def _ready(instance: RuntimeInstance) -> bool:
    proc = instance.process
    return (
        proc is not None
        and instance.direct_ready
        and instance.status is InstanceStatus.RUNNING
        and not instance.queues.paused
        and not instance._stopping
        and DIRECT in (proc.hello.get("features") or ())
    )
