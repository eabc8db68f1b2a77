"""Warm runtime hosts for runs: started ahead, lent to one attempt at a time.

A run must not pay for process start-up (~70 ms per host). :class:`HostPool` keeps, per
key (runtime, environment), ``warm`` idle hosts that hold no module. An attempt takes
one host per key its flow needs (:meth:`HostPool.acquire`), the attempt's
:class:`~..flowrun.FlowRun` adopts it (``FlowRun(..., instances=...)``) and loads its
modules into it (``FlowRun.attach``: the same ``load`` and ``route`` frames a start
sends); at the end the attempt gives it back (:meth:`HostPool.release`): a clean host
(running, never restarted during the attempt, nothing queued or in flight) has its
modules unloaded and its route table cleared and goes back to the idle list; any other
host is killed. A host is lent to one attempt only, so one run's modules never see
another's messages or state, and a host crash touches that attempt only.

What a warm host keeps between attempts: nothing of the modules (each load is a fresh
namespace in the python and node hosts, and ``ctx.state`` starts empty); process-wide
state (a library's globals, node's ``globalThis``) does persist, as in any warm worker.

Modules with requirements use hosts keyed by their environment, built by the executor
before it accepts the run (``EnvironmentManager.ensure``); such keys are kept warm once
used, like the others.

Compiled runtimes (go): a host *is* its code (one binary per set of module sources,
``runtimes/go/README.md``), so such hosts are keyed by their host key too
(``go-<build hash>``, ``Module.host``): :meth:`HostPool.acquire` gets ``build`` (that
key) and ``sources`` (the modules' load frames the binary is built from). The caller
builds the binary first (``runner/compiled.py``: cached by content); the pool's start
finds it in the cache. Such keys are kept warm like the others, but at most
``max_builds`` of them (the least recently used is forgotten: its idle hosts are
killed, its lent ones are not taken back).

Sizes: ``warm`` idle hosts per key are refilled in the background (for ``prewarm`` keys
from the start, for every other key once a run used it: the first run of a runtime pays
its host's start, the next ones find it warm); a released host goes back idle while its
key has fewer than ``max_idle``; the pool never starts a host for refill beyond
``max_hosts`` (idle + lent), and an acquire at the cap first kills an idle host of
another key. Acquires never wait for the cap: lent hosts are bounded by the executor's
``max_runs`` times the keys of a flow.

Resource handling: every host's ``RuntimeInstance.run`` task lives in the pool's
nursery (:meth:`HostPool.run`), under a cancel scope of its own; killing a host cancels
it, which kills and reaps its process group and removes its FIFOs. Leaving ``run``
kills every host.

Error handling: a host that cannot start raises ``RuntimeStartError`` from
:meth:`acquire`; a refill that fails is logged and tried again after ``retry_delay``.
An idle host that crashes is restarted by its instance; one that crash-loops leaves the
pool.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, defaultdict, deque
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ...flows.model import Flow
from ..errors import RunnerError, RuntimeNotFound
from ..events import EventHub
from ..flowrun import FlowRun
from ..instance import RuntimeInstance
from ..status import InstanceStatus

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..service import Runner

__all__ = ["HostKey", "HostPool", "PoolStatistics"]

log = logging.getLogger("fifoflow.runs.pool")

#: (runtime id, environment id or None, the environment's requirements, the host key of a
#: compiled runtime's module set ("go-<hash>") or None)
HostKey = tuple[str, str | None, tuple[str, ...], str | None]


@attrs.frozen
class PoolStatistics:
    #: idle hosts per key ("python", "python-<hash>")
    idle: dict[str, int]
    lent: int
    starting: int
    #: hosts started, acquires served by an idle host, hosts killed, since the start
    started: int
    reused: int
    killed: int


@attrs.define(eq=False)
class _Host:
    instance: RuntimeInstance
    key: HostKey
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    ended: trio.Event = attrs.field(factory=trio.Event)


def _label(key: HostKey) -> str:
    return key[3] or key[1] or key[0]


class HostPool:
    def __init__(
        self,
        runner: Runner,
        *,
        warm: int = 2,
        max_idle: int | None = None,
        max_hosts: int | None = None,
        prewarm: Iterable[str] | None = None,
        retry_delay: float = 5.0,
        max_builds: int = 4,
    ) -> None:
        """``prewarm``: runtimes kept warm from the start (default: none; a key is kept
        warm once a run used it, so a runner that takes no runs starts no host for them).
        ``max_builds``: compiled module sets (go) kept warm, the most recently used."""
        self.runner = runner
        self.warm = warm
        self.max_idle = max(warm, max_idle if max_idle is not None else warm)
        # (an executor passes warm + max_runs: every lent host can come back without
        # killing one that a refill started meanwhile)
        self.max_hosts = max_hosts if max_hosts is not None else max(8, 4 * (self.max_idle + warm))
        self.retry_delay = retry_delay
        if prewarm is None:
            prewarm = []
        self._wanted: set[HostKey] = {(rid, None, (), None) for rid in prewarm} if warm else set()
        self.max_builds = max_builds
        #: compiled module sets, least recently used first -> their modules' load frames
        self._builds: OrderedDict[HostKey, dict[str, dict[str, Any]]] = OrderedDict()
        #: what an idle host serves: no flow of its own (its events go nowhere)
        self._home = FlowRun(
            Flow(id="pool", modules=()),
            runner.runtimes,
            runner.config,
            EventHub(),
            runner.environments,
        )
        self._idle: dict[HostKey, deque[_Host]] = defaultdict(deque)
        self._lent: dict[RuntimeInstance, _Host] = {}
        self._starting: dict[HostKey, int] = defaultdict(int)
        self._failed_at: dict[HostKey, float] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._serial = 0
        self._started = self._reused = self._killed = 0

    # ------------------------------------------------------------------ surface

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every host until cancelled; keep the idle lists filled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._refill)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def statistics(self) -> PoolStatistics:
        idle: dict[str, int] = {}
        for key, hosts in self._idle.items():
            if hosts:
                idle[_label(key)] = len(hosts)
        return PoolStatistics(
            idle=idle,
            lent=len(self._lent),
            starting=sum(self._starting.values()),
            started=self._started,
            reused=self._reused,
            killed=self._killed,
        )

    async def wait_warm(self) -> None:
        """Until every key kept warm has its ``warm`` idle hosts (a bench, a test)."""
        while not all(len(self._idle[key]) >= self.warm for key in self._wanted):
            await self._changed.wait()

    def total(self) -> int:
        return (
            sum(len(h) for h in self._idle.values())
            + len(self._lent)
            + sum(self._starting.values())
        )

    async def acquire(
        self,
        runtime: str,
        environment: str | None = None,
        requirements: tuple[str, ...] = (),
        *,
        build: str | None = None,
        sources: dict[str, dict[str, Any]] | None = None,
    ) -> RuntimeInstance:
        """A running host of ``runtime`` (in ``environment``) holding no module, lent to
        the caller until :meth:`release`. A compiled runtime's: ``build`` is the host key
        of its module set, ``sources`` their load frames (its binary is built from
        them; the caller built it before, so this start finds it cached). Raises
        RuntimeNotFound, RuntimeStartError, FlowLoadError (a source that does not build)."""
        if runtime not in self.runner.runtimes:
            raise RuntimeNotFound(f"runtime {runtime!r} is not available here")
        key: HostKey = (runtime, environment, tuple(requirements), build)
        if build is not None:
            await self._use_build(key, sources or {})
        if key not in self._wanted and self.warm:
            self._wanted.add(key)
        idle = self._idle[key]
        while idle:
            host = idle.pop()  # the one used last: its caches are warm
            if host.instance.status is InstanceStatus.RUNNING and not host.ended.is_set():
                self._lent[host.instance] = host
                self._reused += 1
                self._kick()
                return host.instance
            await self._kill(host)
        if self.total() >= self.max_hosts:
            await self._evict(key)
        host = await self._start(key)
        self._lent[host.instance] = host
        self._kick()
        return host.instance

    async def release(self, instance: RuntimeInstance, *, reuse: bool = True) -> bool:
        """Give a lent host back. With ``reuse`` and a clean host, its modules are
        unloaded and it waits for the next attempt (True); otherwise it is killed and
        reaped before this returns (False)."""
        host = self._lent.pop(instance, None)
        if host is None:
            raise RunnerError(f"runtime host {instance.name} is not lent by this pool")
        if reuse and self._clean(instance):
            unloaded = await instance.unload_all()
            if (
                unloaded
                and self._clean(instance)
                and (host.key[3] is None or host.key in self._builds)
                and len(self._idle[host.key]) < self.max_idle
                and self.total() < self.max_hosts
            ):
                instance.adopt(self._home)
                self._idle[host.key].append(host)
                return True
        await self._kill(host)
        self._kick()
        return False

    # ------------------------------------------------------------------ hosts

    @staticmethod
    def _clean(instance: RuntimeInstance) -> bool:
        stats = instance.queues.statistics()
        return (
            instance.status is InstanceStatus.RUNNING
            and instance.restarts == 0
            and not instance.child_restarts
            and stats.queued == 0
            and stats.unacknowledged == 0
        )

    async def _use_build(self, key: HostKey, sources: dict[str, dict[str, Any]]) -> None:
        """A compiled module set is used: the most recent now; past ``max_builds``, the
        least recently used one is no longer kept warm (its idle hosts are killed)."""
        self._builds[key] = sources
        self._builds.move_to_end(key)
        while len(self._builds) > max(1, self.max_builds):
            old, _ = self._builds.popitem(last=False)
            self._wanted.discard(old)
            idle = self._idle.pop(old, deque())
            while idle:
                await self._kill(idle.popleft())

    async def _start(self, key: HostKey) -> _Host:
        assert self._nursery is not None, "HostPool.run is not running"
        runtime, environment, requirements, build = key
        instance = RuntimeInstance(
            self._home,
            self.runner.runtimes[runtime],
            self.runner.config,
            environment=environment,
            requirements=requirements,
        )
        if build is not None:
            instance.build_loads = dict(self._builds.get(key) or {})
        self._serial += 1
        instance.name = f"pool/{_label(key)}-{self._serial}"
        host = _Host(instance, key)
        self._starting[key] += 1
        try:
            await self._nursery.start(self._host_task, host)
        finally:
            self._starting[key] -= 1
        self._started += 1
        return host

    async def _host_task(self, host: _Host, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with host.scope:
                await host.instance.run(task_status=task_status)
        finally:
            host.ended.set()
            idle = self._idle.get(host.key)
            if idle is not None and host in idle:
                idle.remove(host)
                self._kick()

    async def _kill(self, host: _Host) -> None:
        host.scope.cancel()
        self._killed += 1
        await host.ended.wait()

    async def _evict(self, key: HostKey) -> None:
        """At the cap: kill the idle host of another key that waited longest."""
        for other, hosts in self._idle.items():
            if other != key and hosts:
                await self._kill(hosts.popleft())
                return

    def _kick(self) -> None:
        self._wake.set()
        self._changed.set()
        self._changed = trio.Event()

    async def _refill(self) -> None:
        while True:
            assert self._nursery is not None
            now = trio.current_time()
            for key in sorted(self._wanted, key=lambda k: (k[0], k[1] or "", k[3] or "")):
                if now - self._failed_at.get(key, -math.inf) < self.retry_delay:
                    continue
                missing = self.warm - len(self._idle[key]) - self._starting[key]
                for _ in range(missing):
                    if self.total() >= self.max_hosts:
                        break
                    self._starting[key] += 1  # counted before the task runs: no double refill
                    self._nursery.start_soon(self._refill_one, key)
            self._wake = trio.Event()
            with trio.move_on_after(self.retry_delay):
                await self._wake.wait()

    async def _refill_one(self, key: HostKey) -> None:
        self._starting[key] -= 1
        try:
            host = await self._start(key)
        except RunnerError as exc:
            self._failed_at[key] = trio.current_time()
            log.warning("could not start a warm %s host: %s", _label(key), exc)
            return
        if len(self._idle[key]) < self.max_idle and (key[3] is None or key in self._builds):
            self._idle[key].append(host)
            self._kick()
        else:
            await self._kill(host)
