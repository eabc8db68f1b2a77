"""The runner's side of a run attempt (``RUNS.md``, "RunExecutor").

:class:`RunExecutor` accepts an offer (:meth:`~RunExecutor.start`) or refuses it
(:class:`~.errors.RunRefused`, with the reason), writes it to its archive first, and runs
the attempt: a :class:`~..flowrun.FlowRun` with flow id ``<runId>-a<attempt>`` whose
hosts are warm ones lent by the :class:`~.pool.HostPool`. It injects the inputs, renews
the lease with progress every ``lease / 2`` through the :class:`RunReporter`, and ends
the attempt:

- ``succeeded`` when the flow is idle (``FlowRun.wait_idle``: nothing queued or in
  flight),
- ``failed`` at the first module error when ``failOn == "error"`` (an error, or an exec
  child that exits non-zero), and always when a host crashes, crash-loops, gives a
  module up or a module does not load,
- ``timed_out`` at ``offer.timeout``, ``canceled`` on :meth:`~RunExecutor.cancel`.

Go modules (``RUNS.md`` "Go modules in runs"): the attempt's first step builds its go
hosts' binary (cached by content; the lease is renewed meanwhile; ``build`` events and
log lines of the run), then takes a warm host of that module set. A source that does
not compile ends the attempt ``failed`` with the compiler's file and line.

A reporter that answers ``False`` to a progress (the lease is lost) stops the attempt
at once; it is dropped with its files, and nothing more is reported.

One side of a run with browser modules (``offer.part``, ``RUNS.md`` "Runs with browser
modules"): what reaches the part's relay ports goes to ``reporter.relay`` (awaited),
messages from the other side come in through :meth:`~RunExecutor.deliver`; a
coordinated side does not end on idle: it reports progress each time it goes idle (its
entry under ``sides``: ``idle``, ``sent``, ``received``) and ends when told
(:meth:`~RunExecutor.end_side`), at an error (``failOn: error``), its timeout or a
cancel. Its errors carry its ``side``; its result has its entry under ``sides``
(``partial``). A runtime whose hosts attach themselves (a page's) is run when the runner
has attached hosts: the host is acquired for the attempt and closed after it (the warm
pool does not keep a page's hosts). ``admit`` (a callable, optional) has the last say
on an offer (a page's client runner). Accepting and ending a part are ``run`` events on
the runner's hub (``{"kind": "run", "event": "started"|"ended", "side", ...}``).

The result (:class:`~.model.RunResult`) is written to ``result.json`` and sent with
``reporter.result``; it is kept (:meth:`~RunExecutor.undelivered`) until that returns
True, then a ``delivered`` marker is written. Undelivered results are sent again every
``retry_interval`` and on :meth:`~RunExecutor.redeliver` (the link calls it when it
reconnects).

Archive (``<state_dir>/runs`` for a Runner; a temporary folder the executor owns and
removes when there is none): ``<runId>/<attempt>/`` holds ``offer.json`` (written and
fsynced before the attempt starts), ``result.json``, ``outputs.jsonl`` (every output,
when there were more than ``OUTPUTS_CAP``) and ``delivered``. On start, the executor
reads it back: finished, undelivered results are sent again; attempts with an offer and
no result (the runner died) are held as unfinished (:meth:`~RunExecutor.held`) and not
started again: the book gives them back or says to :meth:`~RunExecutor.forget` them.
Delivered attempts older than ``retention`` are removed (at start, then hourly).

``handled`` counts the messages that reached each module: through the runner (inputs and
wires between hosts) and inside one host, as hosts that list ``counts`` report it in
``done`` (PROTOCOL.md section 12; python, node and browser hosts do). A wire inside a
host without it is not counted.

Resource handling: :meth:`RunExecutor.run` owns the pool (every host process) and every
attempt's task; leaving it stops them (no result is written for an attempt stopped that
way: after a restart it is unfinished).

Error handling: nothing an attempt does escapes its task: it ends in a result. A
reporter that raises is logged and treated as "not now" (a result is kept; a progress
is tried again at the next interval).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import attrs
import orjson
import trio

from ...flows import FlowError, parse_flow
from ...flows.converter import make_converter
from ..compiled import build_loads, go_cache_for
from ..errors import FlowLoadError, RunnerError, first
from ..events import EventKind
from ..flowrun import FlowRun
from ..instance import RuntimeInstance
from .errors import LeaseLost, RunError, RunRefused
from .model import FailOn, RunOffer, RunProgress, RunResult, RunState
from .pool import HostPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...flows import Flow
    from ..service import Runner

__all__ = ["ERRORS_CAP", "LOGS_CAP", "OUTPUTS_CAP", "RunExecutor", "RunReporter"]

log = logging.getLogger("fifoflow.runs")

#: outputs kept in a result (all of them go to outputs.jsonl beyond this)
OUTPUTS_CAP = 1000
#: module errors and log lines kept in a result
ERRORS_CAP = 100
LOGS_CAP = 500
#: how often delivered attempts are checked against the retention
RETENTION_CHECK = 3600.0

_converter = make_converter()


class RunReporter(Protocol):
    """What the executor tells the book (the local glue calls it directly, the runner
    link sends it over the link)."""

    async def progress(self, p: RunProgress) -> bool:
        """False: the lease is lost; the attempt is stopped and dropped."""
        ...

    async def result(self, r: RunResult) -> bool:
        """True: the book has it (recorded now or before); False: keep it, try later."""
        ...

    # Optional (sides of a run with browser modules, ``RunPart``):
    #   async def relay(self, run_id, attempt, side, module, port, msgs) -> None
    # messages that reached a relay port, for the other side; raises when they cannot go.


Key = tuple[str, int]


@attrs.define(eq=False)
class _Attempt:
    offer: RunOffer
    folder: Path
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    state: RunState | None = None
    reason: str | None = None
    #: lease lost / forgotten: no result, files removed
    dropped: bool = False
    #: drained: no result, offer kept (unfinished after a restart)
    abandoned: bool = False
    started_at: float = 0.0
    hosts: dict[str, RuntimeInstance] = attrs.field(factory=dict)
    tainted: set[RuntimeInstance] = attrs.field(factory=set)
    flow: _AttemptFlow | None = None
    outputs: list[dict[str, Any]] = attrs.field(factory=list)
    outputs_total: int = 0
    spill: BinaryIO | None = None
    handled: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    #: every host acquired
    ready: bool = False
    #: the result is made: later outputs are not counted
    closed: bool = False
    #: set once the flow is attached (or the attempt ended): deliveries wait for it
    attached: trio.Event = attrs.field(factory=trio.Event)
    #: a coordinated side: its inputs are in; messages relayed out / delivered in
    fed: bool = False
    sent: int = 0
    received: int = 0
    #: set (and replaced) at each delivery into a coordinated side
    woke: trio.Event = attrs.field(factory=trio.Event)
    #: the attempt's own log lines and errors (a go host's build), before its flow's
    logs: list[dict[str, Any]] = attrs.field(factory=list)
    errors: list[dict[str, Any]] = attrs.field(factory=list)

    @property
    def side(self) -> str:
        part = self.offer.part
        return part.side if part is not None else "server"

    @property
    def key(self) -> Key:
        return (self.offer.runId, self.offer.attempt)

    def end(self, state: RunState, reason: str | None = None) -> None:
        """Decide how the attempt ends (the first decision wins) and stop it."""
        if self.state is None:
            self.state = state
            self.reason = reason
        self.scope.cancel()

    async def output(self, module: str, port: str, msgs: list[Any]) -> None:
        """The flow's output sink."""
        self.take_outputs(module, port, msgs)

    def take_outputs(self, module: str, port: str, msgs: list[Any]) -> None:
        if self.closed:
            return  # a host killed late may still emit (redelivered after a crash)
        source = f"{module}.{port}"
        for msg in msgs:
            self.outputs_total += 1
            item = {"from": source, "msg": msg}
            if self.spill is not None:
                self.spill.write(orjson.dumps(item) + b"\n")
            elif len(self.outputs) < OUTPUTS_CAP:
                self.outputs.append(item)
            else:
                self.spill = open(self.folder / "outputs.jsonl", "wb")  # closed with the result
                for kept in self.outputs:
                    self.spill.write(orjson.dumps(kept) + b"\n")
                self.spill.write(orjson.dumps(item) + b"\n")


class _AttemptFlow(FlowRun):
    """The FlowRun of one attempt: its errors, host crashes and child exits end the
    attempt by its ``failOn``; it counts what each module was given."""

    attempt: _Attempt

    async def route(
        self,
        module: str,
        port: str,
        msgs: list[Any] | None,
        *,
        body: bytes | None = None,
        count: int = 0,
        ch: str | None = None,
        d: int = 0,
    ) -> None:
        n = len(msgs) if msgs is not None else count
        for target in self._routes.get((module, port)) or ():
            if target is not None:
                self.attempt.handled[self.short(target[1])] += n
        # a direct channel's copy (``ch``, ``d``) is counted here like any emit
        await super().route(module, port, msgs, body=body, count=count, ch=ch, d=d)

    async def inject(self, module_id: str, port: str, msgs: list[Any]) -> None:
        await super().inject(module_id, port, msgs)
        self.attempt.handled[module_id] += len(msgs)

    def count_in_host(self, counts: list[tuple[str, str, str, str, int]]) -> None:
        super().count_in_host(counts)
        handled = self.attempt.handled
        for _src, _port, dst, _dst_port, n in counts:
            handled[self.short(dst)] += n

    def record_error(
        self, module: str, port: str | None, msg: Any, error: dict[str, Any], *, runtime: str
    ) -> None:
        super().record_error(module, port, msg, error, runtime=runtime)
        if self.attempt.offer.failOn is FailOn.ERROR:
            self.attempt.end(
                RunState.FAILED,
                f"module {self.short(module)} raised {error.get('type', 'Error')}: "
                f"{error.get('message', '')}",
            )

    def instance_failed(
        self,
        instance: RuntimeInstance,
        message: str,
        *,
        module: str | None = None,
        kind: str = "RuntimeFailed",
    ) -> None:
        self.attempt.tainted.add(instance)
        self.attempt.end(RunState.FAILED, message)
        self.record_error(
            module or f"{self.flow_id}/*",
            None,
            None,
            {"type": kind, "message": message},
            runtime=instance.manifest.id,
        )

    def publish(self, event: dict[str, Any]) -> None:
        if event.get("kind") == EventKind.RUNTIME:
            what = event.get("event")
            # The pool does not take back a host that restarted (or restarted a child).
            if what == "restart":
                self.attempt.end(
                    RunState.FAILED,
                    f"runtime host {event.get('runtime')} of the run ended: {event.get('reason')}",
                )
            elif what == "child-restart":
                self._child_exited(str(event.get("module")))
        super().publish(event)

    def _child_exited(self, module: str) -> None:
        qid = self.qualified(module)
        for instance in self.instances.values():
            code = instance.child_exits.get(qid, {}).get("code")
            if code and self.attempt.offer.failOn is FailOn.ERROR:
                self.attempt.end(
                    RunState.FAILED, f"module {module}'s process exited with status {code}"
                )


class _BuildFailed(RunnerError):
    """A compiled host's module set does not build (the reason names file and line)."""


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunExecutor:
    def __init__(
        self,
        runner: Runner,
        *,
        max_runs: int | None = None,
        archive: Path | None = None,
        retention: float = 7 * 24 * 3600.0,
        reporter: RunReporter | None = None,
        warm: int = 2,
        max_hosts: int | None = None,
        retry_interval: float = 5.0,
    ) -> None:
        """``archive``: the folder of ``<runId>/<attempt>/`` (None: a temporary one).
        ``reporter`` may be set later (``executor.reporter = ...``); without one, no
        run is accepted. ``warm``: idle hosts kept per runtime (``HostPool``)."""
        self.runner = runner
        self.max_runs = max_runs if max_runs is not None else (os.cpu_count() or 1)
        self.retention = retention
        self.reporter = reporter
        self.retry_interval = retry_interval
        #: False while the book cannot be told (the link sets it); no run is accepted then
        self.reachable = True
        #: a last say on each offer (a page's client runner): None takes it, else why not
        self.admit: Callable[[RunOffer], str | None] | None = None
        self.pool = HostPool(runner, warm=warm, max_idle=warm + self.max_runs, max_hosts=max_hosts)
        self._archive = archive
        self._root: Path | None = None
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self._reserved = 0
        self._running: dict[Key, _Attempt] = {}
        self._undelivered: dict[Key, RunResult] = {}
        self._unfinished: set[Key] = set()
        self._delivering: set[Key] = set()
        self._wake_delivery = trio.Event()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ surface

    @property
    def accepting(self) -> bool:
        return (
            self._nursery is not None
            and not self._draining
            and self.reachable
            and self.reporter is not None
        )

    def free(self) -> int:
        """Attempts this executor can still take now."""
        return max(0, self.max_runs - len(self._running) - self._reserved)

    def attempt_dir(self, run_id: str, attempt: int) -> Path:
        if self._root is None:
            raise RunnerError("the run executor is not running")
        return self._root / run_id / str(attempt)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pool and every attempt until cancelled. Reads the archive back first."""
        temporary = self._archive is None
        root = Path(tempfile.mkdtemp(prefix="fifoflow-runs-")) if temporary else self._archive
        assert root is not None
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._root = root
            self._scan()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pool.run)
                self._nursery = nursery
                nursery.start_soon(self._deliveries)
                nursery.start_soon(self._retention)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for att in self._running.values():
                if att.spill is not None:
                    att.spill.close()
            self._running.clear()
            if temporary:
                shutil.rmtree(root, ignore_errors=True)

    async def start(self, offer: RunOffer) -> None:
        """Accept ``offer`` (returns once its offer file is written; the attempt runs in
        the executor's nursery) or raise :class:`RunRefused` with the reason. An offer of
        an attempt already held is accepted again without a second start."""
        key = (offer.runId, offer.attempt)
        if key in self._running or key in self._undelivered:
            return
        if self._nursery is None or self._draining:
            raise RunRefused("this runner is draining: it takes no new runs")
        if not self.reachable or self.reporter is None:
            raise RunRefused("this runner cannot report to the book now: it takes no new runs")
        if self.free() <= 0:
            raise RunRefused(f"max runs reached ({self.max_runs} running)")
        if self.admit is not None:
            why = self.admit(offer)
            if why is not None:
                raise RunRefused(why)
        if offer.part is not None and offer.part.relay and not hasattr(self.reporter, "relay"):
            raise RunRefused("this runner cannot relay a side's messages (no dispatcher link)")
        self._reserved += 1
        try:
            flow = self._flow(offer)
            await self._environments(flow)
            folder = self.attempt_dir(*key)
            data = orjson.dumps(_converter.unstructure(offer))
            await trio.to_thread.run_sync(self._write_offer, folder, data)
            if self._nursery is None or self._draining:
                shutil.rmtree(folder, ignore_errors=True)
                raise RunRefused("this runner is draining: it takes no new runs")
            att = _Attempt(offer, folder)
            self._running[key] = att
            self._unfinished.discard(key)
            self._nursery.start_soon(self._attempt, att, flow)
            log.info(
                "run %s attempt %d claimed",
                *key,
                extra={"event": "claimed", "run": key[0], "attempt": key[1], "flow": flow.id},
            )
            if offer.part is not None:
                self._publish_side(att, "started", modules=[m.id for m in flow.modules])
        finally:
            self._reserved -= 1

    async def cancel(self, run_id: str, attempt: int, reason: str = "canceled") -> None:
        """Stop a running attempt: its result says ``canceled`` with ``reason``. Returns
        when its hosts are stopped. Unknown or finished attempts: nothing."""
        att = self._running.get((run_id, attempt))
        if att is None:
            return
        att.end(RunState.CANCELED, reason)
        await att.done.wait()

    async def deliver(
        self, run_id: str, attempt: int, module: str, port: str, msgs: list[Any]
    ) -> int:
        """Messages from the other side of a coordinated attempt (``runDeliver``), into
        its flow once attached; returns how many. :class:`RunError` when the attempt is
        not running here (ended, never held)."""
        att = self._running.get((run_id, attempt))
        if att is None or att.offer.part is None:
            raise RunError(f"attempt {attempt} of run {run_id} is not a side running here")
        await att.attached.wait()
        fr = att.flow
        if fr is None or att.state is not None or att.closed:
            raise RunError(f"attempt {attempt} of run {run_id} ended here")
        await fr.inject(module, port, msgs)
        att.received += len(msgs)
        woke, att.woke = att.woke, trio.Event()
        woke.set()
        return len(msgs)

    def end_side(self, run_id: str, attempt: int, state: RunState, reason: str | None) -> bool:
        """The dispatcher ends a coordinated side (``runEnd``): its result follows with
        ``state`` (unless it ended already). False: not running here."""
        att = self._running.get((run_id, attempt))
        if att is None:
            return False
        att.end(state, reason)
        return True

    def held(self) -> list[dict[str, Any]]:
        """``{runId, attempt, finished}`` of every attempt held: running, finished and not
        delivered, or unfinished from before a restart (``finished: False``; see
        :meth:`unfinished`)."""
        found = [{"runId": r, "attempt": a, "finished": False} for (r, a) in self._running]
        found += [
            {"runId": r, "attempt": a, "finished": False} for (r, a) in sorted(self._unfinished)
        ]
        found += [{"runId": r, "attempt": a, "finished": True} for (r, a) in self._undelivered]
        return found

    def unfinished(self) -> list[Key]:
        """Attempts found started and not finished (the runner died, or a drain gave them
        up): not running; the book gives them back, then :meth:`forget`."""
        return sorted(self._unfinished)

    def undelivered(self) -> list[RunResult]:
        return list(self._undelivered.values())

    def redeliver(self) -> None:
        """Send the undelivered results now (the link reconnected)."""
        self._wake_delivery.set()

    def forget(self, run_id: str, attempt: int) -> bool:
        """The book says this attempt no longer counts: stop it if it runs (no result),
        drop its result if undelivered, remove its files. True if it was held."""
        key = (run_id, attempt)
        att = self._running.get(key)
        if att is not None:
            att.dropped = True
            att.end(RunState.CANCELED, "forgotten")
            return True
        held = self._undelivered.pop(key, None) is not None
        if key in self._unfinished:
            self._unfinished.discard(key)
            held = True
        if held and self._root is not None:
            self._remove(self.attempt_dir(*key))
        return held

    async def drain(self, grace: float) -> list[Key]:
        """Take no new runs; wait up to ``grace`` seconds for the running ones; stop the
        rest without a result (their offers stay: unfinished) and return them, for the
        caller to give back."""
        self._draining = True
        with trio.move_on_after(grace):
            await self.wait_idle()
        left = list(self._running.values())
        for att in left:
            att.abandoned = True
            att.end(RunState.CANCELED, "runner draining")
        for att in left:
            await att.done.wait()
        return [att.key for att in left]

    def hosts(self, run_id: str, attempt: int) -> dict[str, int | None]:
        """The pids of a running attempt's hosts, by host key (runtime or environment)."""
        att = self._running.get((run_id, attempt))
        if att is None:
            return {}
        return {
            key: inst.process.pid if inst.process is not None else None
            for key, inst in att.hosts.items()
        }

    async def wait_hosts(self, run_id: str, attempt: int) -> dict[str, int | None]:
        """:meth:`hosts` once the attempt has all of its hosts and its flow is loaded in
        them ({} if it is not running)."""
        while True:
            att = self._running.get((run_id, attempt))
            if att is None:
                return {}
            if att.ready:
                await att.attached.wait()
                return self.hosts(run_id, attempt)
            await self._changed.wait()

    async def wait_free(self) -> None:
        """Until :meth:`free` is above 0."""
        while self.free() <= 0:
            await self._changed.wait()

    async def wait_idle(self) -> None:
        """Until no attempt is running."""
        while self._running:
            await self._changed.wait()

    def statistics(self) -> dict[str, Any]:
        return {
            "maxRuns": self.max_runs,
            "running": len(self._running),
            "undelivered": len(self._undelivered),
            "unfinished": len(self._unfinished),
            "accepting": self.accepting,
            "pool": attrs.asdict(self.pool.statistics()),
        }

    # ------------------------------------------------------------------ accepting

    def _flow(self, offer: RunOffer) -> Flow:
        modules = offer.flow.get("modules") if isinstance(offer.flow, dict) else None
        for module in modules if isinstance(modules, list) else ():
            runtime = module.get("runtime") if isinstance(module, dict) else None
            if isinstance(runtime, str) and runtime not in self.runner.runtimes:
                raise RunRefused(
                    f"runtime {runtime!r} is not available on this runner "
                    f"(available: {', '.join(sorted(self.runner.runtimes))})"
                )
            if (
                isinstance(runtime, str)
                and self.runner.runtimes[runtime].attach
                and self.runner.config.attached is None
            ):
                raise RunRefused(f"runtime {runtime!r} is not run by this executor (hosts attach)")
        flow_id = f"{offer.runId}-a{offer.attempt}"
        try:
            flow = parse_flow(
                {"fifoflow": 1, **offer.flow, "id": flow_id},
                base_dir=None,
                runtimes=self.runner.runtimes.keys(),
                source_name=flow_id,
            )
        except FlowError as exc:
            raise RunRefused(f"flow: {exc}") from None
        try:
            return self.runner.workdirs.prepare(flow)
        except OSError as exc:
            raise RunRefused(f"cannot write the modules' files: {exc}") from None

    async def _environments(self, flow: Flow) -> None:
        seen: set[str] = set()
        for module in flow.modules:
            env = module.environment
            if env is None or env in seen:
                continue
            seen.add(env)

            def progress(event: dict[str, Any]) -> None:
                self.runner.events.publish(
                    {"kind": EventKind.ENVIRONMENT, "flow": flow.id, **event}
                )

            try:
                await self.runner.environments.ensure(
                    module.runtime, env, module.requirements, progress
                )
            except (RunnerError, OSError) as exc:
                raise RunRefused(
                    f"the environment of module {module.id} cannot be built: {exc}"
                ) from None

    @staticmethod
    def _write_offer(folder: Path, data: bytes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_file(folder / "offer.json", data)

    # ------------------------------------------------------------------ an attempt

    async def _attempt(self, att: _Attempt, flow: Flow) -> None:
        result: RunResult | None = None
        try:
            result = await self._execute(att, flow)
        except Exception as exc:  # a bug must end one attempt, not the executor
            log.exception("run %s attempt %s crashed", *att.key)
            att.end(RunState.FAILED, f"the runner failed: {exc!r}")
            result = self._result(att, time.time())
        finally:
            if att.spill is not None:
                att.spill.close()
                att.spill = None
            self.runner.workdirs.remove(flow.id)
            self._running.pop(att.key, None)
            if att.dropped:
                self._remove(att.folder)
                result = None
            elif att.abandoned:
                self._unfinished.add(att.key)
                result = None
            att.done.set()
            self._signal()
        if result is not None:
            log.info(
                "run %s attempt %d finished: %s",
                *att.key,
                result.state,
                extra={
                    "event": "finished",
                    "run": att.key[0],
                    "attempt": att.key[1],
                    "state": str(result.state),
                    "reason": result.reason,
                    "seconds": round(result.duration, 3),
                },
            )
            data = orjson.dumps(_converter.unstructure(result))
            await trio.to_thread.run_sync(_write_file, att.folder / "result.json", data)
            self._undelivered[att.key] = result
            await self._deliver(att.key)

    async def _execute(self, att: _Attempt, flow: Flow) -> RunResult:
        offer = att.offer
        att.started_at = time.time()
        if offer.timeout is not None:
            att.scope.deadline = trio.current_time() + offer.timeout
        outside = False  # cancelled from outside (the executor stops): kill the hosts
        try:
            with att.scope:
                async with trio.open_nursery() as nursery:
                    # the lease is renewed from the start: a go build may take a while
                    nursery.start_soon(self._renew, att)
                    await self._acquire(att, flow)
                    att.ready = True
                    self._signal()
                    fr = _AttemptFlow(
                        flow,
                        self.runner.runtimes,
                        self.runner.config,
                        self.runner.events,
                        self.runner.environments,
                        instances=att.hosts,
                    )
                    fr.attempt = att
                    fr.sink = att.output if offer.part is None else partial(self._side_sink, att)
                    att.flow = fr
                    try:
                        await fr.attach()
                    except RunnerError as exc:
                        att.tainted.update(att.hosts.values())
                        att.end(RunState.FAILED, f"the flow did not start: {exc}")
                    att.attached.set()
                    log.info(
                        "run %s attempt %d started",
                        *att.key,
                        extra={"event": "started", "run": att.key[0], "attempt": att.key[1]},
                    )
                    await self._feed(att, fr)
                    if offer.part is not None and offer.part.coordinated:
                        att.fed = True
                        await self._coordinate(att, fr)
                    await fr.wait_idle()
                    att.end(RunState.SUCCEEDED)
            if att.state is None:
                att.state = RunState.TIMED_OUT
                att.reason = f"timeout of {offer.timeout:g} s reached"
            return self._result(att, time.time())
        except trio.Cancelled:
            outside = True
            raise
        finally:
            att.attached.set()
            with trio.CancelScope(shield=True):
                await self._release(att, kill=outside)

    async def _acquire(self, att: _Attempt, flow: Flow) -> None:
        keys = {m.host: m for m in flow.modules}

        async def one(host: str) -> None:
            module = keys[host]
            manifest = self.runner.runtimes.get(module.runtime)
            if manifest is not None and manifest.build is not None:
                # a compiled runtime's host is its code: built (or found cached) for this
                # module set, then a warm host of that set is taken (keyed by ``host``)
                sources = self._sources(att, flow, host)
                await self._build(att, flow, module.runtime, host, sources)
                att.hosts[host] = await self.pool.acquire(
                    module.runtime, build=host, sources=sources
                )
                return
            att.hosts[host] = await self.pool.acquire(
                module.runtime, module.environment, module.requirements
            )

        try:
            async with trio.open_nursery() as nursery:
                for host in keys:
                    nursery.start_soon(one, host)
        except BaseExceptionGroup as group:
            leaf = first(group, _BuildFailed)
            if leaf is not None:
                att.end(RunState.FAILED, str(leaf))
                return
            leaf = first(group, RunnerError)
            if leaf is None:
                raise
            att.end(RunState.FAILED, f"no runtime host: {leaf}")

    @staticmethod
    def _sources(att: _Attempt, flow: Flow, host: str) -> dict[str, dict[str, Any]]:
        """The load frames (code, filename) a compiled host's binary is built from, by
        module id. Inline code is named ``<the flow's id>/<module>`` (not the attempt's
        flow id): a compile error names what the user wrote."""
        name = att.offer.flow.get("id") if isinstance(att.offer.flow, dict) else None
        sources: dict[str, dict[str, Any]] = {}
        for m in flow.modules:
            if m.host != host:
                continue
            filename = m.filename
            if isinstance(name, str) and name and filename == f"{flow.id}/{m.id}":
                filename = f"{name}/{m.id}"
            sources[m.id] = {"code": m.source, "filename": filename}
        return sources

    async def _build(
        self,
        att: _Attempt,
        flow: Flow,
        runtime: str,
        host: str,
        sources: dict[str, dict[str, Any]],
    ) -> None:
        """Build (or find cached) the binary of a compiled host for this attempt: its
        events are ``build`` events of the attempt's flow on the runner's hub (with
        ``run`` and ``attempt``) and lines of the run's logs. A source that does not
        compile raises :class:`_BuildFailed` (the attempt fails with the compiler's
        message: file and line; not retried, it is not the worker's fault)."""
        fields = {"run": att.key[0], "attempt": att.key[1]}

        def progress(event: dict[str, Any]) -> None:
            self.runner.events.publish(
                {"kind": EventKind.BUILD, "flow": flow.id, "runtime": runtime, **fields, **event}
            )
            what = event.get("event")
            if what == "started":
                text = (
                    f"building the {runtime} host {host} ({event.get('modules')} modules, "
                    f"{event.get('go')})"
                )
            elif what == "finished":
                text = f"built the {runtime} host {host} in {event.get('seconds', 0):.1f} s"
            elif what == "cached":
                text = f"the {runtime} host {host} is built already (cached)"
            elif what == "failed":
                text = f"the {runtime} host {host} does not build: {event.get('error')}"
            else:
                return
            att.logs.append(
                {
                    "time": time.time(),
                    "runtime": runtime,
                    "module": None,
                    "level": "error" if what == "failed" else "info",
                    "stream": "build",
                    "text": text,
                }
            )
            log.info(
                "run %s attempt %d: %s",
                *att.key,
                text,
                extra={"event": f"build-{what}", **fields, "host": host},
            )

        try:
            await build_loads(sources, go_cache_for(self.runner.config), progress, host)
        except FlowLoadError as exc:
            error = exc.error
            att.errors.append(
                {
                    "module": exc.module,
                    "port": None,
                    "msg": None,
                    "error": error,
                    "runtime": runtime,
                    "time": time.time(),
                    "side": att.side,
                }
            )
            raise _BuildFailed(
                f"module {exc.module} does not build: {error.get('message', '')}"
            ) from None

    async def _feed(self, att: _Attempt, fr: FlowRun) -> None:
        """Inject the inputs, consecutive ones to the same port in one batch."""
        batch: list[Any] = []
        where: tuple[str, str] | None = None
        for target in att.offer.inputs:
            if (target.module, target.port) != where and batch:
                assert where is not None
                await fr.inject(where[0], where[1], batch)
                batch = []
            where = (target.module, target.port)
            batch.append(target.msg)
        if batch and where is not None:
            await fr.inject(where[0], where[1], batch)

    async def _renew(self, att: _Attempt) -> None:
        period = max(0.05, att.offer.lease / 2)
        while True:
            await trio.sleep(period)
            if not await self._report(att):
                return

    def _progress(self, att: _Attempt) -> RunProgress:
        """The attempt's progress now; a side's also says, under ``sides``, whether it is
        idle and how many messages it relayed out and was delivered (one snapshot: no
        await between reading the flow's pending count and the counters)."""
        fr = att.flow
        errors = fr.error_count if fr is not None else 0
        sides: dict[str, dict[str, Any]] = {}
        if att.offer.part is not None:
            sides[att.side] = {
                "idle": att.fed and fr is not None and fr.pending == 0,
                "sent": att.sent,
                "received": att.received,
                "handled": dict(att.handled),
                "errors": errors,
                "outputs": att.outputs_total,
                "state": "running",
            }
        return RunProgress(
            runId=att.offer.runId,
            attempt=att.offer.attempt,
            handled=dict(att.handled),
            errors=errors,
            outputs=att.outputs_total,
            sides=sides,
        )

    async def _report(self, att: _Attempt) -> bool:
        """Send the progress; False when the lease is lost (the attempt is stopped and
        dropped)."""
        reporter = self.reporter
        if reporter is None:
            return True
        progress = self._progress(att)
        fields = {"run": att.key[0], "attempt": att.key[1]}
        try:
            kept = await reporter.progress(progress)
        except LeaseLost:
            kept = False
        except Exception:
            log.warning("run %s attempt %s: progress not reported", *att.key, exc_info=True)
            return True
        if kept:
            log.info(
                "run %s attempt %d: lease renewed",
                *att.key,
                extra={
                    "event": "progress",
                    **fields,
                    "handled": progress.handled,
                    "errors": progress.errors,
                    "outputs": progress.outputs,
                },
            )
        else:
            log.info(
                "run %s attempt %s: lease lost; stopping it",
                *att.key,
                extra={"event": "lease-lost", **fields},
            )
            att.dropped = True
            att.end(RunState.CANCELED, "lease lost")
        return kept

    async def _coordinate(self, att: _Attempt, fr: FlowRun) -> None:
        """A coordinated side: report each time it goes idle; it ends when the
        dispatcher says (``end_side``), at an error, its timeout or a cancel."""
        while True:
            await fr.wait_idle()
            woke = att.woke
            if not await self._report(att):
                return
            await woke.wait()

    async def _side_sink(self, att: _Attempt, module: str, port: str, msgs: list[Any]) -> None:
        """A side's output sink: relay ports go to the other side (through the
        dispatcher, awaited: the host is not acknowledged meanwhile), the rest are the
        run's outputs."""
        part = att.offer.part
        assert part is not None
        if f"{module}.{port}" not in part.relay:
            att.take_outputs(module, port, msgs)
            return
        relay = getattr(self.reporter, "relay", None)
        try:
            if relay is None:
                raise RunError("no reporter to relay with")
            await relay(att.offer.runId, att.offer.attempt, att.side, module, port, msgs)
        except trio.Cancelled:
            raise
        except Exception as exc:  # the attempt ends with the reason, the host goes on
            att.end(
                RunState.FAILED, f"{module}.{port}: messages for the other side not relayed: {exc}"
            )
            return
        att.sent += len(msgs)

    def _publish_side(self, att: _Attempt, event: str, **fields: Any) -> None:
        """A side's ``run`` event on the runner's hub (a page's client runner tells the
        page)."""
        self.runner.events.publish(
            {
                "kind": EventKind.RUN,
                "run": att.offer.runId,
                "attempt": att.offer.attempt,
                "side": att.side,
                "event": event,
                **fields,
            }
        )

    async def _release(self, att: _Attempt, *, kill: bool) -> None:
        """Give the hosts back: the pool keeps the clean ones (``HostPool.release``)."""
        att.closed = True
        fr = att.flow
        if fr is not None:
            fr.detach()
        hosts, att.hosts = att.hosts, {}
        async with trio.open_nursery() as nursery:
            for instance in hosts.values():
                # a page's attached host is the page's: not kept warm here
                reuse = not kill and instance not in att.tainted and not instance.manifest.attach
                nursery.start_soon(partial(self.pool.release, instance, reuse=reuse))

    def _result(self, att: _Attempt, finished: float) -> RunResult:
        fr = att.flow
        errors: list[dict[str, Any]] = list(att.errors)
        exits: dict[str, dict[str, Any]] = {}
        logs: list[dict[str, Any]] = list(att.logs)
        if fr is not None:
            entries = sorted(
                (e for per in fr.errors.values() for e in per), key=lambda e: e["time"]
            )
            errors += [
                {
                    "module": e["module"],
                    "port": e["port"],
                    "msg": e["msg"],
                    "error": e["error"],
                    "runtime": e["runtime"],
                    "time": e["time"],
                    "side": att.side,
                }
                for e in entries[: ERRORS_CAP - len(errors)]
            ]
            for instance in fr.instances.values():
                for qid, exit_ in instance.child_exits.items():
                    if exit_.get("code"):
                        exits[fr.short(qid)] = dict(exit_)
            logs = sorted([*logs, *fr.logs(LOGS_CAP)], key=lambda entry: entry["time"])
            logs = logs[-LOGS_CAP:]
        att.closed = True
        if att.spill is not None:
            att.spill.close()
            att.spill = None
        state = att.state or RunState.FAILED
        sides: dict[str, dict[str, Any]] = {}
        if att.offer.part is not None:
            sides[att.side] = {
                "partial": True,
                "state": str(state),
                "reason": att.reason,
                "sent": att.sent,
                "received": att.received,
            }
            self._publish_side(att, "ended", state=str(state), reason=att.reason)
        return RunResult(
            runId=att.offer.runId,
            attempt=att.offer.attempt,
            state=state,
            reason=att.reason,
            outputs=att.outputs,
            outputsTotal=att.outputs_total,
            outputsSpilled=att.outputs_total > len(att.outputs),
            errors=errors,
            errorsTotal=len(att.errors) + (fr.error_count if fr is not None else 0),
            exits=exits,
            handled=dict(att.handled),
            logs=logs,
            startedAt=att.started_at,
            finishedAt=finished,
            sides=sides,
        )

    # ------------------------------------------------------------------ delivery

    async def _deliver(self, key: Key) -> None:
        result = self._undelivered.get(key)
        reporter = self.reporter
        if result is None or reporter is None or key in self._delivering:
            return
        self._delivering.add(key)
        try:
            try:
                ok = await reporter.result(result)
                marker = b""
            except LeaseLost as exc:
                ok, marker = True, f"lease lost: {exc}".encode()
            except Exception:
                log.warning("run %s attempt %s: result not delivered", *key, exc_info=True)
                ok = False
            if ok and key in self._undelivered and self._root is not None:
                folder = self.attempt_dir(*key)
                if folder.is_dir():
                    (folder / "delivered").write_bytes(marker)
                self._undelivered.pop(key, None)
        finally:
            self._delivering.discard(key)

    async def _deliveries(self) -> None:
        while True:
            with trio.move_on_after(self.retry_interval):
                await self._wake_delivery.wait()
            self._wake_delivery = trio.Event()
            for key in list(self._undelivered):
                await self._deliver(key)

    # ------------------------------------------------------------------ archive

    def _scan(self) -> None:
        """Read the archive back: results not delivered, attempts not finished."""
        assert self._root is not None
        for run_dir in sorted(self._root.iterdir()):
            if not run_dir.is_dir():
                continue
            for folder in sorted(run_dir.iterdir()):
                if not folder.is_dir() or not folder.name.isdigit():
                    continue
                key = (run_dir.name, int(folder.name))
                if (folder / "delivered").exists():
                    continue
                if (folder / "result.json").exists():
                    try:
                        raw = orjson.loads((folder / "result.json").read_bytes())
                        self._undelivered[key] = _converter.structure(raw, RunResult)
                    except Exception as exc:
                        log.error("run %s attempt %s: unreadable result.json: %s", *key, exc)
                        self._unfinished.add(key)
                elif (folder / "offer.json").exists():
                    self._unfinished.add(key)
                else:
                    self._remove(folder)
        self._collect(time.time())

    def _collect(self, now: float) -> list[Key]:
        """Remove delivered attempts older than the retention."""
        removed: list[Key] = []
        if self._root is None:
            return removed
        for marker in self._root.glob("*/*/delivered"):
            try:
                age = now - marker.stat().st_mtime
            except OSError:
                continue
            if age >= self.retention:
                self._remove(marker.parent)
                removed.append((marker.parent.parent.name, int(marker.parent.name)))
        return removed

    async def _retention(self) -> None:
        while True:
            await trio.sleep(RETENTION_CHECK)
            try:
                self._collect(time.time())
            except OSError as exc:
                log.error("could not clean the run archive %s: %s", self._root, exc)

    @staticmethod
    def _remove(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()  # the run's folder, when it was its last attempt
        except OSError:
            pass

    # ------------------------------------------------------------------ waiting

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
