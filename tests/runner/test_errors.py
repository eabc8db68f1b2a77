"""The one walk over exception groups (runner/errors.py): no process, no trio run."""

from __future__ import annotations

import trio

from fifoflow.runner import FlowLoadError, RunnerError, first, leaves


def test_leaves_flattens_nested_groups_in_order() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    group = BaseExceptionGroup(
        "outer", [a, ExceptionGroup("inner", [b, ExceptionGroup("deep", [c])])]
    )
    assert leaves(group) == [a, b, c]
    assert leaves(a) == [a]


def test_first_matches_kind_and_never_a_cancellation() -> None:
    cancelled = trio.Cancelled._create()
    load = FlowLoadError("f/m", {"type": "SyntaxError", "message": "bad"})
    group = BaseExceptionGroup("g", [cancelled, ExceptionGroup("inner", [ValueError("v"), load])])
    assert first(group, RunnerError) is load
    assert first(group, (KeyError, FlowLoadError)) is load
    assert isinstance(first(group, BaseException), ValueError)
    assert first(group, KeyError) is None
    assert first(BaseExceptionGroup("only", [cancelled]), BaseException) is None
