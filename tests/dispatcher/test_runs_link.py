"""The runner's side of runs over its control link (``runner/link.py``), against a real
dispatcher process: offers reach the executor, a refusal's reason becomes the run's
event, the reporter renews and delivers, a result made while the dispatcher is away is
kept and delivered after the link comes back (``runsHeld``, then ``redeliver``), the
attempts the answer lists are stopped, and the executor takes no runs while the link
is down. And the dispatcher's rule: a runner speaks only for the attempts given to it
(fake runners over the real link protocol).

The executor here is a test-side one (the ``RunExecutor`` surface the link calls:
``start``, ``cancel``, ``held``, ``unfinished``, ``forget``, ``redeliver``,
``reachable``, ``max_runs``, ``reporter``): the protocol boundary between the link and the executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.link import DispatcherLink
from fifoflow.runner.runs.errors import RunRefused
from fifoflow.runner.runs.model import RunProgress, RunResult, RunState

from .test_dispatcher import DispatcherProcess
from .test_runs import FLOW, TERMINAL, Runs, terminal_events

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from fifoflow.runner.runs.model import RunOffer


class SideExecutor:
    """Takes every offer but those whose first message is ``"refuse"``; keeps results
    until the reporter delivers them."""

    max_runs = 3

    def __init__(self) -> None:
        self.reachable = True
        self.reporter: Any = None
        self.started: list[RunOffer] = []
        self.canceled: list[tuple[str, int, str]] = []
        self.kept: dict[tuple[str, int], RunResult] = {}
        self.extra_held: list[dict[str, Any]] = []
        self.left_unfinished: list[tuple[str, int]] = []
        self.forgotten: list[tuple[str, int]] = []
        self.changed = trio.Event()
        self.wake = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, check: Any) -> Any:
        while not (value := check()):
            await self.changed.wait()
        return value

    async def start(self, offer: RunOffer) -> None:
        if not self.reachable:
            raise RunRefused("cannot report to the book now")
        if offer.inputs and offer.inputs[0].msg == "refuse":
            raise RunRefused("no room for this one")
        self.started.append(offer)
        self._changed()

    async def cancel(self, run_id: str, attempt: int, reason: str) -> None:
        self.canceled.append((run_id, attempt, reason))
        self._changed()

    def held(self) -> list[dict[str, Any]]:
        running = [
            {"runId": o.runId, "attempt": o.attempt, "finished": (o.runId, o.attempt) in self.kept}
            for o in self.started
        ]
        unfinished = [
            {"runId": r, "attempt": a, "finished": False} for r, a in self.left_unfinished
        ]
        return running + unfinished + self.extra_held

    def unfinished(self) -> list[tuple[str, int]]:
        return list(self.left_unfinished)

    def forget(self, run_id: str, attempt: int) -> bool:
        self.forgotten.append((run_id, attempt))
        held = (run_id, attempt) in self.left_unfinished
        self.left_unfinished = [k for k in self.left_unfinished if k != (run_id, attempt)]
        self.extra_held = [
            h for h in self.extra_held if (h["runId"], h["attempt"]) != (run_id, attempt)
        ]
        self._changed()
        return held

    async def finish(self, result: RunResult) -> bool:
        self.kept[(result.runId, result.attempt)] = result
        delivered = await self.reporter.result(result)
        if delivered:
            del self.kept[(result.runId, result.attempt)]
        self._changed()
        return bool(delivered)

    def redeliver(self) -> None:
        self.wake.set()

    async def deliveries(self) -> None:
        """What the executor's delivery task does on ``redeliver``."""
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            for key, result in list(self.kept.items()):
                if await self.reporter.result(result):
                    del self.kept[key]
            self._changed()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _api(dispatcher: DispatcherProcess, method: str, path: str, **kw: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: dispatcher.api(method, path, **kw))


async def _wait_view(dispatcher: DispatcherProcess, run_id: str, check: Any) -> dict[str, Any]:
    while True:
        view = await _api(dispatcher, "GET", f"/runs/{run_id}")
        if check(view):
            return view  # type: ignore[no-any-return]
        await trio.sleep(0.05)


async def test_the_link_carries_offers_reports_and_kept_results(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        with trio.fail_after(45):
            async with open_runner(RunnerConfig(state_dir=tmp_path / "runner")) as runner:
                executor = SideExecutor()
                runner.executor = executor  # type: ignore[attr-defined]
                link = DispatcherLink(
                    dispatcher.url,
                    runner,
                    tmp_path / "runner",
                    registration_token=await trio.to_thread.run_sync(dispatcher.token),
                )
                assert executor.reporter is link.reporter
                assert executor.reachable is False  # until ready
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(executor.deliveries)
                    runner_id = await nursery.start(link.run)
                    await executor.wait(lambda: executor.reachable)
                    hardware = next(
                        r["hardware"]
                        for r in await _api(dispatcher, "GET", "/runners")
                        if r["id"] == runner_id
                    )
                    assert hardware["maxRuns"] == 3

                    # a refusal's reason is the run's event; it stays queued
                    refused = await _api(
                        dispatcher,
                        "POST",
                        "/runs",
                        json={"document": FLOW, "inputs": [{"msg": "refuse"}]},
                    )
                    view = await _wait_view(
                        dispatcher,
                        refused["id"],
                        lambda v: any(
                            "no room for this one" in (e["reason"] or "") for e in v["events"]
                        ),
                    )
                    assert view["state"] == "queued"
                    await _api(dispatcher, "POST", f"/runs/{refused['id']}/cancel")

                    run = await _api(
                        dispatcher,
                        "POST",
                        "/runs",
                        json={"document": FLOW, "inputs": [{"msg": {"n": 1}}]},
                    )
                    offer = await executor.wait(
                        lambda: next((o for o in executor.started if o.runId == run["id"]), None)
                    )
                    assert offer.attempt == 1
                    assert [(t.module, t.port, t.msg) for t in offer.inputs] == [
                        ("work", "in", {"n": 1})
                    ]
                    assert await link.reporter.progress(
                        RunProgress(runId=run["id"], attempt=1, handled={"work": 1})
                    )
                    view = await _api(dispatcher, "GET", f"/runs/{run['id']}")
                    assert view["progress"]["handled"] == {"work": 1}
                    # a progress for an attempt that does not count: False (stop it)
                    assert not await link.reporter.progress(RunProgress(runId=run["id"], attempt=2))

                    # the dispatcher goes away: no new runs; the result is kept
                    dispatcher.port = int(dispatcher.url.rsplit(":", 1)[1])
                    assert await trio.to_thread.run_sync(dispatcher.stop) == 0
                    await executor.wait(lambda: not executor.reachable)
                    result = RunResult(
                        runId=run["id"],
                        attempt=1,
                        state=RunState.SUCCEEDED,
                        outputs=[{"from": "work.out", "msg": {"n": 2}}],
                        outputsTotal=1,
                    )
                    assert not await executor.finish(result)
                    assert (run["id"], 1) in executor.kept
                    # after the link is back: runsHeld (an attempt never given is told to
                    # stop; one left unfinished by a restart is not said, and forgotten),
                    # the kept result delivered, runs taken again
                    executor.extra_held.append(
                        {"runId": "r0123456789abcdef", "attempt": 1, "finished": False}
                    )
                    executor.left_unfinished.append(("r1111111111111111", 2))
                    await trio.to_thread.run_sync(dispatcher.start)
                    await executor.wait(lambda: not executor.kept and executor.reachable)
                    assert sorted(executor.forgotten) == [
                        ("r0123456789abcdef", 1),
                        ("r1111111111111111", 2),
                    ]
                    assert not executor.canceled
                    view = await _api(dispatcher, "GET", f"/runs/{run['id']}")
                    assert view["state"] == "succeeded"
                    assert [e["state"] for e in view["events"] if e["state"] in TERMINAL] == [
                        "succeeded"
                    ]
                    answer = await _api(dispatcher, "GET", f"/runs/{run['id']}/result")
                    assert [o["msg"] for o in answer["outputs"]] == [{"n": 2}]
                    # a re-send of a recorded result is delivered (nothing to keep)
                    assert await link.reporter.result(result)

                    # the dispatcher cancels a running attempt: the executor is told
                    second = await _api(
                        dispatcher,
                        "POST",
                        "/runs",
                        json={"document": FLOW, "inputs": [{"msg": {"n": 2}}]},
                    )
                    await executor.wait(
                        lambda: any(o.runId == second["id"] for o in executor.started)
                    )
                    await _api(dispatcher, "POST", f"/runs/{second['id']}/cancel")
                    await executor.wait(
                        lambda: any(c[0] == second["id"] for c in executor.canceled)
                    )
                    nursery.cancel_scope.cancel()
    finally:
        dispatcher.stop()


class FakeRunner:
    """A runner over the real link protocol, driven by the test: it registers, reports
    hardware (python, ``maxRuns``), says ready, and answers the dispatcher's calls
    (``offerRun``: accepted) while it waits for its own answers."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = iter(range(1, 10_000))
        self.offers: list[dict[str, Any]] = []
        self.cancels: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        await self.ws.send_message(
            orjson.dumps(
                {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
            ).decode()
        )
        while True:
            message = orjson.loads(await self.ws.get_message())
            if "method" not in message:
                return message  # type: ignore[no-any-return]
            await self.answer(message)

    async def answer(self, message: dict[str, Any]) -> None:
        if message["method"] == "offerRun":
            self.offers.append(message["params"])
        elif message["method"] == "cancelRun":
            self.cancels.append(message["params"])
        reply = {"jsonrpc": "2.0", "id": message.get("id"), "result": None}
        await self.ws.send_message(orjson.dumps(reply).decode())

    async def wait_offer(self) -> dict[str, Any]:
        while not self.offers:
            await self.answer(orjson.loads(await self.ws.get_message()))
        return self.offers.pop(0)

    @classmethod
    async def link(cls, ws: Any, dispatcher: DispatcherProcess, name: str) -> FakeRunner:
        fake = cls(ws)
        me = (await fake.call("register", token=dispatcher.token(), name=name))["result"]
        fake.id = me["runnerId"]
        await fake.call("hello", runnerId=me["runnerId"], secret=me["secret"])
        hardware = {"runtimes": ["python"], "maxRuns": 4, "labels": {"fake": name}}
        await fake.call("hardware", full=hardware)
        assert (await fake.call("ready", flows=[]))["result"] is True
        assert (await fake.call("runsHeld", runs=[]))["result"] == {"stop": []}
        return fake


async def test_a_runner_speaks_only_for_the_attempts_given_to_it(
    dispatcher: DispatcherProcess,
) -> None:
    """Two fake runners over the real link: the one offered a run renews it, reports
    its result (recorded once; a re-send is answered "already"); the other reports
    progress, a result and a give-back for that attempt, and for a run that does not
    exist: each is refused (``not_your_part``) and recorded as a ``refused-call``
    event, and what it says it holds is answered "stop"."""
    import trio
    import trio_websocket

    runs = Runs(dispatcher)
    url = dispatcher.url.replace("http", "ws") + "/link"
    with trio.fail_after(30):
        async with (
            trio_websocket.open_websocket_url(url) as ws1,
            trio_websocket.open_websocket_url(url) as ws2,
        ):
            holder = await FakeRunner.link(ws1, dispatcher, "holder")
            run = runs.submit({"n": 1}, labels={"fake": "holder"})
            offer = await holder.wait_offer()
            assert (offer["runId"], offer["attempt"]) == (run["id"], 1)
            assert offer["inputs"] == [{"module": "work", "port": "in", "msg": {"n": 1}}]
            assert offer["flow"]["id"] == "job"
            intruder = await FakeRunner.link(ws2, dispatcher, "intruder")
            answers = [
                await intruder.call("runProgress", runId=run["id"], attempt=1, handled={"work": 9}),
                await intruder.call("runResult", runId=run["id"], attempt=1, state="failed"),
                await intruder.call("runGiveBack", runId=run["id"], attempt=1, reason="mine"),
                await intruder.call("runResult", runId="r0000000000000000", attempt=1, state="failed"),
            ]  # fmt: skip
            for answer in answers:
                assert answer["error"]["data"]["code"] == "not_your_part", answer
                assert "was not given to this runner" in answer["error"]["message"]
            held = await intruder.call(
                "runsHeld", runs=[{"runId": run["id"], "attempt": 1, "finished": False}]
            )
            assert held["result"] == {"stop": [[run["id"], 1]]}
            bad = await intruder.call("runResult", runId=run["id"], attempt=-1, state="failed")
            assert bad["error"]["code"] == -32602
            assert "attempt" in bad["error"]["message"]
            view = runs.get(run["id"])
            assert (view["state"], view["attempt"], view["worker"]) == ("running", 1, holder.id)

            renewed = await holder.call(
                "runProgress", runId=run["id"], attempt=1, handled={"work": 1}
            )
            assert renewed["result"] is True
            result = {"runId": run["id"], "attempt": 1, "state": "succeeded",
                      "outputs": [{"from": "work.out", "msg": {"n": 2}}], "outputsTotal": 1}  # fmt: skip
            assert (await holder.call("runResult", **result))["result"] == {"recorded": True}
            assert (await holder.call("runResult", **result))["result"] == {"recorded": False}
            late = await holder.call("runProgress", runId=run["id"], attempt=1)
            assert late["error"]["data"]["code"] == "lease_lost"
    refused = [e for e in dispatcher.api("GET", "/events") if e["kind"] == "refused-call"]
    assert {e["call"] for e in refused} == {"runProgress", "runResult", "runGiveBack", "runsHeld"}
    view = runs.get(run["id"])
    assert (view["state"], view["worker"]) == ("succeeded", holder.id)
    assert len(terminal_events(view)) == 1
    assert [o["msg"] for o in runs.result(run["id"])["outputs"]] == [{"n": 2}]
