"""Errors of the flows package.

::

    FlowError            a flow document is invalid; .problems lists every (path, message)
"""

from __future__ import annotations

import attrs

__all__ = ["FlowError", "Problem"]


@attrs.frozen
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FlowError(Exception):
    """An invalid flow. ``str()`` gives one ``path: message`` line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
