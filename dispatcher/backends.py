"""Backends start and stop runners for the dispatcher. Placement never sees them: a
started runner registers over its control link like any other.

The interface (``Backend``): ``start_runner(name, token)`` starts a runner that will
register with ``token`` (``None``: it is registered already and has its identity),
``stop_runner(name)`` stops it gracefully, ``runners()`` lists what the backend runs.
``LocalBackend`` runs ``fifoflow runner serve`` processes on this machine; the container
backend (next issue) implements the same three calls with the docker SDK.

Resource handling: ``LocalBackend.run`` owns every runner process; leaving it sends each
SIGTERM (they sign off and save their flows' state), waits up to ``stop_timeout``, then
kills what is left, and reaps them all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import attrs
import trio

__all__ = ["Backend", "LocalBackend", "LocalRunner"]


class Backend(Protocol):
    name: str

    async def start_runner(self, name: str, token: str | None) -> None: ...

    async def stop_runner(self, name: str) -> None: ...

    def runners(self) -> list[str]: ...


@attrs.define
class LocalRunner:
    name: str
    state_dir: Path
    process: trio.Process
    log: Path


class LocalBackend:
    name = "local"

    def __init__(self, root: Path, dispatcher_url: str, *, stop_timeout: float = 10.0) -> None:
        self.root = root
        self.dispatcher_url = dispatcher_url
        self.stop_timeout = stop_timeout
        self._runners: dict[str, LocalRunner] = {}

    def state_dir(self, name: str) -> Path:
        return self.root / name

    def registered(self, name: str) -> bool:
        return (self.state_dir(name) / "dispatcher.json").exists()

    def runners(self) -> list[str]:
        return sorted(self._runners)

    async def run(
        self, *, task_status: trio.TaskStatus[LocalBackend] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.stop_all()

    async def stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for name in list(self._runners):
                nursery.start_soon(self.stop_runner, name)

    async def start_runner(self, name: str, token: str | None) -> None:
        state_dir = self.state_dir(name)
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "fifoflow.api", "runner", "serve", "--port", "0",
            "--state-dir", str(state_dir), "--dispatcher", self.dispatcher_url,
        ]  # fmt: skip
        if token is not None:
            argv += ["--registration-token", token]
        log = state_dir / "runner.log"
        with open(log, "ab") as out:  # noqa: ASYNC230 (opening a local log file)
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self._runners[name] = LocalRunner(name, state_dir, process, log)

    async def stop_runner(self, name: str) -> None:
        runner = self._runners.pop(name, None)
        if runner is None:
            return
        if runner.process.returncode is None:
            runner.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(self.stop_timeout):
                await runner.process.wait()
            if runner.process.returncode is None:
                runner.process.kill()
        await runner.process.wait()
