"""The local backend notices a runner process that ends at once (no waiting for its
heartbeats to run out), places its flows again and starts a replacement, which brings
the flow back with its state; a runner that keeps dying is given up, with the reason."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from .test_dispatcher import COUNTER, DispatcherProcess, events, wait_until


def _local(tmp_path: Path, *extra: str, heartbeat: float = 5.0) -> DispatcherProcess:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher", heartbeat=heartbeat)
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "1", *extra,
    ]  # fmt: skip
    return dispatcher


def _runner_process(dispatcher: DispatcherProcess) -> psutil.Process:
    assert dispatcher.proc is not None
    [runner] = [
        p
        for p in psutil.Process(dispatcher.proc.pid).children()
        if "serve" in p.cmdline() and "runner" in p.cmdline()
    ]
    return runner


def _state(dispatcher: DispatcherProcess) -> object:
    try:
        return dispatcher.api("GET", "/flows/counter/modules/count/state")["state"]
    except Exception:
        return None


def test_a_sigkilled_local_runner_is_replaced_and_its_flow_comes_back_with_its_state(
    tmp_path: Path,
) -> None:
    # Heartbeats every 5 s (the default): a TTL of 15 s that this test never waits out.
    dispatcher = _local(tmp_path)
    dispatcher.start()
    try:
        wait_until(
            "the local runner",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready"],
            60,
        )
        [runner] = dispatcher.api("GET", "/runners")
        assert dispatcher.api("POST", "/flows", json=COUNTER)["status"] == "placed"
        dispatcher.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": ["a", "a"]})
        wait_until("the count", lambda: _state(dispatcher) == {"a": 2}, 60)
        wait_until(
            "a snapshot",
            lambda: dispatcher.api("GET", "/flows/counter")["states"] == {"count": {"a": 2}},
            60,
        )
        victim = _runner_process(dispatcher)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)

        # The same runner (identity and state dir kept) comes back and the flow with it.
        wait_until("the flow back with its state", lambda: _state(dispatcher) == {"a": 2}, 60)
        [lost] = events(dispatcher, "lost", runner["id"])
        assert "exited" in lost["why"], "declared lost by the backend, not the TTL"
        [exited] = events(dispatcher, "local-runner-exited", runner["id"])
        assert exited["restarts"] == 1
        assert "-9" in exited["why"] or "SIGKILL" in exited["why"]
        assert _runner_process(dispatcher).pid != victim.pid
        dispatcher.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": ["a"]})
        wait_until("the counter to go on", lambda: _state(dispatcher) == {"a": 3}, 60)
    finally:
        assert dispatcher.stop() == 0


def test_a_local_runner_that_dies_at_once_backs_off_and_is_given_up(tmp_path: Path) -> None:
    dispatcher = _local(tmp_path)
    dispatcher.start()
    try:
        wait_until(
            "the local runner",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready"],
            60,
        )
        # From now on the runner dies at start: its identity is garbage.
        identity = tmp_path / "dispatcher" / "local-runners" / "local-1" / "dispatcher.json"
        victim = _runner_process(dispatcher)
        identity.write_text("garbage")
        cpu0 = psutil.Process(dispatcher.proc.pid).cpu_times()  # type: ignore[union-attr]
        victim.send_signal(signal.SIGKILL)
        [failed] = wait_until(
            "the runner given up", lambda: events(dispatcher, "local-runner-failed"), 120
        )
        cpu1 = psutil.Process(dispatcher.proc.pid).cpu_times()  # type: ignore[union-attr]
        exits = events(dispatcher, "local-runner-exited")
        assert [e["restarts"] for e in exits] == [1, 2, 3, 4]
        assert [e["delay"] for e in exits] == [0, 0.1, 0.2, 0.4]
        assert "exited 5 times within 30 s" in failed["why"]
        spent = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        assert spent < 5.0, f"the dispatcher spent {spent:.2f} s of CPU on restarts"
        # Pending flows say why no runner takes them.
        pending = dispatcher.api("POST", "/flows", json=COUNTER)
        assert pending["status"] == "pending"
        assert "local runner local-1 exited 5 times" in pending["reason"]
    finally:
        code = dispatcher.stop()
        assert code == 0, "\n".join(dispatcher.lines[-40:])


#: counts every message (about 2 ms each: work piles up, and a graceful stop of 3,000
#: runs out of time), journaled
SLOW_JOURNALED = {
    "fifoflow": 1,
    "id": "counter",
    "durability": "journal",
    "modules": [
        {
            "id": "count",
            "runtime": "python",
            "code": (
                "import time\n"
                "def handle(msg, ctx):\n"
                "    until = time.perf_counter() + 0.002\n"
                "    while time.perf_counter() < until:\n"
                "        pass\n"
                "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
            ),
        }
    ],
}


def test_a_sigkilled_local_runner_comes_back_with_its_journal(tmp_path: Path) -> None:
    """A journaled flow's runner is SIGKILLed with thousands of accepted messages not
    handled yet; the local backend starts it again on its state dir, it hands the flow
    back with its journal's messages and state, and every message is counted exactly
    once. The dispatcher said how many journaled messages the runner held when lost."""
    dispatcher = _local(tmp_path, heartbeat=0.5)
    dispatcher.start()
    try:
        wait_until(
            "the local runner",
            lambda: [r["status"] for r in dispatcher.api("GET", "/runners")] == ["ready"],
            60,
        )
        [runner] = dispatcher.api("GET", "/runners")
        assert dispatcher.api("POST", "/flows", json=SLOW_JOURNALED)["status"] == "placed"
        for _ in range(3):
            dispatcher.api(
                "POST", "/flows/counter/modules/count/inputs/in", json={"msgs": [1] * 1000}
            )
        held = wait_until(
            "a heartbeat with journaled messages",
            lambda: dispatcher.api("GET", "/runners")[0]["journaled"],
            30,
        )
        assert 0 < held <= 3000
        victim = _runner_process(dispatcher)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)

        wait_until(
            "every message counted",
            lambda: (_state(dispatcher) or {}).get("n", 0) >= 3000,
            90,
        )
        assert _state(dispatcher) == {"n": 3000}
        [lost] = events(dispatcher, "lost", runner["id"])
        assert lost["journaled"] > 0
        assert events(dispatcher, "journal-handed-over", runner["id"])
        dispatcher.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": [1]})
        wait_until("the counter to go on", lambda: _state(dispatcher) == {"n": 3001}, 60)
    finally:
        assert dispatcher.stop() == 0
