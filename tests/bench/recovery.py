"""Failure recovery (``--only recovery``): a runner SIGKILLed -> its counter flow answers
an inject again, with the dispatcher's defaults (heartbeat 5 s, TTL 15 s), under the
local backend: with one local runner (the backend starts a replacement, which takes the
flow back) and with two (the flow is placed again on the other one). Target <= 2 s.
"""

from __future__ import annotations

import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..dispatcher.test_dispatcher import COUNTER, DispatcherProcess, wait_until


def _answers(d: DispatcherProcess, key: str) -> bool:
    """Inject ``key`` into the counter and see its count: True once the flow answers."""
    try:
        d.api("POST", "/flows/counter/modules/count/inputs/in", json={"msgs": [key]}, timeout=2)
        state = d.api("GET", "/flows/counter/modules/count/state", timeout=2)["state"]
    except (httpx.HTTPError, KeyError):
        return False
    return bool(state.get(key))


def _runner_pids(d: DispatcherProcess) -> list[int]:
    assert d.proc is not None
    return [
        p.pid
        for p in psutil.Process(d.proc.pid).children()
        if "runner" in p.cmdline() and "serve" in p.cmdline()
    ]


def local(runners: int, kills: int) -> list[float]:
    """Seconds from SIGKILL of the flow's runner to the flow answering again."""
    took = []
    with tempfile.TemporaryDirectory(prefix="ffbench-recovery-") as tmp:
        d = DispatcherProcess(Path(tmp) / "dispatcher", heartbeat=5.0)
        d.command = lambda: [  # type: ignore[method-assign]
            *DispatcherProcess.command(d), "--local-runners", str(runners),
        ]  # fmt: skip
        d.start()
        try:
            wait_until(
                "the local runners",
                lambda: [r["status"] for r in d.api("GET", "/runners")] == ["ready"] * runners,
                120,
            )
            d.api("POST", "/flows", json=COUNTER)
            wait_until("the flow", lambda: _answers(d, "warm-up"), 60)
            for i in range(kills):
                holder = d.api("GET", "/flows/counter")["runner"]
                hardware = next(r for r in d.api("GET", "/runners") if r["id"] == holder)
                pid = _pid_of(d, hardware)
                start = time.monotonic()
                psutil.Process(pid).send_signal(signal.SIGKILL)
                wait_until("the flow again", lambda i=i: _answers(d, f"k{i}"), 120)
                took.append(time.monotonic() - start)
                wait_until(  # every runner back before the next kill
                    "the runners ready",
                    lambda: (
                        [r["status"] for r in d.api("GET", "/runners")].count("ready") == runners
                    ),
                    120,
                )
        finally:
            d.stop()
    return took


def _pid_of(d: DispatcherProcess, runner: dict[str, Any]) -> int:
    """The local runner process holding ``runner`` (by its state dir's identity)."""
    for pid in _runner_pids(d):
        state_dir = Path(
            psutil.Process(pid).cmdline()[psutil.Process(pid).cmdline().index("--state-dir") + 1]
        )
        identity = state_dir / "dispatcher.json"
        if identity.exists() and runner["id"] in identity.read_text():
            return pid
    raise AssertionError(f"no local runner process holds {runner['id']}")


def run(kills: int = 5) -> dict[str, Any]:
    one = local(1, kills)
    two = local(2, kills)
    return {
        "local_replaced_s": statistics.median(one),
        "local_replaced_max_s": max(one),
        "local_moved_s": statistics.median(two),
        "local_moved_max_s": max(two),
    }


def print_report(result: dict[str, Any]) -> None:
    for key, what in (
        ("local_replaced", "one local runner, replaced"),
        ("local_moved", "two local runners, flow moved"),
    ):
        median = result[f"{key}_s"]
        print(
            f"  SIGKILL -> flow answers again, {what}: {median:.2f} s median "
            f"(max {result[f'{key}_max_s']:.2f} s)   target <= 2 s {'met' if median <= 2 else 'NOT met'}"
        )
