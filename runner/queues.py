"""The delivery bookkeeping of one runtime instance, sans I/O.

:class:`DeliveryQueues` owns, for the modules of one host: a queue per module of the
deliveries not yet sent (bounded by ``capacity`` messages, :meth:`~DeliveryQueues.has_room`),
the window of deliveries sent and not yet acknowledged (bounded by ``window`` messages),
their sequence numbers, and what goes again after a host restart. It knows no trio, no
process and no pipe: :class:`~.instance.RuntimeInstance` tells it what happened (messages
routed, a ``done`` read, a host gone, a handler hung) and writes the frames
:meth:`~DeliveryQueues.take` hands back.

The rules (runner/README.md, "Queues and backpressure"; PROTOCOL.md sections 5 and 6):

- Per module, deliveries leave in the order they came.
- A module's deliveries are taken only while every queue it feeds has room
  (``downstream``: directly or through same-host wires, in this host or another), so a
  slow module fills its own queue and its producers stop being fed. Queues may overshoot
  their capacity by what one delivery emits.
- A module's deliveries also wait while a module its same-host wires lead to has
  deliveries queued here that came over such a wire before it became same-host (a hot
  swap moved that module next to its source, a debugged or watched flow got its local
  wires back, a window was put back after the host ended): the host would otherwise pass
  newer messages along inside itself before the runner sends the older ones
  (:meth:`~DeliveryQueues.set_local`; a cycle of such wires is not ordered).
- ``done`` is cumulative: acknowledging ``seq`` acknowledges every delivery up to it.
- After a host is gone, the window goes back in front of the queues, in its order, and
  is numbered again when taken: at least once, per-module order kept, nothing lost.
- While ``paused`` nothing is taken; the queues keep filling.

Messages are never copied: a routed list (or raw body) may be shared by the queues of
several modules, so a delivery's ``msgs`` is rebound to a new list when it is cut, never
changed in place. Counting uses :attr:`Delivery.count`, which never parses a raw body;
only cutting or editing one (the debugger, a hung message) parses it.

Error handling: :meth:`~DeliveryQueues.replace` raises ``IndexError``; nothing else here
raises.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["Delivery", "DeliveryQueues", "Gate", "QueueStatistics", "parse_body"]

#: deliveries one take moves at most: bounds one write to a host (and the time the
#: host's send lock is held), so a long backlog goes out in several writes
_TAKE_FRAMES = 512


class Delivery:
    """Messages for one module's input port, sent as one ``deliver`` frame.

    The messages are held one of two ways, and :attr:`count` is always their number:

    - ``body``: the exact bytes of a JSON array, as a host with the ``raw`` feature
      emitted them (PROTOCOL.md section 10). They go to the receiving host as they are,
      never parsed on the way; :attr:`msgs` (or :meth:`messages`) parses them on demand,
      for whoever must look at them (the debugger, a hung report, a swap that drops
      them), and keeps both.
    - ``msgs``: a list of values (an inject, a host without ``raw``); :meth:`encode`
      writes it.

    Assigning :attr:`msgs` (an edit, a cut) drops ``body``: the list is then the truth.
    A list may be shared by several deliveries (a fan-out): it is rebound, never changed
    in place. Deliveries compare by identity."""

    __slots__ = (
        "_msgs", "body", "ch", "count", "d", "end", "hangs", "module", "port", "seq", "src",
    )  # fmt: skip

    def __init__(
        self,
        module: str,
        port: str,
        msgs: list[Any] | None = None,
        seq: int = 0,
        hangs: int = 0,
        *,
        body: bytes | None = None,
        count: int | None = None,
        end: int = 0,
        src: str | None = None,
    ) -> None:
        self.module = module
        self.port = port
        #: the module that emitted them (qualified id; None: injected)
        self.src = src
        #: 0 while waiting in a queue; the frame's seq once taken into the window
        self.seq = seq
        #: how often the host reported a handler hung on this frame without naming the message
        self.hangs = hangs
        if msgs is None and body is None:
            msgs = []
        self._msgs = msgs
        #: the messages as the JSON array bytes an emitting host wrote, or None
        self.body = body if msgs is None else None
        #: the number of messages (known without parsing ``body``)
        self.count = len(msgs) if msgs is not None else (count if count is not None else 0)
        #: a journaled flow's: the position just past its last message in the module's
        #: stream (runner/journal.py); 0: not journaled
        self.end = end
        #: a copy of a frame that went through a direct channel (runner/direct.py): the
        #: channel and the frame's number there; the host skips what it handled already
        self.ch: str | None = None
        self.d = 0

    @property
    def msgs(self) -> list[Any]:
        msgs = self._msgs
        if msgs is None:
            msgs = self._msgs = parse_body(self.body or b"[]", self.count)
        return msgs

    @msgs.setter
    def msgs(self, value: list[Any]) -> None:
        self._msgs = value
        self.body = None
        self.count = len(value)

    def messages(self) -> list[Any]:
        """The messages as values (parsed from ``body`` the first time)."""
        return self.msgs

    @property
    def parsed(self) -> bool:
        """Whether the messages were parsed (or never were bytes)."""
        return self._msgs is not None

    def encode(self) -> bytes:
        body = self.body
        if body is None:
            body = orjson.dumps(self._msgs)
        # a copy of a direct channel's frame carries its mark (PROTOCOL.md section 11)
        mark = b"" if self.ch is None else b'"ch":%s,"d":%d,' % (orjson.dumps(self.ch), self.d)
        return b"".join(
            (
                b'{"op":"deliver","seq":%d,' % self.seq,
                mark,
                b'"module":',
                orjson.dumps(self.module),
                b',"port":',
                orjson.dumps(self.port),
                b',"msgs":',
                body,
                b"}\n",
            )
        )

    def __repr__(self) -> str:
        what = (
            f"msgs={self._msgs!r}"
            if self._msgs is not None
            else f"body={len(self.body or b'')} bytes"
        )
        return (
            f"Delivery({self.module!r}, {self.port!r}, {what}, count={self.count}, seq={self.seq})"
        )


def parse_body(body: bytes, count: int) -> list[Any]:
    """The messages of a raw ``body``. A body that is not a JSON array (a host that broke
    the ``raw`` rules) gives ``count`` strings saying so, so the counts stay right."""
    try:
        msgs = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msgs = None
        problem = f"(unreadable message body from the emitting host: {exc})"
    else:
        problem = "(message body from the emitting host is not an array)"
    if not isinstance(msgs, list):
        return [problem] * count
    return msgs


class Gate(Protocol):
    """Decides how many of a module's waiting messages may go (the debugger)."""

    def allowance(self, qid: str, queue: deque[Delivery]) -> int | None:
        """How many messages at the head of ``queue`` may go now; None: all of them."""

    def taken(self, qid: str, n: int) -> None:
        """``n`` messages of ``qid`` were taken."""


@attrs.frozen
class QueueStatistics:
    #: messages waiting in the queues
    queued: int
    #: messages sent and not yet acknowledged
    unacknowledged: int
    #: messages acknowledged by a host
    delivered: int
    #: messages put back in the queues because their host went away unacknowledged
    redelivered: int


def _nothing() -> None:
    pass


def _head_end(d: Delivery, n: int) -> int:
    """The journal position after the first ``n`` messages of ``d`` (0: not journaled)."""
    return d.end - (d.count - n) if d.end else 0


class DeliveryQueues:
    """Queues and window of one runtime instance; see the module docstring.

    ``on_room`` is called when a take gives a full queue room again: producers waiting
    for it (writers of upstream hosts, an inject) may go on."""

    def __init__(self, capacity: int, window: int, on_room: Callable[[], None] = _nothing) -> None:
        self.capacity = capacity
        self.window = window
        self._on_room = on_room
        #: module -> what the deliveries to it can produce messages for: (queues, module)
        self.downstream: dict[str, list[tuple[DeliveryQueues, str]]] = {}
        #: (source, target) of the wires this host delivers inside itself, and per module
        #: the modules those wires lead to from it (see :meth:`set_local`)
        self.local_wires: frozenset[tuple[str, str]] = frozenset()
        self.blockers: dict[str, tuple[str, ...]] = {}
        #: modules whose queue may hold deliveries of a wire that is local now
        self._maybe_stale: set[str] = set()
        #: while set, :meth:`take` takes nothing
        self.paused = False
        self._queues: dict[str, deque[Delivery]] = {}
        self._queued: dict[str, int] = {}
        self.queued_msgs = 0
        #: messages held for a module by the runner while they travel a direct channel
        #: (runner/direct.py): they count against its capacity
        self._reserved: dict[str, int] = {}
        self._unacked: deque[Delivery] = deque()
        self.unacked_msgs = 0
        self._next_seq = 1
        self.delivered_msgs = 0
        self.redelivered_msgs = 0

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            queued=self.queued_msgs,
            unacknowledged=self.unacked_msgs,
            delivered=self.delivered_msgs,
            redelivered=self.redelivered_msgs,
        )

    # ------------------------------------------------------------------ the queues

    def depth(self, module: str) -> int:
        """Messages waiting for ``module`` (not sent yet)."""
        return self._queued.get(module, 0)

    def has_room(self, module: str) -> bool:
        return self._queued.get(module, 0) + self._reserved.get(module, 0) < self.capacity

    def reserved(self, module: str) -> int:
        """Messages for ``module`` that travel a direct channel, not yet acknowledged."""
        return self._reserved.get(module, 0)

    def reserve(self, module: str, n: int) -> None:
        self._reserved[module] = self._reserved.get(module, 0) + n

    def release(self, module: str, n: int) -> None:
        """``n`` reserved messages of ``module`` were handled or put in its queue."""
        before = self._reserved.get(module, 0)
        after = before - n
        self._reserved[module] = after
        if (
            before + self._queued.get(module, 0)
            >= self.capacity
            > after + self._queued.get(module, 0)
        ):
            self._on_room()

    def set_local(
        self, local_wires: Iterable[tuple[str, str]], blockers: dict[str, tuple[str, ...]]
    ) -> None:
        """The host's wires inside itself changed (a swap, the debugger, a watch). From now
        on a module's deliveries wait while a module its local wires lead to
        (``blockers``) still has deliveries queued here that came over such a wire before
        it was local (a moved module's queue, messages held while debugged, a window put
        back after a host ended): else the host would hand the newer messages on inside
        itself before the runner sends the older ones, and per-wire order would break."""
        self.local_wires = frozenset(local_wires)
        self.blockers = blockers
        self._maybe_stale = {m for m, q in self._queues.items() if q} if self.local_wires else set()

    def _stale(self, module: str) -> bool:
        """Whether ``module``'s queue holds deliveries of a wire that is local now."""
        if module not in self._maybe_stale:
            return False
        local = self.local_wires
        if any(
            d.src is not None and (d.src, module) in local for d in self._queues.get(module, ())
        ):
            return True
        self._maybe_stale.discard(module)
        return False

    def drop_marked(self, ch: str, upto: int, modules: Iterable[str]) -> int:
        """Remove the queued copies of direct channel ``ch`` with ``d <= upto`` (the
        receiving host handled them from the channel); the number of messages."""
        dropped = 0
        for module in modules:
            queue = self._queues.get(module)
            if not queue:
                continue
            keep = deque(d for d in queue if d.ch != ch or d.d > upto)
            if len(keep) == len(queue):
                continue
            n = sum(d.count for d in queue) - sum(d.count for d in keep)
            self._queues[module] = keep
            self._queued[module] -= n
            self.queued_msgs -= n
            dropped += n
        return dropped

    def append(self, d: Delivery) -> None:
        """Queue a delivery made elsewhere (a direct channel's held copy), last."""
        d.seq = 0
        if self.local_wires:
            self._maybe_stale.add(d.module)
        self._queues.setdefault(d.module, deque()).append(d)
        self._queued[d.module] = self._queued.get(d.module, 0) + d.count
        self.queued_msgs += d.count

    def enqueue(
        self,
        module: str,
        port: str,
        msgs: list[Any] | None,
        *,
        body: bytes | None = None,
        count: int = 0,
        end: int = 0,
        ch: str | None = None,
        direct: int = 0,
        src: str | None = None,
    ) -> None:
        """Queue messages for ``module``: ``msgs``, or (``msgs`` None) ``count`` messages
        as the raw JSON array ``body`` (:class:`Delivery`). Never refuses: producers ask
        :meth:`has_room` first (an inject), or were only fed while it had room (a routed
        emit). ``end``: the journal position (see :class:`Delivery`); ``ch``, ``direct``:
        the mark of a direct channel's copy (see :class:`Delivery`)."""
        queue = self._queues.get(module)
        if queue is None:
            queue = self._queues[module] = deque()
        d = Delivery(module, port, msgs, body=body, count=count, end=end, src=src)
        if ch is not None:
            d.ch = ch
            d.d = direct
        if src is not None and self.local_wires and (src, module) in self.local_wires:
            self._maybe_stale.add(module)  # routed before the wire was local
        queue.append(d)
        self._queued[module] = self._queued.get(module, 0) + d.count
        self.queued_msgs += d.count

    def queued(self, module: str) -> list[Delivery]:
        """What waits for ``module`` (not sent yet), in order."""
        return list(self._queues.get(module, ()))

    def take_queue(self, module: str) -> deque[Delivery]:
        """Remove and return what waits for ``module`` (not yet sent), in order."""
        queue = self._queues.pop(module, None) or deque()
        self.queued_msgs -= self._queued.pop(module, 0)
        return queue

    def prepend(self, module: str, deliveries: Iterable[Delivery]) -> int:
        """Put deliveries in front of what waits for ``module``, in their order; the
        number of messages."""
        deliveries = list(deliveries)
        if not deliveries:
            return 0
        queue = self._queues.setdefault(module, deque())
        queue.extendleft(reversed(deliveries))
        if self.local_wires:
            self._maybe_stale.add(module)
        n = sum(d.count for d in deliveries)
        self._queued[module] = self._queued.get(module, 0) + n
        self.queued_msgs += n
        return n

    def pop_one(self, module: str) -> Delivery | None:
        """Take the first message waiting for ``module``, as a delivery of its own."""
        queue = self._queues.get(module)
        if not queue:
            return None
        head = queue[0]
        one = Delivery(module, head.port, head.msgs[:1], end=_head_end(head, 1), src=head.src)
        head.msgs = head.msgs[1:]
        if not head.msgs:
            queue.popleft()
        self._queued[module] -= 1
        self.queued_msgs -= 1
        return one

    def replace(self, module: str, index: int, msg: Any | None) -> Any:
        """Edit (``msg``) or drop (``None``) the ``index``-th message waiting for
        ``module``; returns the old message. Raises IndexError."""
        position = 0
        queue = self._queues.get(module) or deque()
        for d in queue:
            if index < position + d.count:
                i = index - position
                old = d.msgs[i]
                if msg is None:
                    d.msgs = d.msgs[:i] + d.msgs[i + 1 :]
                    if not d.msgs:
                        queue.remove(d)
                    self._queued[module] -= 1
                    self.queued_msgs -= 1
                else:
                    d.msgs = [*d.msgs[:i], msg, *d.msgs[i + 1 :]]
                return old
            position += d.count
        raise IndexError(index)

    # ------------------------------------------------------------------ the window

    def take(self, gate: Gate | None = None) -> list[bytes]:
        """Move the deliveries that may go now into the window, numbered; their frames.

        ``gate`` (the debugger, while the flow is debugged) limits each module."""
        chunks: list[bytes] = []
        window = self.window
        if self.paused or self.unacked_msgs >= window or not self.queued_msgs:
            return chunks
        capacity = self.capacity
        unacked = self._unacked
        freed = False
        for module, queue in self._queues.items():
            if not queue:
                continue
            if not all(q.has_room(m) for q, m in self.downstream.get(module, ())):
                continue
            if self._maybe_stale and any(self._stale(b) for b in self.blockers.get(module, ())):
                continue  # older messages for where its local wires lead go first
            limit = gate.allowance(module, queue) if gate is not None else None
            if limit == 0:
                continue
            taken = 0
            while queue and self.unacked_msgs < window and len(chunks) < _TAKE_FRAMES:
                if limit is not None and taken >= limit:
                    break
                d = queue[0]
                if limit is not None and taken + d.count > limit:
                    # Split the delivery: only the allowed messages go.
                    keep = limit - taken
                    d = Delivery(d.module, d.port, d.msgs[:keep], end=_head_end(d, keep), src=d.src)
                    queue[0].msgs = queue[0].msgs[keep:]
                else:
                    queue.popleft()
                n = d.count
                taken += n
                d.seq = self._next_seq
                self._next_seq += 1
                unacked.append(d)
                self.unacked_msgs += n
                chunks.append(d.encode())
            if gate is not None and taken:
                gate.taken(module, taken)
            before = self._queued[module]
            self._queued[module] = before - taken
            self.queued_msgs -= taken
            if before >= capacity > before - taken:
                freed = True
        if freed:
            self._on_room()
        return chunks

    def admit(self, deliveries: Iterable[Delivery]) -> None:
        """Number deliveries that bypass the queues (a debugger step) and put them in
        the window, to be sent by the caller."""
        for d in deliveries:
            d.seq = self._next_seq
            self._next_seq += 1
            self._unacked.append(d)
            self.unacked_msgs += d.count

    def ack(self, seq: int, consumed: dict[str, int] | None = None) -> int:
        """The host handled every delivery up to ``seq``: the number of messages that
        left the window. ``consumed`` (a journaled flow's) gets, per module, the journal
        position its stream is consumed to."""
        acked = 0
        unacked = self._unacked
        while unacked and unacked[0].seq <= seq:
            d = unacked.popleft()
            acked += d.count
            if consumed is not None and d.end:
                consumed[d.module] = d.end
        if acked:
            self.unacked_msgs -= acked
            self.delivered_msgs += acked
        return acked

    @property
    def in_flight(self) -> bool:
        """Whether any delivery was sent and not acknowledged."""
        return bool(self._unacked)

    def oldest_in_flight(self) -> Delivery | None:
        return self._unacked[0] if self._unacked else None

    def drop_unreadable(self) -> list[tuple[Delivery, str]]:
        """The host is gone: take out of the window every raw delivery whose body is not
        a JSON array of its count (a host that broke the ``raw`` rules, section 10), with
        what is wrong with it. Delivered again, it would end the next host too: a crash
        loop made by another module. Parses the window's raw bodies: only after a host
        ended, never on the way."""
        dropped = []
        for d in self._unacked:
            if d.body is None or d.parsed:
                continue
            try:
                msgs = orjson.loads(d.body)
            except orjson.JSONDecodeError as exc:
                dropped.append((d, f"the body is not JSON ({exc})"))
                continue
            if not isinstance(msgs, list) or len(msgs) != d.count:
                dropped.append((d, f"the body is not a JSON array of {d.count} messages"))
        for d, _ in dropped:
            self._unacked.remove(d)
            self.unacked_msgs -= d.count
        return dropped

    def requeue_unacked(self) -> int:
        """The host is gone: put the window back in front of the queues, in order, to be
        numbered again when taken; the number of deliveries put back."""
        unacked = self._unacked
        if not unacked:
            return 0
        self.redelivered_msgs += self.unacked_msgs
        for d in reversed(unacked):
            d.seq = 0
            if self.local_wires:
                self._maybe_stale.add(d.module)
            self._queues.setdefault(d.module, deque()).appendleft(d)
            self._queued[d.module] = self._queued.get(d.module, 0) + d.count
            self.queued_msgs += d.count
        n = len(unacked)
        unacked.clear()
        self.unacked_msgs = 0
        return n

    def hung(self, seq: Any, index: Any) -> Delivery | None:
        """A handler ran past its timeout on delivery ``seq`` (PROTOCOL.md section 6).

        Returns what leaves the window for good, or None. With the message's ``index``
        in that frame: that one message (a delivery of its own). Without it: nothing the
        first time (the frame, or the oldest one if ``seq`` is unknown, goes again); the
        whole frame the second time (its ``hangs`` is then 2), so that a poison frame is
        not delivered forever."""
        target = next((d for d in self._unacked if d.seq == seq), None)
        if target is not None and isinstance(index, int) and 0 <= index < target.count:
            one = Delivery(target.module, target.port, [target.msgs[index]], target.seq)
            target.msgs = target.msgs[:index] + target.msgs[index + 1 :]
            self.unacked_msgs -= 1
            return one
        if target is None:
            target = self.oldest_in_flight()
            if target is None:
                return None
        target.hangs += 1
        if target.hangs < 2:
            return None
        self._unacked.remove(target)
        self.unacked_msgs -= target.count
        return target
