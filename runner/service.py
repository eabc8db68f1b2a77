"""The runner service: the object behind the Runner API.

It owns a nursery in which every started flow runs, and it is the only thing the HTTP
layer (``api/``) talks to. Method names follow the Runner API: ``list_runtimes``,
``list_flows_for_runtime``, ``add_or_update_flow``, ``remove_flow``, ``start_flow``,
``stop_flow``; plus ``inject``, ``wait_idle``, ``module_state``, ``module_errors``.

Resource handling: :meth:`Runner.run` (or :func:`open_runner`) owns every flow task
and, through them, every runtime host process and FIFO; leaving it stops them all.

Error handling: calls with a bad flow id, module or state raise :class:`RunnerError`
subclasses with a message naming what was wrong; nothing a caller passes can crash the
service's nursery.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ..runtimes.registry import discover
from .config import RunnerConfig
from .errors import FlowNotFound, FlowStateError, RunnerError
from .events import EventHub, Subscription
from .flowrun import FlowRun, FlowStatus, OutputSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..flows import Flow
    from ..runtimes.registry import RuntimeManifest

__all__ = ["Runner", "open_runner"]


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

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def aclose(self) -> None:
        """Stop every running flow gracefully (state snapshots taken)."""
        async with trio.open_nursery() as nursery:
            for flow in list(self._flows.values()):
                nursery.start_soon(flow.stop)

    # ------------------------------------------------------------------ Runner API

    def list_runtimes(self) -> list[dict[str, str]]:
        return [m.describe() for m in sorted(self.runtimes.values(), key=lambda m: m.id)]

    def list_flows_for_runtime(self, runtime_id: str) -> list[str]:
        if runtime_id not in self.runtimes:
            known = ", ".join(sorted(self.runtimes))
            raise RunnerError(f"unknown runtime {runtime_id!r} (known: {known})")
        return sorted(fid for fid, run in self._flows.items() if runtime_id in run.instances)

    async def add_or_update_flow(self, flow: Flow) -> bool:
        async with self._lock:
            current = self._flows.get(flow.id)
            if current is not None and current.status in (
                FlowStatus.RUNNING,
                FlowStatus.STARTING,
                FlowStatus.STOPPING,
            ):
                raise FlowStateError(
                    f"flow {flow.id!r} is {current.status.value}: updating a running flow is a hot swap, "
                    "which this runner does not do yet; stop the flow first"
                )
            run = FlowRun(flow, self.runtimes, self.config, self.events)
            if current is not None:
                run.sink = current.sink
            self._flows[flow.id] = run
            return True

    async def remove_flow(self, flow_id: str) -> None:
        async with self._lock:
            run = self.flow(flow_id)
            await run.stop()
            del self._flows[flow_id]

    async def start_flow(self, flow_id: str) -> None:
        async with self._lock:
            run = self.flow(flow_id)
            if run.status in (FlowStatus.RUNNING, FlowStatus.STARTING):
                return
            if self._nursery is None:
                raise RunnerError("the runner is not running (call Runner.run first)")
            await self._nursery.start(run.run)

    async def stop_flow(self, flow_id: str) -> None:
        async with self._lock:
            await self.flow(flow_id).stop()

    # ------------------------------------------------------------------ around the API

    def flow(self, flow_id: str) -> FlowRun:
        try:
            return self._flows[flow_id]
        except KeyError:
            known = ", ".join(sorted(self._flows)) or "none"
            raise FlowNotFound(f"no flow {flow_id!r} (flows: {known})") from None

    def flows(self) -> list[dict[str, Any]]:
        return [run.describe() for _, run in sorted(self._flows.items())]

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
                with trio.CancelScope(shield=True), trio.move_on_after(runner.config.stop_timeout + 1):
                    await runner.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
