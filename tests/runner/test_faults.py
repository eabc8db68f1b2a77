"""What the runner decides when a host fails (runner/faults.py): tables, no process."""

from __future__ import annotations

from typing import Any

import pytest

from fifoflow.runner.faults import CrashWindow, TimedOut, deadline, hang_errors
from fifoflow.runner.queues import Delivery


@pytest.mark.parametrize(
    ("limit", "times", "answers"),
    [
        # backoff 0, 0.1, 0.2, 0.4, ... up to the maximum (1 s here); the 5th crash in 30 s gives up
        (5, [0, 1, 2, 3, 4], [0.0, 0.1, 0.2, 0.4, None]),
        (9, [0, 1, 2, 3, 4, 5, 6, 7], [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]),
        # crashes older than the period no longer count
        (3, [0, 1, 40, 41, 42], [0.0, 0.1, 0.0, 0.1, None]),
        # hosts that attach themselves (a web page) never loop
        (None, [0, 1, 2, 3, 4, 5, 6], [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
    ],
)
def test_crash_window(limit: int | None, times: list[float], answers: list[float | None]) -> None:
    crashes = CrashWindow(limit=limit, period=30.0, backoff_max=1.0)
    got = [crashes.crashed(t) for t in times]
    assert got == pytest.approx(answers)
    assert crashes.count == sum(1 for t in times if times[-1] - t <= 30.0)


FRAME = {"module": "f/m", "port": "in", "seq": 3, "index": None, "msg": "frame's"}


@pytest.mark.parametrize(
    ("frame", "timeout", "removed", "want"),
    [
        # the frame goes again: the error names the message the host reported
        (
            {**FRAME, "elapsed": 1.23456},
            1,
            None,
            [
                (
                    "f/m",
                    "in",
                    "frame's",
                    "handler ran past its timeout of 1 s (running for 1.23 s); runtime restarted",
                )
            ],
        ),
        # no timeout known, no elapsed time (the runner's own deadline)
        ({**FRAME, "msg": None}, None, None, [("f/m", "in", None, "handler hung")]),
        (
            {**FRAME, "elapsed": float("nan")},
            0.5,
            None,
            [("f/m", "in", "frame's", "handler ran past its timeout of 0.5 s")],
        ),
        # the message named by its index left the window
        (
            {**FRAME, "index": 1},
            2.0,
            Delivery("f/m", "in", ["stuck"], 3),
            [("f/m", "in", "stuck", "handler ran past its timeout of 2 s")],
        ),
        # a frame that hung twice: every message of it is an error
        (
            FRAME,
            2,
            Delivery("f/other", "side", [1, 2], 3, hangs=2),
            [
                (
                    "f/other",
                    "side",
                    1,
                    "handler ran past its timeout of 2 s; frame hung twice, not delivered again",
                ),
                (
                    "f/other",
                    "side",
                    2,
                    "handler ran past its timeout of 2 s; frame hung twice, not delivered again",
                ),
            ],
        ),
    ],
)
def test_hang_errors(
    frame: dict[str, Any], timeout: Any, removed: Delivery | None, want: list[tuple[Any, ...]]
) -> None:
    got = hang_errors(frame, timeout, removed)
    assert got == [
        TimedOut(m, p, msg, {"type": "Timeout", "message": text}) for m, p, msg, text in want
    ]


@pytest.mark.parametrize(
    ("timeouts", "want"),
    [
        ([], 61.0),  # no module: the default (30 s) counts
        ([0.2, None], 61.0),  # a module without timeout gets the default
        ([0.2, 0.5], 2.0),
        ([45], 91.0),
    ],
)
def test_deadline(timeouts: list[Any], want: float) -> None:
    assert deadline(timeouts, 30.0) == want
