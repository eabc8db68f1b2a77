"""Hosts of compiled runtimes (go): their binary is built before they start.

A compiled runtime's host (``RuntimeManifest.build``) is one binary per set of module
sources (``runtimes/gobuild.py``). :func:`build_host` is called by the instance before
each start of its host: it builds that binary (in a worker thread; the flow's other
hosts, and during a hot swap the old binary, run on meanwhile) or finds it in the
cache, and publishes ``build`` events of the flow. The set is the instance's
``build_loads`` (its plan's load frames, so a host a swap starts empty is built with the
modules it is about to receive), or its current modules.

Error handling: a source that does not compile raises :class:`FlowLoadError` for the
first module with that source, its error naming the file and line (``CompileError``),
as a python module's syntax error does; a missing toolchain is a
:class:`RuntimeStartError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..runtimes.gobuild import (
    BuildResult,
    GoBuildError,
    GoSource,
    cache_dir,
    default_cache,
    ensure_binary,
)
from .errors import FlowLoadError, RuntimeStartError
from .events import EventKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import RunnerConfig
    from .instance import RuntimeInstance

__all__ = ["build_host", "build_loads", "go_cache", "go_cache_for"]


def go_cache(instance: RuntimeInstance) -> Path:
    """Where the instance's binaries are built and cached (:func:`go_cache_for`)."""
    return go_cache_for(instance.config)


def go_cache_for(config: RunnerConfig) -> Path:
    """Where a runner's binaries are built and cached: ``$FIFOFLOW_GO_CACHE``; beside
    an environments folder the runner was given explicitly (``env_dir``); else the
    machine's (``~/.cache/fifoflow/go-builds``), shared by every runner of the machine:
    binaries are named by content, so sharing is safe, and a runner with a fresh state
    dir does not compile Go's standard library again."""
    given = os.environ.get("FIFOFLOW_GO_CACHE")
    if given:
        return Path(given)
    if config.env_dir is not None:
        return cache_dir(config.env_dir)
    return default_cache()


async def build_loads(
    loads: dict[str, dict[str, Any]],
    cache: Path,
    progress: Callable[[dict[str, Any]], None],
    name: str,
) -> BuildResult:
    """The binary for the module set ``loads`` (module -> its load frame: ``code``,
    ``filename``), built in a worker thread unless cached; ``progress`` (called in trio)
    gets the build's events. Raises :class:`FlowLoadError` naming the first module with
    the source that does not compile (its error: file and line), or
    :class:`RuntimeStartError` (``name``: whose) when no module is at fault."""
    sources = [
        GoSource(load.get("code") or "", load.get("filename") or module)
        for module, load in sorted(loads.items())
    ]
    token = trio.lowlevel.current_trio_token()

    def report(event: dict[str, Any]) -> None:
        trio.from_thread.run_sync(progress, event, trio_token=token)

    try:
        return await trio.to_thread.run_sync(
            lambda: ensure_binary(sources, cache, progress=report),
            abandon_on_cancel=True,
        )
    except GoBuildError as exc:
        if exc.hash is None:
            raise RuntimeStartError(f"{name}: {exc.message}") from None
        module = next(
            (
                m
                for m, load in sorted(loads.items())
                if GoSource(load.get("code") or "", "").hash == exc.hash
            ),
            name,
        )
        raise FlowLoadError(module, exc.error()) from None


async def build_host(instance: RuntimeInstance) -> dict[str, Any]:
    """The host options (``binary``) of a compiled runtime's instance, built if needed."""
    flow = instance.flow
    runtime = instance.manifest.id

    def progress(event: dict[str, Any]) -> None:
        flow.publish({"kind": EventKind.BUILD, "runtime": runtime, **event})

    result = await build_loads(
        instance.build_loads or instance.modules, go_cache(instance), progress, instance.name
    )
    instance.last_build = {"key": result.key, "cached": result.cached, "seconds": result.seconds}
    return {"binary": str(result.path)}
