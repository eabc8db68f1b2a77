"""Runs through a real dispatcher process and real runner processes: a run succeeds;
a runner SIGKILLed mid-run has its run retried on the other at attempt 2 (result
recorded once); the attempt cap fails a run with every attempt's reason; cancel stops
the run's processes; timeout; a dispatcher restarted mid-run; a result kept while the
dispatcher was away and delivered after; SIGTERM of a runner (finish within the grace,
or give back). (1000 runs at once: ``test_runs_bulk.py``; the link's own rules:
``test_runs_link.py``.)

The flow's one module waits for a file the test creates (``release``) before it
answers, and writes its process id beside it, so a test holds a run mid-way and knows
which process runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
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
        try:
            return wait_until(  # type: ignore[no-any-return]
                f"run {run_id} to be {'/'.join(states)}",
                lambda: (
                    (view := _try(lambda: self.get(run_id))) and view["state"] in states and view
                ),
                timeout,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the run: {_try(lambda: self.get(run_id))}") from None

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


def sigkill(runner: ServerProcess) -> None:
    """SIGKILL a runner, then the runtime hosts it started (orphans now; they would wait
    on their module forever): the whole runner is lost, as a killed machine or
    container would be, and the test leaves no process behind."""
    assert runner.proc is not None
    hosts = psutil.Process(runner.proc.pid).children(recursive=True)
    runner.proc.send_signal(signal.SIGKILL)
    runner.proc.wait()
    for host in hosts:
        try:
            host.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(hosts, timeout=10)


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
    # the same through the CLI, against the dispatcher: the flow file sent inline
    flow_file = tmp_path / "job.json"
    flow_file.write_bytes(orjson.dumps(FLOW))
    cli = [sys.executable, "-m", "fifoflow.api", "runs"]
    where = ["--url", dispatcher.url, "--token-file", str(dispatcher.state_dir / "token")]
    done = subprocess.run(
        [*cli, "submit", str(flow_file), "--input", '{"n": 5}', "--wait", *where],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["msg"] for line in done.stdout.splitlines()] == [{"n": 10}]
    listed = subprocess.run(
        [*cli, "list", "--state", "succeeded", "--json", *where],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(orjson.loads(listed.stdout)) == 2


def test_a_runner_killed_mid_run_the_run_succeeds_on_the_other_at_attempt_2(
    tmp_path: Path, dispatcher: DispatcherProcess, runners: list[ServerProcess]
) -> None:
    runners += [start_runner(tmp_path, f"r{i}", dispatcher) for i in range(2)]
    ids = [linked_id(r) for r in runners]
    runs = Runs(dispatcher)
    run = runs.submit(waiting(tmp_path, 1), lease=1.0)
    first = runs.wait_running(run["id"], 1)
    module_pid(tmp_path)  # the module is mid-run
    sigkill(runners[ids.index(first["worker"])])
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
        module_pid(tmp_path)  # the module runs: the runner took the attempt
        (tmp_path / "go.pid").unlink()
        sigkill(runners[ids.index(view["worker"])])
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
    """What the runner printed so far."""
    return runner.output().encode()
