"""Where things are by default: the servers' ports and state dirs.

Light on purpose (no server import): the ``fifoflow`` command reads these to build its
parser, and loads quart and hypercorn only when it serves.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_DISPATCHER_PORT",
    "DEFAULT_PORT",
    "default_dispatcher_state_dir",
    "default_state_dir",
]

#: the Runner API's port (fifoflow runner serve)
DEFAULT_PORT = 8470
#: the dispatcher's port (fifoflow dispatcher serve)
DEFAULT_DISPATCHER_PORT = 8480


def default_state_dir() -> Path:
    """``$FIFOFLOW_STATE_DIR``, else ``$XDG_STATE_HOME/fifoflow/runner`` (``~/.local/state/...``)."""
    if env := os.environ.get("FIFOFLOW_STATE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fifoflow" / "runner"


def default_dispatcher_state_dir() -> Path:
    if env := os.environ.get("FIFOFLOW_DISPATCHER_STATE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fifoflow" / "dispatcher"
