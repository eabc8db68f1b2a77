"""Where a runtime instance's host comes from.

A runtime's manifest either has a command, run as a child process over a FIFO pair
(``process.py``) — in the module environment's interpreter, variables and folder when
the instance has one (``environments.py``) — or says ``"attach": true``: its hosts are
web pages that attach themselves over a socket (``attached.py``). Both give the same
interface, so :class:`~.instance.RuntimeInstance` does not care which it got.

Resource handling: :func:`open_host` returns an async context manager; the host lives
inside it and is killed (a process: reaped, its FIFOs removed) when it is left.

Error handling: a host that cannot be had raises :class:`RuntimeStartError`: when the
context is entered, or at once for an attaching runtime on a runner that takes none.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .attached import attach_runtime
from .errors import RuntimeStartError
from .process import spawn_runtime

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from ..runtimes.registry import RuntimeManifest
    from .attached import AttachedProcess
    from .config import RunnerConfig
    from .process import LogSink, RuntimeProcess

__all__ = ["open_host"]


def open_host(
    manifest: RuntimeManifest,
    config: RunnerConfig,
    name: str,
    options: dict[str, Any],
    on_log: LogSink,
) -> AbstractAsyncContextManager[RuntimeProcess | AttachedProcess]:
    """A host of ``manifest`` named ``name``; ``options`` are the environment's
    :meth:`~.environments.Environment.host_options` (empty: the runtime's own)."""
    if manifest.attach:
        if config.attached is None:
            raise RuntimeStartError(
                f"{name}: runtime {manifest.id} has hosts that attach"
                " themselves (a web page), and this runner takes none"
            )
        return attach_runtime(config.attached, name, start_timeout=config.start_timeout)
    argv = manifest.argv(binary=options.get("binary"))
    if options.get("python"):
        argv = [options["python"] if part == sys.executable else part for part in argv]
    return spawn_runtime(
        argv,
        name=name,
        on_log=on_log,
        start_timeout=config.start_timeout,
        fifo_parent=config.fifo_dir,
        env=options.get("env") or None,
        cwd=options.get("cwd"),
    )
