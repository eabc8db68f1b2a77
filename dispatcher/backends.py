"""Backends start and stop runners for the dispatcher. Placement never sees them: a
started runner registers over its control link like any other.

The interface (``Backend``): ``start_runner(name, token)`` starts a runner that will
register with ``token`` (``None``: it is registered already and has its identity),
``stop_runner(name)`` stops it gracefully, ``runners()`` lists what the backend runs.
``LocalBackend`` runs ``fifoflow runner serve`` processes on this machine; the container
backends (``docker_backend.py``, ``swarm_backend.py``) do the same with containers.

A local runner whose process exits without being asked to (SIGKILL, OOM, a crash) is
declared lost at once (``Dispatcher.runner_gone``: its flows are placed again, without
waiting for its heartbeats to run out) and started again, with its identity and state
dir, after a backoff (``runner/faults.py``'s :class:`CrashWindow`: 0, 0.1 s, 0.2 s, ...
up to ``backoff_max``); ``crash_limit`` exits within ``crash_period`` give it up. Each
step is a dispatcher event: ``local-runner-exited`` (with ``restarts``, ``delay``) and
``local-runner-failed`` (with the reason, also the backend's problem that pending flows
show).

Resource handling: ``LocalBackend.run`` owns every runner process and the task that
watches each; leaving it sends each SIGTERM (they sign off and save their flows' state),
waits up to ``stop_timeout``, then kills what is left, and reaps them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson
import trio

from ..runner.faults import CrashWindow

if TYPE_CHECKING:
    from collections.abc import Callable

    from .service import Dispatcher

__all__ = ["Backend", "LocalBackend", "LocalRunner"]

SECONDS = 1.0


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
    #: its recent unexpected exits (the backoff and the crash limit)
    crashes: CrashWindow
    #: how many times it was started again after an exit
    restarts: int = 0


class LocalBackend:
    name = "local"

    def __init__(
        self,
        root: Path,
        dispatcher_url: str,
        *,
        dispatcher: Dispatcher | None = None,
        stop_timeout: float = 10 * SECONDS,
        crash_limit: int = 5,
        crash_period: float = 30 * SECONDS,
        backoff_max: float = 5 * SECONDS,
        say: Callable[[str], None] | None = None,
        dispatcher_fingerprint: str | None = None,
    ) -> None:
        self.root = root
        self.dispatcher_url = dispatcher_url
        #: the dispatcher's TLS certificate fingerprint its runners pin (None: plain HTTP)
        self.dispatcher_fingerprint = dispatcher_fingerprint
        #: told when a runner's process ends (None: nobody is; tests of the backend alone)
        self.dispatcher = dispatcher
        self.stop_timeout = stop_timeout
        self.crash_limit = crash_limit
        self.crash_period = crash_period
        self.backoff_max = backoff_max
        self.say = say or (lambda text: None)
        self._runners: dict[str, LocalRunner] = {}
        #: runners given up after a crash loop: name -> why
        self.failed: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None

    def state_dir(self, name: str) -> Path:
        return self.root / name

    def registered(self, name: str) -> bool:
        return (self.state_dir(name) / "dispatcher.json").exists()

    def runner_id(self, name: str) -> str | None:
        """The id the runner registered with (from its state dir), if it did."""
        try:
            identity = orjson.loads((self.state_dir(name) / "dispatcher.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        runner_id = identity.get("runnerId") if isinstance(identity, dict) else None
        return runner_id if isinstance(runner_id, str) else None

    def runners(self) -> list[str]:
        return sorted(self._runners)

    def restarts(self, name: str) -> int:
        runner = self._runners.get(name)
        return runner.restarts if runner is not None else 0

    async def run(
        self, *, task_status: trio.TaskStatus[LocalBackend] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    await self.stop_all()
                nursery.cancel_scope.cancel()

    async def stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for name in list(self._runners):
                nursery.start_soon(self.stop_runner, name)

    async def start_runner(self, name: str, token: str | None) -> None:
        crashes = CrashWindow(
            limit=self.crash_limit, period=self.crash_period, backoff_max=self.backoff_max
        )
        self.failed.pop(name, None)
        await self._spawn(name, token, crashes, 0)

    async def _spawn(
        self, name: str, token: str | None, crashes: CrashWindow, restarts: int
    ) -> None:
        if self._nursery is None:
            raise RuntimeError("the local backend is not running (start LocalBackend.run first)")
        state_dir = self.state_dir(name)
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "fifoflow.api", "runner", "serve", "--port", "0",
            "--state-dir", str(state_dir), "--dispatcher", self.dispatcher_url,
        ]  # fmt: skip
        if self.dispatcher_fingerprint:
            argv += ["--dispatcher-fingerprint", self.dispatcher_fingerprint]
        # The token goes in the environment, never on the command line (which every
        # user of the machine can read in /proc); the runner takes it out of its own
        # environment before it starts anything.
        env = {k: v for k, v in os.environ.items() if k != "FIFOFLOW_REGISTRATION_TOKEN"}
        if token is not None:
            env["FIFOFLOW_REGISTRATION_TOKEN"] = token
        log = state_dir / "runner.log"
        with open(log, "ab") as out:  # noqa: ASYNC230 (opening a local log file)
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        runner = LocalRunner(name, state_dir, process, log, crashes, restarts)
        self._runners[name] = runner
        self._nursery.start_soon(self._watch, runner, token)

    async def _watch(self, runner: LocalRunner, token: str | None) -> None:
        """Wait for the runner's process to end; one that was not stopped on purpose is
        declared lost at once and started again after the backoff (or given up)."""
        code = await runner.process.wait()
        if self._runners.get(runner.name) is not runner:
            return  # stopped by stop_runner
        why = f"its process exited with status {code}"
        runner_id = self.runner_id(runner.name)
        if self.dispatcher is not None and runner_id is not None:
            self.dispatcher.runner_gone(runner_id, why)
        while True:
            delay = runner.crashes.crashed(trio.current_time())
            if delay is None:
                del self._runners[runner.name]
                reason = (
                    f"local runner {runner.name} exited {runner.crashes.count} times within "
                    f"{self.crash_period:g} s; last: {why}; not started again (log: {runner.log})"
                )
                self.failed[runner.name] = reason
                self._event(runner_id, "local-runner-failed", name=runner.name, why=reason)
                self.say(reason)
                if self.dispatcher is not None:
                    self.dispatcher.backend_problem = reason
                return
            runner.restarts += 1
            self._event(
                runner_id,
                "local-runner-exited",
                name=runner.name,
                why=why,
                restarts=runner.restarts,
                delay=delay,
            )
            self.say(
                f"local runner {runner.name}: {why}; starting it again ({runner.restarts} so far)"
            )
            if delay:
                await trio.sleep(delay)
            if self._runners.get(runner.name) is not runner:
                return  # stopped meanwhile
            if self.registered(runner.name):
                token = None
            elif self.dispatcher is not None:
                token = self.dispatcher.issue_token()["token"]
            try:
                await self._spawn(runner.name, token, runner.crashes, runner.restarts)
            except OSError as exc:
                why = f"it cannot be started: {exc}"  # counts as a crash: back off, give up
                continue
            return

    def _event(self, runner_id: str | None, kind: str, **detail: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.store.add_event(runner_id, kind, detail)

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
