"""Suite-wide guards: no test may leave a process, a FIFO directory or a temp dir behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent


def child_pids(pid: int | None = None) -> set[int]:
    """Live (non-zombie) descendants of ``pid`` (default: this process), read from /proc."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z":
            continue
        parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def fifoflow_dirs() -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.glob("fifoflow-*")}


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    dirs_before = fifoflow_dirs()
    yield
    # A module-scoped server outlives single tests; its own teardown checks that it ends.
    if "live_server" not in request.fixturenames:
        leftover = child_pids()
        assert not leftover, f"test left processes running: {sorted(leftover)}"
    new_dirs = fifoflow_dirs() - dirs_before
    assert not new_dirs, f"test left FIFO directories behind: {sorted(new_dirs)}"
