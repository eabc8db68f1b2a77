"""leaves(): exception groups flattened into their leaf exceptions, in order."""

from __future__ import annotations

from fifoflow.api.client.errors import leaves


def test_leaves_flattens_nested_groups_in_order() -> None:
    a, b, c, d = ValueError("a"), KeyError("b"), KeyboardInterrupt(), OSError("d")
    group = BaseExceptionGroup(
        "outer", [a, BaseExceptionGroup("inner", [b, ExceptionGroup("x", [d])]), c]
    )
    assert leaves(group) == [a, b, d, c]


def test_an_exception_that_is_not_a_group_is_its_own_leaf() -> None:
    error = RuntimeError("alone")
    assert leaves(error) == [error]
