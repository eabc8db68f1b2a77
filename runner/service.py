"""The runner service: the object behind the Runner API.

It owns a nursery in which every started flow runs, and it is the only thing the HTTP
layer (``api/``) talks to. Method names follow the Runner API: ``list_runtimes``,
``list_flows_for_runtime``, ``add_or_update_flow``, ``remove_flow``, ``start_flow``,
``stop_flow``, ``set_breakpoint_at_module``, ``remove_breakpoint_at_module``,
``single_step_flow``; plus ``inject``, ``wait_idle``, ``module_state``, ``module_errors``,
``flow_logs``, ``health``, and the debugger's ``pause_flow``, ``continue_flow``,
``queues``, ``edit_queued_message``, ``debug_state``. (About 600 lines: one method per
API call, each with its write-before-change step of the state dir; what they call, the
store, working dirs, hot swap, debugger and environments, lives in modules of its own.)

Persistence: with ``config.state_dir`` set, every flow, whether it should be running,
and its modules' state are kept in a :class:`~.store.FlowStore`; :meth:`Runner.run`
brings them back (flows marked running are started with their state). While flows
run, module state is checkpointed every ``config.checkpoint_interval``; a graceful
stop writes the final state.

Resource handling: :meth:`Runner.run` (or :func:`open_runner`) owns every flow task
and, through them, every runtime host process and FIFO; leaving it stops them all.

Error handling: calls with a bad flow id, module or state raise :class:`RunnerError`
subclasses with a message naming what was wrong; nothing a caller passes can crash the
service's nursery.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from ..flows import FlowError, dump_flow, parse_flow
from ..flows.requirements import normalize
from ..runtimes.registry import discover
from .config import RunnerConfig
from .environments import EnvironmentManager
from .errors import (
    FlowNotFound,
    FlowStateError,
    RevisionConflict,
    RunnerError,
    RuntimeNotFound,
    StorageError,
)
from .events import EventHub, EventKind, Subscription
from .flowrun import FlowRun, OutputSink
from .journal import Journal
from .status import FlowStatus
from .store import FlowStore, file_stem
from .swap import hot_swap
from .workdirs import WorkDirs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..flows import Flow
    from ..runtimes.registry import RuntimeManifest
    from .runs.executor import RunExecutor

__all__ = ["Runner", "UpdateResult", "open_runner"]

log = logging.getLogger("fifoflow.runner")


@attrs.frozen
class UpdateResult:
    created: bool
    revision: int
    #: for a hot swap: what changed, messages re-homed and dropped, pause and duration
    report: dict[str, Any] | None


def _env_dir(config: RunnerConfig) -> Path:
    if config.env_dir is not None:
        return config.env_dir
    if config.state_dir is not None:
        return config.state_dir / "envs"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "fifoflow" / "envs"


def _version() -> str:
    try:
        return metadata.version("fifoflow")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Runner:
    def __init__(
        self, config: RunnerConfig | None = None, runtimes: dict[str, RuntimeManifest] | None = None
    ) -> None:
        self.config = config or RunnerConfig()
        self.runtimes = runtimes if runtimes is not None else discover()
        self.events = EventHub()
        self._flows: dict[str, FlowRun] = {}
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()  # one deploy (add/update/remove/start/stop) at a time
        self.store = FlowStore.open(self.config.state_dir) if self.config.state_dir else None
        self.environments = EnvironmentManager(_env_dir(self.config))
        #: exec modules' private working directories (for the files they carry)
        self.workdirs = WorkDirs(self.config.state_dir / "work" if self.config.state_dir else None)
        if self.store is not None and self.config.fifo_dir is None:
            self.config = attrs.evolve(self.config, fifo_dir=self.store.fifos_dir)
        #: whether each flow should be running (what the user asked; persisted)
        self._want_running: dict[str, bool] = {}
        self._saved_states: dict[str, bytes] = {}
        #: why the last checkpoint of a flow failed (reported once, until it works again)
        self._checkpoint_errors: dict[str, str] = {}
        #: the journals of flows with durability "journal" (runner/JOURNAL.md)
        self._journals: dict[str, Journal] = {}
        #: flow id -> messages its journal held unhandled when it was opened (restore)
        self.recovered: dict[str, int] = {}
        #: what went wrong while restoring the state dir (also logged)
        self.restore_problems: list[str] = []
        #: the runs of a runner served alone (runner/runs/local.py sets it while it runs;
        #: None when the runner takes its runs from a dispatcher)
        self.run_book: Any = None
        self.started_at = time.time()
        self.version = _version()
        #: runs' executor (``runner/runs/executor.py``), made by :meth:`run` when
        #: ``config.max_runs`` > 0; whoever wires runs sets its ``reporter``
        self.executor: RunExecutor | None = None

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. With a state dir, restore its flows first (flows that
        should run are started before ``task_status.started``)."""
        try:
            if self.store is not None:
                self.store.lock()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.store is not None:
                    await self._restore()
                    nursery.start_soon(self._checkpoints)
                nursery.start_soon(self._collect_environments)
                if self.config.max_runs > 0:
                    from .runs.executor import RunExecutor

                    self.executor = RunExecutor(
                        self,
                        max_runs=self.config.max_runs,
                        archive=self.config.state_dir / "runs" if self.config.state_dir else None,
                        retention=self.config.run_retention,
                        warm=self.config.warm_hosts,
                    )
                    await nursery.start(self.executor.run)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for journal in self._journals.values():
                journal.close()
            self.workdirs.close()
            if self.store is not None:
                self.store.unlock()

    async def aclose(self) -> None:
        """Stop every running flow gracefully; their final state is written to the state dir,
        and they stay marked as running so that the next start brings them back."""
        async with trio.open_nursery() as nursery:
            for flow in list(self._flows.values()):
                nursery.start_soon(flow.stop)
        with trio.move_on_after(self.config.stop_timeout):
            for journal in list(self._journals.values()):
                try:
                    await journal.durable()
                except StorageError as exc:
                    log.error("%s", exc)
        self.checkpoint()

    # ------------------------------------------------------------------ persistence

    async def _restore(self) -> None:
        assert self.store is not None
        stored, problems = self.store.load()
        self.workdirs.clear()
        for item in stored:
            try:
                flow = parse_flow(
                    item.document, base_dir=None, runtimes=self.runtimes, source_name=item.flow_id
                )
            except FlowError as exc:
                problems.append(f"stored flow {item.flow_id!r} is no longer valid here: {exc}")
                continue
            try:
                flow = self.workdirs.prepare(flow)
            except OSError as exc:
                problems.append(f"stored flow {item.flow_id!r}: cannot write its files: {exc}")
                continue
            run = FlowRun(flow, self.runtimes, self.config, self.events, self.environments)
            run.revision = item.revision
            run.seed_states(item.states)
            try:
                await self._use_journal(run)
            except RunnerError as exc:
                problems.append(f"stored flow {item.flow_id!r}: {exc}")
                continue
            self._flows[flow.id] = run
            self._want_running[flow.id] = item.running
            self._saved_states[flow.id] = orjson.dumps(item.states)
        for flow_id, run in sorted(self._flows.items()):
            if self._want_running[flow_id]:
                try:
                    assert self._nursery is not None
                    await self._nursery.start(run.run)
                except RunnerError as exc:
                    problems.append(f"stored flow {flow_id!r} did not start again: {exc}")
        for problem in problems:
            log.warning("%s", problem)
        self.restore_problems = [*self.restore_problems, *problems]

    def checkpoint(self) -> None:
        """Write the module state of every flow whose state changed since the last write.

        Error handling: a flow whose state cannot be written (encoded or stored) is
        reported once (a log line, a ``checkpoint`` event with ``error`` {code,
        message}) and keeps its last written state; the other flows are written all the
        same."""
        if self.store is None:
            return
        for journal in self._journals.values():
            journal.request_compaction()
        for flow_id, run in list(self._flows.items()):
            snapshot = run.snapshot()
            try:
                data = orjson.dumps(snapshot)
            except (TypeError, ValueError) as exc:  # orjson's errors: a value no stage can write
                self._checkpoint_failed(run, "unencodable", f"flow {flow_id!r}: {exc}")
                continue
            if self._saved_states.get(flow_id) != data:
                # One flow's file that cannot be written must not stop the others'.
                try:
                    self.store.save_states(flow_id, snapshot)
                except StorageError as exc:
                    self._checkpoint_failed(run, exc.code, str(exc))
                    continue
                self._checkpoint_errors.pop(flow_id, None)
                self._saved_states[flow_id] = data
                run.publish({"kind": EventKind.CHECKPOINT, "modules": sorted(snapshot)})

    def _checkpoint_failed(self, run: FlowRun, code: str, message: str) -> None:
        """Log and publish (a ``checkpoint`` event with ``error``) a failed write, once
        until it changes or works again; the next checkpoint tries again."""
        if self._checkpoint_errors.get(run.flow_id) == message:
            return
        self._checkpoint_errors[run.flow_id] = message
        log.error("could not checkpoint: %s", message)
        run.publish(
            {
                "kind": EventKind.CHECKPOINT,
                "modules": [],
                "error": {"code": code, "message": message},
            }
        )

    async def _checkpoints(self) -> None:
        while True:
            await trio.sleep(self.config.checkpoint_interval)
            try:
                self.checkpoint()
            except OSError as exc:  # a full disk must not take the flows down with it
                log.error("could not write module state to %s: %s", self.config.state_dir, exc)

    async def _collect_environments(self) -> None:
        """Remove environments no flow has used for ``env_max_idle``, now and then."""
        while True:
            try:
                # Mark what this runner uses: another runner sharing the folder must not
                # collect it.
                self.environments.touch(self.environments_in_use())
                removed = self.gc_environments()
            except OSError as exc:
                log.error("could not clean up environments in %s: %s", self.environments.root, exc)
            else:
                for env_id in removed:
                    log.info(
                        "removed environment %s (unused for %g s)", env_id, self.config.env_max_idle
                    )
            await trio.sleep(self.config.env_gc_interval)

    def _save_flow(self, flow: Flow, revision: int, *, running: bool | None = None) -> None:
        """Write a flow's document, revision and whether it should run (by default: what
        ``_want_running`` says). Raises :class:`StorageError`."""
        if self.store is not None:
            document = orjson.loads(dump_flow(flow, inline=True))
            if running is None:
                running = self._want_running.get(flow.id, False)
            self.store.save_flow(flow.id, document, revision=revision, running=running)

    def _restore_saved(self, run: FlowRun) -> None:
        """Put back what the store held for ``run`` after a change that wrote first and then
        failed; a failure here is logged (the change's own error is the one raised)."""
        try:
            self._save_flow(run.flow, run.revision)
        except StorageError as exc:
            log.error("could not restore the stored version of flow %r: %s", run.flow_id, exc)

    # ------------------------------------------------------------------ journals

    def _durability(self, flow: Flow) -> str:
        return flow.durability or self.config.durability

    def _check_durability(self, flow: Flow) -> None:
        if self._durability(flow) == "journal" and self.store is None:
            raise RunnerError(
                f"flow {flow.id!r}: durability 'journal' needs a state dir "
                "(start the runner with --state-dir)"
            )

    def journal_path(self, flow_id: str) -> Path:
        assert self.store is not None
        return self.store.root / "journal" / f"{file_stem(flow_id)}.log"

    async def _use_journal(self, run: FlowRun) -> None:
        """Give a journaled flow its journal (opened and read back the first time, its
        writer started); a flow that is not journaled has none (a journal it had is
        removed). Raises StorageError, RunnerError."""
        if self._durability(run.flow) != "journal":
            old = self._journals.pop(run.flow_id, None)
            if old is not None:
                old.remove()
            return
        self._check_durability(run.flow)
        journal = self._journals.get(run.flow_id)
        if journal is None:
            if self._nursery is None:
                raise RunnerError("the runner is not running (call Runner.run first)")
            config = self.config
            journal = Journal.open(
                self.journal_path(run.flow_id),
                fsync=config.journal_fsync,
                max_bytes=config.journal_max_bytes,
                compact_bytes=config.journal_compact_bytes,
                reserve_bytes=config.journal_reserve_bytes,
            )
            if journal.dropped_bytes:
                problem = (
                    f"flow {run.flow_id!r}: the journal's last {journal.dropped_bytes} bytes "
                    "were a torn or corrupt record (a write cut short); dropped"
                )
                log.warning("%s", problem)
                self.restore_problems.append(problem)
            await self._nursery.start(journal.run)
            self._journals[run.flow_id] = journal
            if journal.depth:
                self.recovered[run.flow_id] = journal.depth
        run.use_journal(journal)

    @property
    def journaled(self) -> bool:
        """Whether any flow here is journaled."""
        return bool(self._journals)

    def journal_depth(self) -> int:
        """Messages in this runner's journals not handled yet (lost with the state dir)."""
        return sum(j.depth for j in self._journals.values())

    # ------------------------------------------------------------------ Runner API

    def list_runtimes(self) -> list[dict[str, str]]:
        return [m.describe() for m in sorted(self.runtimes.values(), key=lambda m: m.id)]

    def list_flows_for_runtime(self, runtime_id: str) -> list[str]:
        if runtime_id not in self.runtimes:
            known = ", ".join(sorted(self.runtimes))
            raise RuntimeNotFound(f"unknown runtime {runtime_id!r} (known: {known})")
        return sorted(
            fid
            for fid, run in self._flows.items()
            if any(m.runtime == runtime_id for m in run.flow.modules)
        )

    async def add_or_update_flow(self, flow: Flow, *, revision: int | None = None) -> bool:
        """Add a flow (``True``) or update one (``False``); see :meth:`apply_flow`."""
        return (await self.apply_flow(flow, revision=revision)).created

    async def apply_flow(
        self,
        flow: Flow,
        *,
        revision: int | None = None,
        states: dict[str, Any] | None = None,
    ) -> UpdateResult:
        """Add a flow, or update one. A running flow is hot-swapped (``runner/swap.py``):
        it keeps running, no message is lost, module state is kept; new code that does
        not load is refused (:class:`SwapRejected`) and the old version runs on. A stopped
        flow is replaced, keeping the state of the modules that are still there.

        With ``revision``, refuse (:class:`RevisionConflict`) unless the flow is at that
        revision (``0``: the flow must not exist yet). ``states`` (module id -> state)
        seeds a flow that is not running (a flow placed again by a dispatcher).

        Exec modules' ``files`` are written to their working directories first
        (``runner/workdirs.py``); directories the flow no longer uses are removed after."""
        async with self._lock:
            try:
                return await self._apply(flow, revision, states)
            finally:
                current = self._flows.get(flow.id)
                if current is not None:
                    self.workdirs.prune(current.flow)
                else:
                    self.workdirs.remove(flow.id)

    async def _apply(
        self, flow: Flow, revision: int | None, states: dict[str, Any] | None
    ) -> UpdateResult:
        current = self._flows.get(flow.id)
        have = current.revision if current is not None else 0
        if revision is not None and revision != have:
            raise RevisionConflict(
                f"flow {flow.id!r} is at revision {have}, not {revision}: "
                "someone else changed it; read it again and re-apply your change"
            )
        if current is not None and current.status in (FlowStatus.STARTING, FlowStatus.STOPPING):
            raise FlowStateError(
                f"flow {flow.id!r} is {current.status}; update it once that is done"
            )
        try:
            flow = self.workdirs.prepare(flow)
        except OSError as exc:
            raise StorageError.from_os_error(
                exc, f"the modules' files of flow {flow.id!r}"
            ) from exc
        # The new version is written first: if it cannot be stored (StorageError),
        # nothing changed, and no flow is registered that a restart would not bring back.
        if current is not None and current.status is FlowStatus.RUNNING:
            if self._durability(flow) != self._durability(current.flow):
                raise FlowStateError(
                    f"flow {flow.id!r} is running with durability {self._durability(current.flow)!r}; "
                    "stop it to change its durability"
                )
            self._save_flow(flow, current.revision + 1)
            try:
                report = await hot_swap(current, flow, states)
            except BaseException:
                self._restore_saved(current)  # the old version runs on
                raise
            current.revision += 1
            self.checkpoint()
            return UpdateResult(created=False, revision=current.revision, report=report)
        run = FlowRun(flow, self.runtimes, self.config, self.events, self.environments)
        if current is not None:
            run.sink = current.sink
            run.revision = current.revision + 1
            run.seed_states(current.snapshot())
        if states:
            run.seed_states(states)
        self._check_durability(flow)
        self._save_flow(flow, run.revision)
        try:
            await self._use_journal(run)
        except BaseException:
            if current is not None:
                self._restore_saved(current)
            elif self.store is not None:
                self.store.remove(flow.id)
            raise
        self._flows[flow.id] = run
        self._want_running.setdefault(flow.id, False)
        return UpdateResult(created=current is None, revision=run.revision, report=None)

    async def remove_flow(self, flow_id: str) -> None:
        async with self._lock:
            run = self.flow(flow_id)
            await run.stop()
            # forgotten only once its files are gone (else a restart would bring it back)
            if self.store is not None:
                self.store.remove(flow_id)
            journal = self._journals.pop(flow_id, None)
            if journal is not None:
                journal.remove()
            del self._flows[flow_id]
            self._want_running.pop(flow_id, None)
            self._saved_states.pop(flow_id, None)
            self._checkpoint_errors.pop(flow_id, None)
            self.workdirs.remove(flow_id)

    async def start_flow(self, flow_id: str) -> None:
        async with self._lock:
            run = self.flow(flow_id)
            if run.status in (FlowStatus.RUNNING, FlowStatus.STARTING):
                return
            if self._nursery is None:
                raise RunnerError("the runner is not running (call Runner.run first)")
            marked = not self._want_running.get(flow_id)
            if marked:  # written first: a flow that runs comes back after a restart
                self._save_flow(run.flow, run.revision, running=True)
                self._want_running[flow_id] = True
            try:
                await self._nursery.start(run.run)
            except BaseException:
                if marked:
                    self._want_running[flow_id] = False
                    self._restore_saved(run)
                raise

    async def stop_flow(self, flow_id: str) -> None:
        async with self._lock:
            run = self.flow(flow_id)
            await run.stop()  # stopping never waits for the disk; then it is recorded
            if run.journal is not None:
                with trio.move_on_after(self.config.stop_timeout):
                    try:
                        await run.journal.durable()  # what the hosts said last, on disk
                    except StorageError as exc:
                        log.error("%s", exc)
            self.checkpoint()
            if self._want_running.get(flow_id):
                self._want_running[flow_id] = False
                self._save_flow(run.flow, run.revision)

    async def set_breakpoint_at_module(
        self, flow_module_id: str, condition: str | None = None
    ) -> dict[str, Any]:
        """Pause the flow when a message (matching ``condition``, see ``conditions.py``)
        is about to reach the module. ``flow_module_id`` is ``"<flow id>/<module id>"``."""
        run, module = self._flow_module(flow_module_id)
        async with self._lock:
            return (await run.debugger.set_breakpoint(module, condition)).describe()

    async def remove_breakpoint_at_module(self, flow_module_id: str) -> bool:
        """``True`` if there was a breakpoint at the module."""
        run, module = self._flow_module(flow_module_id)
        async with self._lock:
            return await run.debugger.remove_breakpoint(module)

    async def single_step_flow(self, flow_id: str | None = None) -> dict[str, Any]:
        """One tick of a paused flow (``debugger.py``). Without ``flow_id``: the one
        paused flow."""
        if flow_id is None:
            paused = sorted(fid for fid, run in self._flows.items() if run.debugger.paused)
            if len(paused) != 1:
                raise FlowStateError(
                    "singleStepFlow without a flow id needs exactly one paused flow; "
                    f"paused: {', '.join(paused) or 'none'}"
                )
            flow_id = paused[0]
        run = self.flow(flow_id)
        async with self._lock:
            return await run.debugger.step()

    async def pause_flow(self, flow_id: str) -> dict[str, Any]:
        run = self.flow(flow_id)
        if run.status is not FlowStatus.RUNNING:
            raise FlowStateError(f"flow {flow_id!r} is {run.status}: start it to pause it")
        async with self._lock:
            await run.debugger.pause()
        return run.debugger.describe()

    async def continue_flow(self, flow_id: str) -> dict[str, Any]:
        run = self.flow(flow_id)
        async with self._lock:
            await run.debugger.resume()
        return run.debugger.describe()

    def debug_state(self, flow_id: str) -> dict[str, Any]:
        return self.flow(flow_id).debugger.describe()

    def queues(self, flow_id: str) -> dict[str, list[dict[str, Any]]]:
        return self.flow(flow_id).debugger.queues()

    async def edit_queued_message(
        self, flow_id: str, module_id: str, index: int, msg: Any | None
    ) -> Any:
        """Replace (``msg``) or drop (``None``) a waiting message of a paused flow; the
        old message."""
        return await self.flow(flow_id).debugger.edit_queued(module_id, index, msg)

    # ------------------------------------------------------------------ environments

    def environments_in_use(self) -> dict[str, list[str]]:
        """Environment id -> the flows whose modules need it."""
        used: dict[str, list[str]] = {}
        for fid, run in sorted(self._flows.items()):
            for env in sorted({m.environment for m in run.flow.modules if m.environment}):
                used.setdefault(env, []).append(fid)
        return used

    def list_environments(self, runtime_id: str | None = None) -> list[dict[str, Any]]:
        if runtime_id is not None and runtime_id not in self.runtimes:
            raise RuntimeNotFound(
                f"unknown runtime {runtime_id!r} (known: {', '.join(sorted(self.runtimes))})"
            )
        used = self.environments_in_use()
        return [
            {**env.describe(), "usedBy": used.get(env.id, [])}
            for env in self.environments.list()
            if runtime_id is None or env.runtime == runtime_id
        ]

    def _env_progress(self, event: dict[str, Any]) -> None:
        self.events.publish({"kind": EventKind.ENVIRONMENT, "flow": None, **event})

    async def change_environment(
        self, env_id: str, install: list[str], remove: list[str]
    ) -> dict[str, Any]:
        """Install or remove packages in an environment. Running hosts keep what they
        imported; restart their flows to use the change."""
        env = self.environments.get(env_id)
        install = [normalize(env.runtime, spec) for spec in install]
        env = await self.environments.change(env_id, install, remove, self._env_progress)
        return env.describe()

    async def rebuild_environment(self, env_id: str) -> dict[str, Any]:
        env = await self.environments.rebuild(env_id, self._env_progress)
        return env.describe()

    def gc_environments(self, max_idle: float | None = None) -> list[str]:
        idle = self.config.env_max_idle if max_idle is None else max_idle
        removed = self.environments.gc(set(self.environments_in_use()), idle)
        for env_id in removed:
            self._env_progress({"phase": "removed", "env": env_id})
        return removed

    # ------------------------------------------------------------------ around the API

    def flow(self, flow_id: str) -> FlowRun:
        try:
            return self._flows[flow_id]
        except KeyError:
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"no flow {flow_id!r} (flows: {known})") from None

    def _flow_module(self, flow_module_id: str) -> tuple[FlowRun, str]:
        flow_id, sep, module_id = flow_module_id.partition("/")
        if not sep or not module_id:
            raise RunnerError(
                f"{flow_module_id!r} is not a flowModuleId: write '<flow id>/<module id>'"
            )
        run = self.flow(flow_id)
        run._module(module_id)
        return run, module_id

    def flows(self) -> list[dict[str, Any]]:
        return [self.describe_flow(fid) for fid in sorted(self._flows)]

    def describe_flow(self, flow_id: str) -> dict[str, Any]:
        """The flow's status and counters, and whether it should be running."""
        run = self.flow(flow_id)
        return {
            **run.describe(),
            "wantRunning": self._want_running.get(flow_id, False),
            "paused": run.debugger.paused,
        }

    def flow_document(self, flow_id: str) -> dict[str, Any]:
        """The flow as a standalone document (module files inlined)."""
        return orjson.loads(dump_flow(self.flow(flow_id).flow, inline=True))

    def flow_stats(self, flow_id: str) -> dict[str, Any]:
        """Counters for a live picture of the flow (``FlowRun.stats``)."""
        return self.flow(flow_id).stats()

    def flow_logs(self, flow_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self.flow(flow_id).logs(limit)

    def health(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for run in self._flows.values():
            # keyed by the plain string: orjson refuses enum members as keys
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
        return {
            "status": "ok" if self._nursery is not None else "stopped",
            "version": self.version,
            "uptime": round(time.time() - self.started_at, 3),
            "flows": counts,
            "runtimes": sorted(self.runtimes),
            "stateDir": str(self.config.state_dir) if self.config.state_dir else None,
            # messages journaled and not handled yet (runner/JOURNAL.md)
            "journaled": self.journal_depth(),
        }

    async def watch_flow(self, flow_id: str, watched: bool = True) -> None:
        """Publish a ``wire`` event for every message on the flow's wires (or stop).
        Costs what debugging costs: every wire passes through the runner meanwhile."""
        await self.flow(flow_id).debugger.watch(watched)

    def set_output_sink(self, flow_id: str, sink: OutputSink | None) -> None:
        self.flow(flow_id).sink = sink

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> None:
        await self.flow(flow_id).inject(module_id, port, msgs)

    async def wait_idle(self, flow_id: str) -> None:
        await self.flow(flow_id).wait_idle()

    def module_state(self, flow_id: str, module_id: str) -> Any:
        return self.flow(flow_id).module_state(module_id)

    def module_errors(self, flow_id: str, module_id: str) -> list[dict[str, Any]]:
        run = self.flow(flow_id)
        run._module(module_id)
        return list(run.errors.get(module_id, ()))

    def subscribe(self, **kwargs: Any) -> Subscription:
        return self.events.subscribe(**kwargs)


@asynccontextmanager
async def open_runner(
    config: RunnerConfig | None = None, runtimes: dict[str, RuntimeManifest] | None = None
) -> AsyncIterator[Runner]:
    """A running :class:`Runner`; on exit every flow is stopped gracefully, then torn down.

    An exception from the body comes out as itself, not wrapped in an exception group."""
    try:
        async with trio.open_nursery() as nursery:
            runner: Runner = await nursery.start(Runner(config, runtimes).run)
            try:
                yield runner
            finally:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(runner.config.stop_timeout + 1),
                ):
                    await runner.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One level, not errors.leaves(): the nursery wraps the body's exception once, and
        # a group the body raised itself must come out as that group, not as its leaves.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
