"""The run book driven by trio with in-test workers (the ``Worker`` protocol is the
boundary): offers, refusals, leases, retries, cancels, timeouts, reconcile, results once,
a restart. Timed tests use trio's autojump clock; the book reads the same clock."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio

from fifoflow.runner.errors import FlowNotFound
from fifoflow.runner.events import EventHub, EventKind
from fifoflow.runner.runs.book import RunBook
from fifoflow.runner.runs.errors import LeaseLost, RunNotFound, RunRefused, RunStateError
from fifoflow.runner.runs.model import (
    RunInput,
    RunOffer,
    RunProgress,
    RunResult,
    RunState,
    RunSubmission,
    Target,
)
from fifoflow.runner.runs.store import RunStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

WAIT = 600.0  # virtual seconds: the autojump clock makes them instant


def resolve(sub: RunSubmission) -> tuple[str, int | None, dict[str, Any], list[Target]]:
    if sub.flow == "missing":
        raise FlowNotFound("no flow 'missing'")
    flow = sub.flow or "inline"
    targets = [Target("a", "in", i.msg) for i in sub.inputs]
    return flow, sub.revision or 1, {"id": flow, "modules": {"a": {"runtime": "python"}}}, targets


class Changes:
    """Pulsed whenever a worker is told something or the book publishes; tests wait on
    conditions with it."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def pulse(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, cond: Callable[[], Any], timeout: float = WAIT) -> None:  # noqa: ASYNC109 (a test helper: its own deadline)
        with trio.fail_after(timeout):
            while not cond():
                await self._event.wait()


class FakeWorker:
    """Takes what it is offered (or refuses with ``refuse``, or never answers when
    ``silent``) and keeps it; the test reports for it."""

    def __init__(
        self,
        worker_id: str,
        changes: Changes,
        *,
        capacity: int = 10,
        refuse: str | None = None,
        silent: bool = False,
        fits: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.id = worker_id
        self.changes = changes
        self.capacity = capacity
        self.refuse = refuse
        self.silent = silent
        self._fits = fits
        self.offers: list[RunOffer] = []
        self.refused: list[RunOffer] = []
        self.cancels: list[tuple[str, int, str]] = []
        self.held: set[tuple[str, int]] = set()

    def free(self) -> int:
        return self.capacity - len(self.held)

    def fits(self, run: dict[str, Any]) -> str | None:
        assert run["document"]["id"] == run["flow"]
        return self._fits(run) if self._fits is not None else None

    async def offer(self, offer: RunOffer) -> None:
        await trio.lowlevel.checkpoint()
        if self.silent:
            await trio.sleep_forever()
        if self.refuse is not None:
            self.refused.append(offer)
            self.changes.pulse()
            raise RunRefused(self.refuse)
        self.offers.append(offer)
        self.held.add((offer.runId, offer.attempt))
        self.changes.pulse()

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        self.cancels.append((run_id, attempt, reason))
        self.held.discard((run_id, attempt))
        self.changes.pulse()


def ok(offer: RunOffer, state: RunState = RunState.SUCCEEDED, **fields: Any) -> RunResult:
    return RunResult(offer.runId, offer.attempt, state, **fields)


@asynccontextmanager
async def open_book(
    store: RunStore | None = None, **options: Any
) -> AsyncIterator[tuple[RunBook, Changes, EventHub]]:
    store = store if store is not None else RunStore.open(":memory:")
    hub = EventHub()
    changes = Changes()
    book = RunBook(store, resolve, hub=hub, clock=trio.current_time, **options)
    events = hub.subscribe()

    async def pulse_on_events() -> None:
        async for _ in events:
            changes.pulse()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pulse_on_events)
        await nursery.start(book.run)
        yield book, changes, hub
        nursery.cancel_scope.cancel()
    events.close()


def states(book: RunBook, run_id: str) -> list[tuple[str, int, str | None]]:
    return [(e["state"], e["attempt"], e["worker"]) for e in book.get(run_id)["events"]]


async def test_submit_offer_progress_finish(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, hub):
        seen = hub.subscribe(kinds=[EventKind.RUN, EventKind.RUN_PROGRESS])
        view = book.submit(RunSubmission(flow="hello", inputs=[RunInput({"n": 1})], lease=10.0))
        run_id = view["id"]
        assert run_id.startswith("r")
        assert len(run_id) == 17
        int(run_id[1:], 16)
        assert (view["state"], view["attempt"], view["flow"], view["revision"]) == (
            "queued",
            0,
            "hello",
            1,
        )
        assert view["events"] == [
            {
                "seq": 1,
                "time": view["createdAt"],
                "state": "queued",
                "attempt": 0,
                "worker": None,
                "reason": "submitted",
            }
        ]
        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        await changes.until(lambda: w1.offers)
        offer = w1.offers[0]
        assert (offer.runId, offer.attempt, offer.lease, offer.inputs) == (
            run_id,
            1,
            10.0,
            [Target("a", "in", {"n": 1})],
        )
        assert offer.flow["id"] == "hello"
        running = book.get(run_id)
        assert (running["state"], running["attempt"], running["worker"]) == ("running", 1, "w1")
        assert running["leaseExpires"] == running["startedAt"] + 10.0

        await trio.sleep(8)
        book.progress("w1", RunProgress(run_id, 1, handled={"a": 1}, outputs=1))
        renewed = book.get(run_id)
        assert renewed["leaseExpires"] == pytest.approx(trio.current_time() + 10.0)
        assert renewed["progress"] == {"handled": {"a": 1}, "errors": 0, "outputs": 1, "sides": {}}
        await trio.sleep(8)  # 16 s after the offer: alive thanks to the renewal
        assert book.get(run_id)["state"] == "running"

        result = ok(
            offer, outputs=[{"from": "a.out", "msg": 2}], outputsTotal=1, logs=[{"text": "hi"}]
        )
        assert book.finish("w1", result) is True
        done = await book.wait(run_id, timeout=1)
        assert (done["state"], done["endedAt"], done["leaseExpires"]) == (
            "succeeded",
            trio.current_time(),
            None,
        )
        assert done["attempts"] == [
            {
                "attempt": 1,
                "worker": "w1",
                "startedAt": running["startedAt"],
                "endedAt": done["endedAt"],
                "reason": None,
            }
        ]
        assert states(book, run_id) == [
            ("queued", 0, None),
            ("running", 1, "w1"),
            ("succeeded", 1, "w1"),
        ]
        assert book.result(run_id)["outputs"] == [{"from": "a.out", "msg": 2}]
        assert book.logs(run_id) == [{"text": "hi"}]
        assert book.logs(run_id, limit=0) == []
        assert book.finish("w1", result) is False  # a re-send: already recorded

        kinds = []
        while True:
            try:
                kinds.append(seen.receive_nowait())
            except trio.WouldBlock:
                break
        assert [(e["kind"], e.get("state")) for e in kinds] == [
            ("run", "queued"),
            ("run", "running"),
            ("run-progress", None),
            ("run", "succeeded"),
        ]
        assert kinds[2]["handled"] == {"a": 1}
        assert kinds[3]["flow"] == "hello"


async def test_unknown_and_bad_calls(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, _changes, _hub):
        with pytest.raises(FlowNotFound):
            book.submit(RunSubmission(flow="missing"))
        assert book.list() == []
        with pytest.raises(RunNotFound, match="nope"):
            book.get("nope")
        with pytest.raises(RunNotFound):
            book.cancel("nope")
        with pytest.raises(LeaseLost, match="nope"):
            book.progress("w1", RunProgress("nope", 1))
        run_id = book.submit(RunSubmission(flow="f"))["id"]
        with pytest.raises(RunStateError, match="no result until it ended"):
            book.result(run_id)
        assert book.logs(run_id) == []
        with pytest.raises(RunStateError):
            book.outputs_path(run_id)
        view = await book.wait(run_id, timeout=5)  # nobody takes it: still queued after 5 s
        assert view["state"] == "queued"


async def test_refusal_then_another_worker(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        w1 = FakeWorker("w1", changes, refuse="runtime node missing")
        book.add_worker(w1)
        run_id = book.submit(RunSubmission(flow="f"))["id"]
        await changes.until(lambda: w1.refused and book.get(run_id)["state"] == "queued")
        w2 = FakeWorker("w2", changes, capacity=1)
        book.add_worker(w2)
        await changes.until(lambda: w2.offers)
        assert w2.offers[0].attempt == 1  # a refusal uses up no attempt
        assert len(w1.refused) == 1  # left out of this run for a while: not asked again
        events = book.get(run_id)["events"]
        assert [(e["state"], e["attempt"], e["worker"], e["reason"]) for e in events] == [
            ("queued", 0, None, "submitted"),
            ("running", 1, "w1", "offered to w1"),
            ("queued", 1, "w1", "refused: runtime node missing"),
            ("running", 1, "w2", "offered to w2"),
        ]
        view = book.get(run_id)
        assert [a["worker"] for a in view["attempts"]] == ["w2"]


async def test_fits_and_silent_worker(autojump_clock: trio.abc.Clock) -> None:
    async with open_book(offer_deadline=10.0) as (book, changes, _hub):
        picky = FakeWorker(
            "picky", changes, fits=lambda run: "label gpu missing" if run["labels"] else None
        )
        book.add_worker(picky)
        mute = FakeWorker("mute", changes, silent=True)
        book.add_worker(mute)
        run_id = book.submit(RunSubmission(flow="f", labels={"gpu": "1"}))["id"]
        start = trio.current_time()
        await changes.until(lambda: mute.cancels)
        assert trio.current_time() - start == pytest.approx(10.0)
        assert mute.cancels == [(run_id, 1, "no answer to the offer in 10 s")]
        assert picky.offers == []
        view = book.get(run_id)
        assert view["state"] == "queued"
        assert view["events"][-1]["reason"] == "refused: no answer to the offer in 10 s"


async def test_lease_expiry_retries_on_another_worker(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        w1 = FakeWorker("w1", changes, capacity=1)
        book.add_worker(w1)
        run_id = book.submit(RunSubmission(flow="f", lease=30.0))["id"]
        await changes.until(lambda: w1.offers)
        w1.capacity = 0  # busy: it goes silent with the attempt
        w2 = FakeWorker("w2", changes)
        book.add_worker(w2)
        start = trio.current_time()
        await changes.until(lambda: w2.offers and w1.cancels)
        assert trio.current_time() - start == pytest.approx(30.0, abs=0.6)
        assert (w2.offers[0].runId, w2.offers[0].attempt) == (run_id, 2)
        assert (run_id, 1, "lease expired (w1 silent for 30 s)") in w1.cancels
        with pytest.raises(LeaseLost, match="attempt 2 on w2 holds it"):
            book.finish("w1", ok(w1.offers[0]))
        with pytest.raises(LeaseLost):
            book.progress("w1", RunProgress(run_id, 1))
        assert book.finish("w2", ok(w2.offers[0])) is True
        view = book.get(run_id)
        assert (view["state"], view["attempt"], view["worker"]) == ("succeeded", 2, "w2")
        assert [(a["worker"], a["reason"]) for a in view["attempts"]] == [
            ("w1", "lease expired (w1 silent for 30 s)"),
            ("w2", None),
        ]
        assert [e["state"] for e in view["events"]].count("succeeded") == 1
        assert book.result(run_id)["attempt"] == 2


async def test_max_attempts_fails_with_every_reason(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        run_id = book.submit(RunSubmission(flow="f", maxAttempts=3, lease=5.0))["id"]
        await changes.until(lambda: len(w1.offers) == 1)
        book.give_back("w1", run_id, 1, "host crashed")
        done = await book.wait(run_id, timeout=WAIT)  # attempts 2 and 3 go silent
        assert done["state"] == "failed"
        assert [o.attempt for o in w1.offers] == [1, 2, 3]
        assert [a["reason"] for a in done["attempts"]] == [
            "given back by w1: host crashed",
            "lease expired (w1 silent for 5 s)",
            "lease expired (w1 silent for 5 s)",
        ]
        assert done["reason"].startswith(
            "failed after 3 attempts (attempt 1 on w1: given back by w1: host crashed;"
        )
        assert "attempt 3 on w1: lease expired" in done["reason"]
        result = book.result(run_id)
        assert (result["state"], result["attempt"], result["reason"]) == (
            "failed",
            3,
            done["reason"],
        )


async def test_cancel_queued_and_running(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        queued = book.submit(RunSubmission(flow="f"))["id"]
        view = book.cancel(queued)
        assert (view["state"], view["reason"], view["attempts"]) == (
            "canceled",
            "canceled by the user",
            [],
        )
        with pytest.raises(RunStateError, match="already ended"):
            book.cancel(queued)
        assert book.result(queued)["state"] == "canceled"

        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        running = book.submit(RunSubmission(flow="f"))["id"]
        await changes.until(lambda: w1.offers)
        view = book.cancel(running, "enough")
        assert (view["state"], view["reason"]) == ("canceled", "enough")  # at once
        await changes.until(lambda: w1.cancels)
        assert w1.cancels == [(running, 1, "enough")]
        with pytest.raises(LeaseLost):
            book.finish("w1", ok(w1.offers[0]))
        assert book.get(running)["state"] == "canceled"
        assert book.logs(running) == []


async def test_book_side_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        run_id = book.submit(RunSubmission(flow="f", timeout=20.0, lease=10.0))["id"]
        await changes.until(lambda: w1.offers)
        start = trio.current_time()

        async def renew() -> None:  # the worker lives on but never ends the attempt
            while True:
                try:
                    book.progress("w1", RunProgress(run_id, 1))
                except LeaseLost:
                    return
                await trio.sleep(4)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew)
            done = await book.wait(run_id, timeout=WAIT)
        assert (done["state"], done["reason"]) == ("timed_out", "no result from the worker")
        assert done["endedAt"] - start == pytest.approx(30.0, abs=0.6)  # timeout + lease
        await changes.until(lambda: w1.cancels)
        assert w1.cancels == [(run_id, 1, "no result from the worker")]


async def test_reconcile(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        ids = [book.submit(RunSubmission(flow="f", key=k))["id"] for k in "abc"]
        await changes.until(lambda: len(w1.offers) == 3)
        done, kept, lost = ids
        other = book.submit(RunSubmission(flow="f"))["id"]
        await changes.until(lambda: len(w1.offers) == 4)
        book.give_back("w1", other, 1, "draining")  # attempt 1 of `other` no longer counts
        await changes.until(lambda: len(w1.offers) == 5)
        book.remove_worker("w1")
        await trio.sleep(5)
        stop = book.reconcile(
            "w1",
            [
                {"runId": done, "attempt": 1, "finished": True},
                {"runId": kept, "attempt": 1, "finished": False},
                {"runId": other, "attempt": 1, "finished": False},
                {"runId": other, "attempt": 2, "finished": False},
                {"runId": "r0000000000000000", "attempt": 1, "finished": False},
            ],
        )
        assert sorted(stop) == sorted([(other, 1), ("r0000000000000000", 1)])
        view = book.get(kept)
        assert (view["state"], view["leaseExpires"]) == (
            "running",
            pytest.approx(trio.current_time() + 30.0),
        )
        view = book.get(lost)
        assert (view["state"], view["attempt"]) == ("queued", 1)
        assert (
            view["attempts"][0]["reason"]
            == "given back by w1: not held by the worker when it reconnected"
        )
        offers = {(o.runId, o.attempt): o for o in w1.offers}
        assert book.finish("w1", ok(offers[done, 1])) is True  # the finished one is re-sent
        assert book.get(done)["state"] == "succeeded"
        assert book.get(other)["state"] == "running"


async def test_idempotent_key(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, _changes, _hub):
        first = book.submit(RunSubmission(flow="f", key="nightly-1"))
        again = book.submit(RunSubmission(flow="other", key="nightly-1"))
        assert again["id"] == first["id"]
        assert again["flow"] == "f"
        assert len(book.list()) == 1
        assert book.submit(RunSubmission(flow="f", key="nightly-2"))["id"] != first["id"]


async def test_priority_then_age(autojump_clock: trio.abc.Clock) -> None:
    async with open_book() as (book, changes, _hub):
        names = {}
        for name, priority in [("low", -5), ("old", 0), ("high", 9), ("new", 0), ("mid", 3)]:
            names[book.submit(RunSubmission(flow="f", priority=priority))["id"]] = name
            await trio.sleep(1)
        w1 = FakeWorker("w1", changes, capacity=1)
        book.add_worker(w1)
        order = []
        for _ in names:
            await changes.until(lambda: len(w1.offers) > len(order))
            offer = w1.offers[-1]
            order.append(names[offer.runId])
            w1.held.discard((offer.runId, offer.attempt))
            assert book.finish("w1", ok(offer)) is True
        assert order == ["high", "mid", "old", "new", "low"]
        assert [v["id"] for v in book.list(limit=2)] == [k for k in names][::-1][:2]
        assert len(book.list(state=RunState.SUCCEEDED)) == 5


async def test_thousand_runs_two_workers_each_recorded_once() -> None:
    async with open_book() as (book, changes, _hub):
        recorded: list[str] = []
        resent: list[bool] = []

        class Auto(FakeWorker):
            async def offer(self, offer: RunOffer) -> None:
                await super().offer(offer)
                nursery.start_soon(self.work, offer)

            async def work(self, offer: RunOffer) -> None:
                await trio.lowlevel.checkpoint()
                book.progress(self.id, RunProgress(offer.runId, offer.attempt, handled={"a": 1}))
                self.held.discard((offer.runId, offer.attempt))
                if book.finish(self.id, ok(offer, handled={"a": 1})):
                    recorded.append(offer.runId)
                if len(recorded) % 100 == 0:  # a re-send after a lost answer
                    resent.append(book.finish(self.id, ok(offer)))

        async with trio.open_nursery() as nursery:
            workers = [Auto("w1", changes, capacity=8), Auto("w2", changes, capacity=8)]
            ids = [
                book.submit(RunSubmission(flow="f", inputs=[RunInput(i)]))["id"]
                for i in range(1000)
            ]
            for w in workers:
                book.add_worker(w)
            with trio.fail_after(60):
                await changes.until(lambda: len(recorded) == 1000)
        assert sorted(recorded) == sorted(ids)
        assert resent
        assert not any(resent)
        assert all(w.offers for w in workers)
        assert sum(len(w.offers) for w in workers) == 1000
        assert len(book.list(state=RunState.SUCCEEDED, limit=2000)) == 1000
        for run_id in ids[::97]:
            assert [e["state"] for e in book.get(run_id)["events"]] == [
                "queued",
                "running",
                "succeeded",
            ]


async def test_reopened_book_resumes(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    path = tmp_path / "runs.sqlite"
    store = RunStore.open(path)
    async with open_book(store) as (book, changes, _hub):
        w1 = FakeWorker("w1", changes, capacity=1)
        book.add_worker(w1)
        running = book.submit(RunSubmission(flow="f", lease=10.0))["id"]
        await changes.until(lambda: w1.offers)
        queued = book.submit(RunSubmission(flow="f", priority=1))["id"]
        ended = book.submit(RunSubmission(flow="f", key="gone"))["id"]
        book.cancel(ended)
        book.remove_worker("w1")
    store.close()
    await trio.sleep(60)  # down for longer than the lease

    store = RunStore.open(path)
    async with open_book(store) as (book, changes, _hub):
        view = book.get(running)
        assert (view["state"], view["worker"]) == ("running", "w1")
        assert view["leaseExpires"] == pytest.approx(
            trio.current_time() + 10.0
        )  # a lease to reconnect in
        assert book.get(queued)["state"] == "queued"
        assert book.get(ended)["state"] == "canceled"
        assert book.submit(RunSubmission(flow="f", key="gone"))["id"] == ended
        w1b = FakeWorker("w1", changes, capacity=1)
        w1b.held.add((running, 1))
        assert book.reconcile("w1", [{"runId": running, "attempt": 1, "finished": False}]) == []
        book.add_worker(w1b)
        w2 = FakeWorker("w2", changes)
        book.add_worker(w2)
        await changes.until(lambda: w2.offers)
        assert w2.offers[0].runId == queued
        book.progress("w1", RunProgress(running, 1))
        assert book.finish("w1", RunResult(running, 1, RunState.SUCCEEDED)) is True
        assert book.finish("w2", ok(w2.offers[0])) is True
        assert book.get(running)["state"] == book.get(queued)["state"] == "succeeded"
    store.close()


async def test_outputs_path_when_spilled(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    spilled = tmp_path / "outputs.jsonl"
    spilled.write_text('{"from": "a.out", "msg": 1}\n')
    asked = []

    def spill(run_id: str, attempt: int) -> Path:
        asked.append((run_id, attempt))
        return spilled

    async with open_book(spill=spill) as (book, changes, _hub):
        w1 = FakeWorker("w1", changes)
        book.add_worker(w1)
        a = book.submit(RunSubmission(flow="f"))["id"]
        b = book.submit(RunSubmission(flow="f"))["id"]
        await changes.until(lambda: len(w1.offers) == 2)
        by_id = {o.runId: o for o in w1.offers}
        book.finish("w1", ok(by_id[a], outputsSpilled=True, outputsTotal=5000))
        book.finish("w1", ok(by_id[b]))
        assert book.outputs_path(a) == spilled
        assert book.outputs_path(b) is None
        assert asked == [(a, 1)]
