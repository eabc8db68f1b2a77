"""Runs through a real dispatcher process and real runner processes: a run succeeds;
a runner SIGKILLed mid-run has its run retried on the other at attempt 2 (result
recorded once); the attempt cap fails a run with every attempt's reason; cancel stops
the run's processes; timeout; a dispatcher restarted mid-run; a result kept while the
dispatcher was away and delivered after; SIGTERM of a runner (finish within the grace,
or give back); 1000 runs through two local runners, each recorded once. And the link's
own rule: a runner speaks only for the attempts given to it.

The flow's one module waits for a file the test creates (``release``) before it
answers, and writes its process id beside it, so a test holds a run mid-way and knows
which process runs it."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import psutil
import pytest

from ..api.helpers import ServerProcess
from .test_dispatcher import DispatcherProcess, linked_id, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: waits for msg["wait"] (a path) to exist, after writing its pid to msg["pid"]
WAITER = """
import asyncio, os
async def handle(msg, ctx):
    if msg.get("pid"):
        with open(msg["pid"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(msg["pid"] + ".tmp", msg["pid"])
    while msg.get("wait") and not os.path.exists(msg["wait"]):
        await asyncio.sleep(0.02)
    return {"n": msg["n"] * 2}
"""

FLOW = {
    "fifoflow": 1,
    "id": "job",
    "modules": [{"id": "work", "runtime": "python", "code": WAITER}],
}

TERMINAL = {"succeeded", "failed", "timed_out", "canceled"}


class Runs:
    """The dispatcher's runs API, as a test uses it."""

    def __init__(self, dispatcher: DispatcherProcess) -> None:
        self.dispatcher = dispatcher

    def submit(self, msg: Any, **options: Any) -> dict[str, Any]:
        body = {"document": FLOW, "inputs": [{"msg": msg}], **options}
        return self.dispatcher.api("POST", "/runs", json=body)  # type: ignore[no-any-return]

    def get(self, run_id: str) -> dict[str, Any]:
        return self.dispatcher.api("GET", f"/runs/{run_id}")  # type: ignore[no-any-return]

    def result(self, run_id: str) -> dict[str, Any]:
        return self.dispatcher.api("GET", f"/runs/{run_id}/result")  # type: ignore[no-any-return]

    def wait_state(self, run_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(  # type: ignore[no-any-return]
            f"run {run_id} to be {'/'.join(states)}",
            lambda: (view := _try(lambda: self.get(run_id))) and view["state"] in states and view,
            timeout,
        )

    def wait_running(self, run_id: str, attempt: int = 1) -> dict[str, Any]:
        return wait_until(  # type: ignore[no-any-return]
            f"run {run_id} running attempt {attempt}",
            lambda: (
                (view := _try(lambda: self.get(run_id)))
                and view["state"] == "running"
                and view["attempt"] == attempt
                and view
            ),
        )


def _try(fn: Any) -> Any:
    try:
        return fn()
    except (httpx.HTTPError, OSError):
        return None


def start_runner(
    tmp_path: Path, name: str, dispatcher: DispatcherProcess, *extra: str, token: bool = True
) -> ServerProcess:
    args = ["--dispatcher", dispatcher.url, *extra]
    if token:
        args += ["--registration-token", dispatcher.token()]
    runner = ServerProcess(tmp_path / name, *args)
    runner.start()
    return runner


def terminal_events(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in view["events"] if e["state"] in TERMINAL]


def waiting(tmp_path: Path, n: int, name: str = "go") -> dict[str, Any]:
    return {"n": n, "wait": str(tmp_path / name), "pid": str(tmp_path / f"{name}.pid")}


def module_pid(tmp_path: Path, name: str = "go") -> int:
    path = tmp_path / f"{name}.pid"
    return int(wait_until(f"{path} to be written", lambda: path.exists() and path.read_text()))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def runners() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for runner in started:
            runner.kill() if runner.proc is not None and runner.proc.poll() is None else None
            runner.stop()


def test_a_run_succeeds_through_a_dispatcher_and_a_runner(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher))
    runner_id = linked_id(runners[0])
    runs = Runs(dispatcher)
    run = runs.submit({"n": 21})
    assert run["state"] in ("queued", "running")
    view = runs.wait_state(run["id"], *TERMINAL)
    assert view["state"] == "succeeded", view
    assert (view["attempt"], view["worker"]) == (1, runner_id)
    result = runs.result(run["id"])
    assert [o["msg"] for o in result["outputs"]] == [{"n": 42}]
    assert result["handled"] == {"work": 1}
    assert [e["state"] for e in view["events"]] == ["queued", "running", "succeeded"]


def test_a_runner_killed_mid_run_the_run_succeeds_on_the_other_at_attempt_2(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners += [start_runner(tmp_path, f"r{i}", dispatcher) for i in range(2)]
    ids = [linked_id(r) for r in runners]
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 1), lease=1.0)
    first = runs.wait_running(run["id"], 1)
    module_pid(tmp_path)  # the module is mid-run
    victim = runners[ids.index(first["worker"])]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    second = runs.wait_running(run["id"], 2)
    assert second["worker"] != first["worker"]
    (tmp_path / "go").touch()
    view = runs.wait_state(run["id"], *TERMINAL)
    assert view["state"] == "succeeded", view
    assert view["attempt"] == 2
    assert len(terminal_events(view)) == 1
    assert [o["msg"] for o in runs.result(run["id"])["outputs"]] == [{"n": 2}]
    reasons = [a["reason"] for a in view["attempts"] if a["attempt"] == 1]
    assert reasons, view["attempts"]
    assert reasons[0], view["attempts"]


def test_the_attempt_cap_fails_the_run_with_every_attempts_reason(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners += [start_runner(tmp_path, f"r{i}", dispatcher) for i in range(2)]
    ids = [linked_id(r) for r in runners]
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 1), lease=1.0, maxAttempts=2)
    for attempt in (1, 2):
        view = runs.wait_running(run["id"], attempt)
        victim = runners[ids.index(view["worker"])]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
    view = runs.wait_state(run["id"], *TERMINAL)
    assert view["state"] == "failed"
    assert [a["attempt"] for a in view["attempts"]] == [1, 2]
    assert all(a["reason"] for a in view["attempts"]), view["attempts"]
    for a in view["attempts"]:
        assert a["reason"] in view["reason"], (a, view["reason"])


def test_cancel_mid_run_leaves_nothing_running(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher))
    linked_id(runners[0])
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 1))
    runs.wait_running(run["id"], 1)
    pid = module_pid(tmp_path)
    assert psutil.pid_exists(pid)
    canceled = dispatcher.api("POST", f"/runs/{run['id']}/cancel")
    assert canceled["state"] == "canceled"
    wait_until("the run's host process to stop", lambda: gone(pid), timeout=15)
    view = runs.get(run["id"])
    assert view["state"] == "canceled"
    assert len(terminal_events(view)) == 1


def test_a_run_past_its_timeout_is_timed_out(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher))
    linked_id(runners[0])
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 1), timeout=1.0)
    pid = module_pid(tmp_path)
    view = runs.wait_state(run["id"], *TERMINAL)
    assert view["state"] == "timed_out", view
    assert view["attempt"] == 1
    wait_until("the run's host process to stop", lambda: gone(pid), timeout=15)


def test_a_dispatcher_restarted_mid_run_loses_nothing(
    tmp_path: Path, runners: list[ServerProcess]
) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        runners.append(start_runner(tmp_path, "r0", dispatcher))
        runner_id = linked_id(runners[0])
        runs = Runs(dispatcher)
        run = runs.submit(waiting(tmp_path, 3))
        runs.wait_running(run["id"], 1)
        module_pid(tmp_path)
        dispatcher.port = int(dispatcher.url.rsplit(":", 1)[1])
        assert dispatcher.stop() == 0
        dispatcher.start()
        wait_until(
            "the runner back",
            lambda: any(
                r["id"] == runner_id and r["status"] == "ready"
                for r in dispatcher.api("GET", "/runners")
            ),
        )
        (tmp_path / "go").touch()
        view = runs.wait_state(run["id"], *TERMINAL)
        assert view["state"] == "succeeded", view
        assert view["attempt"] == 1
        assert [o["msg"] for o in runs.result(run["id"])["outputs"]] == [{"n": 6}]
    finally:
        dispatcher.stop()


def test_a_result_made_while_the_dispatcher_was_away_arrives_after_reconnect(
    tmp_path: Path, runners: list[ServerProcess]
) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        runners.append(start_runner(tmp_path, "r0", dispatcher))
        linked_id(runners[0])
        runs = Runs(dispatcher)
        run = runs.submit(waiting(tmp_path, 4))
        runs.wait_running(run["id"], 1)
        module_pid(tmp_path)
        dispatcher.port = int(dispatcher.url.rsplit(":", 1)[1])
        assert dispatcher.stop() == 0
        (tmp_path / "go").touch()
        # the run ends on the runner while nobody can hear it: its result is kept
        result_file = tmp_path / "r0" / "runs" / run["id"] / "1" / "result.json"
        wait_until("the runner to keep the result", result_file.exists)
        assert not (result_file.parent / "delivered").exists()
        dispatcher.start()
        view = runs.wait_state(run["id"], *TERMINAL)
        assert view["state"] == "succeeded", view
        assert [o["msg"] for o in runs.result(run["id"])["outputs"]] == [{"n": 8}]
        wait_until("the runner to mark it delivered", (result_file.parent / "delivered").exists)
        assert len(terminal_events(runs.get(run["id"]))) == 1
    finally:
        dispatcher.stop()


def test_sigterm_lets_a_running_run_finish_within_the_grace(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher, "--run-grace", "20"))
    linked_id(runners[0])
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 5))
    runs.wait_running(run["id"], 1)
    module_pid(tmp_path)
    proc = runners[0].proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    wait_until("the runner to stop taking runs", lambda: b"no new runs" in _peek(runners[0]))
    (tmp_path / "go").touch()
    view = runs.wait_state(run["id"], *TERMINAL)
    assert view["state"] == "succeeded", view
    assert view["attempt"] == 1
    assert proc.wait(timeout=20) == 0


def test_sigterm_gives_back_a_run_that_outlives_the_grace(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners.append(start_runner(tmp_path, "r0", dispatcher, "--run-grace", "0.5"))
    linked_id(runners[0])
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 6), lease=30.0)
    runs.wait_running(run["id"], 1)
    pid = module_pid(tmp_path)
    proc = runners[0].proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    view = runs.wait_state(run["id"], "queued")
    # given back at once, not after the 30 s lease
    assert time.monotonic() - started < 15
    assert view["attempt"] == 1
    assert "grace" in (view["attempts"][0]["reason"] or "")
    assert gone(pid)
    # another runner takes it at attempt 2
    runners.append(start_runner(tmp_path, "r1", dispatcher))
    (tmp_path / "go").touch()
    view = runs.wait_state(run["id"], *TERMINAL)
    assert (view["state"], view["attempt"]) == ("succeeded", 2)


def _peek(runner: ServerProcess) -> bytes:
    """What the runner printed so far (non-blocking)."""
    import os
    import select

    assert runner.proc is not None
    assert runner.proc.stdout is not None
    fd = runner.proc.stdout.fileno()
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks)
    runner.lines.extend(text.decode(errors="replace").splitlines())
    return "\n".join(runner.lines).encode()


def test_1000_runs_through_two_local_runners_each_recorded_once(tmp_path: Path) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "2",
    ]  # fmt: skip
    dispatcher.start()
    try:
        wait_until(
            "two local runners",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready"] * 2,
        )
        token = (dispatcher.state_dir / "token").read_text().strip()
        body = {
            "document": {
                "fifoflow": 1,
                "id": "double",
                "modules": [
                    {"id": "d", "runtime": "python",
                     "code": "def handle(msg, ctx):\n    return msg * 2\n"},
                ],
            },
        }  # fmt: skip
        ids = []
        with httpx.Client(
            base_url=dispatcher.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            for n in range(1000):
                answer = client.post("/runs", json={**body, "inputs": [{"msg": n}]})
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
            assert len(set(ids)) == 1000

            def done() -> bool:
                listed = client.get("/runs", params={"state": "succeeded", "limit": 2000}).json()
                return len(listed) == 1000

            wait_until("1000 runs to succeed", done, timeout=45)
            workers = set()
            for n, run_id in enumerate(ids[::50]):
                view = client.get(f"/runs/{run_id}").json()
                assert len(terminal_events(view)) == 1
                result = client.get(f"/runs/{run_id}/result").json()
                assert [o["msg"] for o in result["outputs"]] == [n * 50 * 2]
                workers.add(view["worker"])
        # each result recorded exactly once: one result row and one terminal event per run
        db = _db(dispatcher.state_dir)
        try:
            results = db.execute("SELECT run, COUNT(*) FROM run_results GROUP BY run").fetchall()
            assert len(results) == 1000
            assert {c for _, c in results} == {1}
            ends = db.execute(
                "SELECT run, COUNT(*) FROM run_events WHERE state IN (?, ?, ?, ?) GROUP BY run",
                tuple(TERMINAL),
            ).fetchall()
            assert len(ends) == 1000
            assert {c for _, c in ends} == {1}
            per_worker = db.execute(
                "SELECT worker, COUNT(*) FROM run_events WHERE state = 'succeeded' GROUP BY worker"
            ).fetchall()
            assert len(per_worker) == 2, per_worker  # both runners took runs
        finally:
            db.close()
    finally:
        assert dispatcher.stop() == 0


def _db(state_dir: Path) -> Any:
    import sqlite3

    return sqlite3.connect(state_dir / "dispatcher.sqlite3")


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
            bad = await intruder.call("runResult", runId=run["id"], attempt=0, state="failed")
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
