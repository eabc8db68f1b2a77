"""The runner's side of runs over its control link (``runner/link.py``), against a real
dispatcher process: offers reach the executor, a refusal's reason becomes the run's
event, the reporter renews and delivers, a result made while the dispatcher is away is
kept and delivered after the link comes back (``runsHeld``, then ``redeliver``), the
attempts the answer lists are stopped, and the executor takes no runs while the link
is down.

The executor here is a test-side one (the ``RunExecutor`` surface the link calls:
``start``, ``cancel``, ``held``, ``redeliver``, ``accepting``, ``max_runs``,
``reporter``): the protocol boundary between the link and the executor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runner.link import DispatcherLink
from fifoflow.runner.runs.errors import RunRefused
from fifoflow.runner.runs.model import RunProgress, RunResult, RunState

from .test_dispatcher import DispatcherProcess
from .test_runs import FLOW, TERMINAL

if TYPE_CHECKING:
    from pathlib import Path

    from fifoflow.runner.runs.model import RunOffer


class SideExecutor:
    """Takes every offer but those whose first message is ``"refuse"``; keeps results
    until the reporter delivers them."""

    max_runs = 3

    def __init__(self) -> None:
        self.accepting = True
        self.reporter: Any = None
        self.started: list[RunOffer] = []
        self.canceled: list[tuple[str, int, str]] = []
        self.kept: dict[tuple[str, int], RunResult] = {}
        self.extra_held: list[dict[str, Any]] = []
        self.changed = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, check: Any) -> Any:
        while not (value := check()):
            await self.changed.wait()
        return value

    async def start(self, offer: RunOffer) -> None:
        if not self.accepting:
            raise RunRefused("not accepting runs")
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
        return running + self.extra_held

    async def finish(self, result: RunResult) -> bool:
        self.kept[(result.runId, result.attempt)] = result
        delivered = await self.reporter.result(result)
        if delivered:
            del self.kept[(result.runId, result.attempt)]
        self._changed()
        return bool(delivered)

    async def redeliver(self) -> None:
        for key, result in list(self.kept.items()):
            if await self.reporter.result(result):
                del self.kept[key]
        self._changed()


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
                assert executor.accepting is False  # until ready
                async with trio.open_nursery() as nursery:
                    runner_id = await nursery.start(link.run)
                    await executor.wait(lambda: executor.accepting)
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
                    await executor.wait(lambda: not executor.accepting)
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
                    # stop), the kept result delivered, runs taken again
                    executor.extra_held.append(
                        {"runId": "r0123456789abcdef", "attempt": 1, "finished": False}
                    )
                    await trio.to_thread.run_sync(dispatcher.start)
                    await executor.wait(lambda: not executor.kept and executor.accepting)
                    assert [c[:2] for c in executor.canceled] == [("r0123456789abcdef", 1)]
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
