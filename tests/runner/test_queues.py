"""The delivery bookkeeping of a runtime instance (runner/queues.py), without processes,
pipes or trio: queues, backpressure, the window, acknowledgements, redelivery, and the
edits the debugger and the hot swap make."""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import orjson
import pytest

from fifoflow.runner.queues import Delivery, DeliveryQueues, QueueStatistics


def frames(chunks: list[bytes]) -> list[dict[str, Any]]:
    decoded = [orjson.loads(chunk) for chunk in chunks]
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") == 1 for chunk in chunks)
    assert all(f["op"] == "deliver" for f in decoded)
    return decoded


def msgs_of(decoded: list[dict[str, Any]], module: str) -> list[Any]:
    return [m for f in decoded if f["module"] == module for m in f["msgs"]]


def drain(queues: DeliveryQueues) -> list[dict[str, Any]]:
    """Take and acknowledge until nothing is left; every frame sent, in order."""
    sent: list[dict[str, Any]] = []
    while True:
        batch = frames(queues.take())
        if not batch:
            return sent
        sent.extend(batch)
        queues.ack(batch[-1]["seq"])


class Gate:
    """A debugger stand-in: a fixed allowance per module, and what was taken."""

    def __init__(self, allow: dict[str, int | None]) -> None:
        self.allow = allow
        self.taken_log: list[tuple[str, int]] = []

    def allowance(self, qid: str, queue: deque[Delivery]) -> int | None:
        return self.allow.get(qid)

    def taken(self, qid: str, n: int) -> None:
        self.taken_log.append((qid, n))


def test_each_module_gets_its_deliveries_in_order_numbered_in_one_sequence() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", [1, 2])
    q.enqueue("f/b", "in", ["x"])
    q.enqueue("f/a", "in", [3])
    q.enqueue("f/a", "side", [4])
    sent = frames(q.take())
    assert msgs_of(sent, "f/a") == [1, 2, 3, 4]
    assert [f["port"] for f in sent if f["module"] == "f/a"] == ["in", "in", "side"]
    assert msgs_of(sent, "f/b") == ["x"]
    assert [f["seq"] for f in sent] == [1, 2, 3, 4]
    assert (q.queued_msgs, q.unacked_msgs) == (0, 5)
    assert q.take() == []


def test_a_full_queue_has_no_room_and_tells_when_it_has_again() -> None:
    rooms: list[bool] = []
    q = DeliveryQueues(capacity=3, window=100, on_room=lambda: rooms.append(True))
    q.enqueue("f/a", "in", [1, 2])
    assert q.has_room("f/a")
    q.enqueue("f/a", "in", [3, 4])  # a routed emit may overshoot; it is never refused
    assert not q.has_room("f/a")
    assert q.has_room("f/b")
    assert q.statistics().queued == 4
    q.take()
    assert q.has_room("f/a")
    assert rooms == [True]
    q.enqueue("f/a", "in", [5])
    q.take()  # was not full: nobody to wake
    assert rooms == [True]


def test_a_module_is_not_fed_while_a_queue_it_feeds_is_full() -> None:
    consumer = DeliveryQueues(capacity=2, window=100)
    producer = DeliveryQueues(capacity=100, window=100)
    producer.downstream = {"f/p": [(consumer, "f/c")]}
    consumer.enqueue("f/c", "in", [1, 2])
    producer.enqueue("f/p", "in", ["p"])
    producer.enqueue("f/other", "in", ["o"])
    assert msgs_of(frames(producer.take()), "f/other") == ["o"]  # unrelated modules go on
    assert producer.take() == []
    consumer.take()
    assert msgs_of(frames(producer.take()), "f/p") == ["p"]


def test_the_window_bounds_messages_in_flight_and_acks_are_cumulative() -> None:
    q = DeliveryQueues(capacity=100, window=3)
    for i in range(1, 6):
        q.enqueue("f/a", "in", [i])
    assert [f["seq"] for f in frames(q.take())] == [1, 2, 3]
    assert q.take() == []
    assert q.ack(1) == 1
    assert [f["msgs"] for f in frames(q.take())] == [[4]]
    assert q.ack(0) == 0  # an old acknowledgement changes nothing
    assert q.ack(4) == 3  # done covers every seq up to its own (PROTOCOL.md section 5)
    assert q.ack(4) == 0
    assert [f["seq"] for f in frames(q.take())] == [5]
    assert q.ack(5) == 1
    assert not q.in_flight
    assert q.statistics() == QueueStatistics(queued=0, unacknowledged=0, delivered=5, redelivered=0)


def test_the_window_counts_messages_not_frames() -> None:
    q = DeliveryQueues(capacity=100, window=4)
    q.enqueue("f/a", "in", [1, 2, 3])
    q.enqueue("f/a", "in", [4, 5, 6])  # taken whole: the window may overshoot by one frame
    q.enqueue("f/a", "in", [7])
    assert [f["msgs"] for f in frames(q.take())] == [[1, 2, 3], [4, 5, 6]]
    assert q.unacked_msgs == 6
    assert q.take() == []


def test_after_a_crash_the_window_goes_again_first_in_order_and_nothing_is_lost() -> None:
    q = DeliveryQueues(capacity=100, window=4)
    for i in range(1, 5):
        q.enqueue("f/a", "in", [i])
    q.enqueue("f/b", "in", ["x"])
    q.enqueue("f/b", "in", ["y"])
    first = frames(q.take())
    assert msgs_of(first, "f/a") == [1, 2, 3, 4]
    assert q.ack(2) == 2  # 1 and 2 are handled; 3 and 4 were in the host when it died
    q.enqueue("f/a", "in", [5])  # routed while the host was down
    assert q.requeue_unacked() == 2
    assert (q.unacked_msgs, q.queued_msgs) == (0, 5)
    assert not q.in_flight
    again = drain(q)
    assert msgs_of(again, "f/a") == [3, 4, 5]
    assert msgs_of(again, "f/b") == ["x", "y"]
    assert [f["seq"] for f in again] == list(range(5, 5 + len(again)))  # numbered again
    delivered = [1, 2, *msgs_of(again, "f/a")]
    assert delivered == [1, 2, 3, 4, 5]
    assert q.statistics() == QueueStatistics(queued=0, unacknowledged=0, delivered=7, redelivered=2)
    assert q.requeue_unacked() == 0


def test_the_window_of_several_modules_goes_back_in_front_of_each_queue() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", [1])
    q.enqueue("f/b", "in", ["x"])
    q.take()
    q.enqueue("f/a", "in", [2])
    q.enqueue("f/b", "in", ["y"])
    q.requeue_unacked()
    assert [d.msgs for d in q.queued("f/a")] == [[1], [2]]
    assert [d.msgs for d in q.queued("f/b")] == [["x"], ["y"]]
    assert all(d.seq == 0 for d in q.queued("f/a"))


def test_paused_queues_keep_filling_and_send_nothing() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.paused = True
    q.enqueue("f/a", "in", [1])
    assert q.take() == []
    q.paused = False
    assert msgs_of(frames(q.take()), "f/a") == [1]


def test_a_gate_lets_only_its_allowance_go_and_splits_a_delivery() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    shared = [1, 2, 3]
    q.enqueue("f/a", "in", shared)
    q.enqueue("f/b", "in", ["x"])
    gate = Gate({"f/a": 2, "f/b": 0})
    assert [f["msgs"] for f in frames(q.take(gate))] == [[1, 2]]
    assert gate.taken_log == [("f/a", 2)]
    assert [d.msgs for d in q.queued("f/a")] == [[3]]
    assert shared == [1, 2, 3]  # cut by rebinding: the routed list may be shared
    assert q.queued_msgs == 2
    assert [f["msgs"] for f in frames(q.take(Gate({})))] == [[3], ["x"]]


def test_replace_and_drop_a_waiting_message_by_index() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    shared = ["a0", "a1"]
    q.enqueue("f/a", "in", shared)
    q.enqueue("f/b", "in", shared)  # the same routed list, queued for two modules
    q.enqueue("f/a", "in", ["a2"])
    assert q.replace("f/a", 1, "A1") == "a1"
    assert q.replace("f/a", 2, None) == "a2"  # the last message of a delivery: it goes
    assert [d.msgs for d in q.queued("f/a")] == [["a0", "A1"]]
    assert q.replace("f/a", 0, None) == "a0"
    assert [d.msgs for d in q.queued("f/a")] == [["A1"]]
    assert [d.msgs for d in q.queued("f/b")] == [["a0", "a1"]]
    assert shared == ["a0", "a1"]
    assert q.queued_msgs == 3
    with pytest.raises(IndexError):
        q.replace("f/a", 1, None)
    with pytest.raises(IndexError):
        q.replace("f/nobody", 0, "x")


def test_pop_one_takes_the_first_waiting_message_as_its_own_delivery() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    assert q.pop_one("f/a") is None
    q.enqueue("f/a", "side", [1, 2])
    q.enqueue("f/a", "in", [3])
    one = q.pop_one("f/a")
    assert one is not None
    assert (one.module, one.port, one.msgs, one.seq) == ("f/a", "side", [1], 0)
    assert [d.msgs for d in q.queued("f/a")] == [[2], [3]]
    assert q.pop_one("f/a").msgs == [2]  # type: ignore[union-attr]
    assert [d.msgs for d in q.queued("f/a")] == [[3]]
    assert q.queued_msgs == 1


def test_admitted_deliveries_join_the_window_in_sequence() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", [1])
    q.take()
    one = Delivery("f/b", "in", ["step"])
    q.admit([one])
    assert one.seq == 2
    assert q.unacked_msgs == 2
    assert q.ack(2) == 2


def test_take_queue_and_prepend_move_waiting_messages_to_another_host() -> None:
    old = DeliveryQueues(capacity=3, window=100)
    new = DeliveryQueues(capacity=3, window=100)
    old.enqueue("f/m", "in", [1, 2])
    old.enqueue("f/m", "in", [3])
    old.enqueue("f/other", "in", ["o"])
    new.enqueue("f/m", "in", [4])  # already routed to the module's new home
    moved = old.take_queue("f/m")
    assert [d.msgs for d in moved] == [[1, 2], [3]]
    assert old.queued_msgs == 1
    assert old.has_room("f/m")
    assert old.take_queue("f/m") == deque()
    assert new.prepend("f/m", moved) == 3
    assert new.prepend("f/m", []) == 0
    assert not new.has_room("f/m")
    assert msgs_of(drain(new), "f/m") == [1, 2, 3, 4]


def test_a_hung_message_named_by_index_leaves_the_window() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    shared = ["ok", "stuck", "later"]
    q.enqueue("f/a", "in", shared)
    q.take()
    removed = q.hung(1, 1)
    assert removed is not None
    assert (removed.module, removed.port, removed.msgs) == ("f/a", "in", ["stuck"])
    assert removed.hangs < 2
    assert q.unacked_msgs == 2
    assert shared == ["ok", "stuck", "later"]
    q.requeue_unacked()
    assert msgs_of(drain(q), "f/a") == ["ok", "later"]


def test_a_frame_that_hangs_twice_without_index_leaves_the_window() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", [1, 2])
    q.enqueue("f/a", "in", [3])
    q.take()
    assert q.hung(1, None) is None  # the first time, the frame goes again
    q.requeue_unacked()
    q.take()
    removed = q.hung(3, None)  # the same frame, numbered again
    assert removed is not None
    assert (removed.msgs, removed.hangs) == ([1, 2], 2)
    assert q.unacked_msgs == 1
    q.requeue_unacked()
    assert msgs_of(drain(q), "f/a") == [3]


def test_a_hang_on_an_unknown_frame_blames_the_oldest_one() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    assert q.hung(1, 0) is None  # nothing in flight: nothing to take out
    q.enqueue("f/a", "in", [1])
    q.enqueue("f/b", "in", [2])
    q.take()
    assert q.hung(99, 0) is None
    removed = q.hung(99, None)
    assert removed is not None
    assert (removed.module, removed.msgs) == ("f/a", [1])


def test_statistics_are_a_frozen_snapshot() -> None:
    q = DeliveryQueues(capacity=100, window=100)
    q.enqueue("f/a", "in", [1, 2])
    stats = q.statistics()
    assert stats == QueueStatistics(queued=2, unacknowledged=0, delivered=0, redelivered=0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.queued = 0  # type: ignore[misc]


def test_a_module_waits_while_where_its_local_wires_lead_has_older_messages_queued() -> None:
    # f/a -> f/b is a wire inside the host now; f/b still has messages routed to it over
    # that wire before (a moved module's queue): they go before anything of f/a's
    q = DeliveryQueues(capacity=100, window=2)
    q.enqueue("f/a", "in", ["new1", "new2"])
    q.enqueue("f/b", "in", ["old1"], src="f/a")
    q.enqueue("f/b", "in", ["other"])  # injected: no wire, no order with f/a
    q.enqueue("f/b", "in", ["old2"], src="f/a")
    q.set_local({("f/a", "f/b")}, {"f/a": ("f/b",)})
    sent = drain(q)
    assert [(f["module"], f["msgs"]) for f in sent] == [
        ("f/b", ["old1"]), ("f/b", ["other"]), ("f/b", ["old2"]), ("f/a", ["new1", "new2"]),
    ]  # fmt: skip
    # once nothing older waits, f/a goes at once (no scan: nothing may be stale)
    q.enqueue("f/a", "in", ["later"])
    q.enqueue("f/b", "in", ["x"])  # injected
    assert [f["module"] for f in frames(q.take())] == ["f/a", "f/b"]


def test_a_window_put_back_after_a_host_ended_keeps_the_local_wires_order() -> None:
    q = DeliveryQueues(capacity=100, window=10)
    q.enqueue("f/a", "in", ["new"])
    q.enqueue("f/b", "in", ["old"], src="f/a")  # routed over the wire, not local yet
    q.take()  # both sent; the wire becomes local; then the host ends
    q.set_local({("f/a", "f/b")}, {"f/a": ("f/b",)})
    q.requeue_unacked()
    assert [f["module"] for f in drain(q)] == ["f/b", "f/a"]


def test_a_cycle_of_local_wires_is_not_ordered_and_never_blocks() -> None:
    q = DeliveryQueues(capacity=100, window=10)
    q.enqueue("f/a", "in", [1], src="f/b")
    q.enqueue("f/b", "in", [2], src="f/a")
    q.set_local({("f/a", "f/b"), ("f/b", "f/a")}, {})
    assert sorted(f["module"] for f in frames(q.take())) == ["f/a", "f/b"]


def test_the_order_of_local_wires_leaves_cycles_out() -> None:
    from fifoflow.runner.flowrun import _local_order

    def table(*targets: str) -> dict[str, Any]:
        return {"out": {"local": [[t, "in"] for t in targets], "external": False}}

    wires, blockers = _local_order(
        {"a": table("b"), "b": table("a", "d"), "c": table("a"), "d": table()}
    )
    assert wires == {("a", "b"), ("b", "a"), ("b", "d"), ("c", "a")}
    # a and b lead to each other: not ordered between them; both lead on to d
    assert blockers == {"a": ("d",), "b": ("d",), "c": ("a", "b", "d")}
    assert _local_order({"a": table()}) == (set(), {})
