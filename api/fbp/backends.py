"""What an FBP runtime runs its graphs on: a runner, or a dispatcher's deployed flows.

:class:`~.session.FbpRuntime` speaks the protocol; an :class:`FbpBackend` does what
the protocol asks of the flows. Two of them:

- :class:`RunnerBackend`: the flows of one :class:`~fifoflow.runner.Runner`
  (``runner serve --fbp-port``). A graph's flow is applied with ``apply_flow`` (a hot
  swap while it runs); its events are the runner's.
- :class:`DispatcherBackend`: flows a :class:`~fifoflow.dispatcher.service.Dispatcher`
  deploys onto its runners (``dispatcher serve --fbp-port``). A graph's flow is
  deployed (placed, and hot-swapped part by part where it runs); a watched flow's
  parts send their events over their links (``Dispatcher.watch_flow``), and the wires
  relayed by the dispatcher are published by it.

Errors: every refusal is a :class:`~fifoflow.runner.RunnerError` (the dispatcher's own
errors are ones), whose message the session sends back to the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from fifoflow.runner import FlowStatus, RunnerError

if TYPE_CHECKING:
    from collections.abc import Collection

    from fifoflow.dispatcher.service import Dispatcher
    from fifoflow.flows import Flow
    from fifoflow.runner import Runner
    from fifoflow.runner.events import Subscription

__all__ = ["EVENT_KINDS", "DispatcherBackend", "FbpBackend", "RunnerBackend"]

#: the events an FBP runtime turns into network messages
EVENT_KINDS = ("wire", "log", "error", "flow", "missed")
#: how often a dispatcher's flow is asked whether it went quiet (``busy``)
POLL_SECONDS = 0.02


class FbpBackend(Protocol):
    """The flows a graph maps onto. A ``flow_id`` is the graph's flow id."""

    #: the runtimes a flow document may name (for checking a graph's flow)
    runtimes: Collection[str]

    def subscribe(self, capacity: int) -> Subscription:
        """The flows' events (``wire``, ``log``, ``error``, ``flow``; ``missed``)."""
        ...

    def flow_ids(self) -> set[str]: ...

    async def apply_flow(
        self, flow: Flow, document: dict[str, Any], states: dict[str, Any] | None
    ) -> None:
        """Add or update the flow (a hot swap while it runs); ``states`` seeds modules
        it adds. RunnerError when it is refused (nothing changed then)."""
        ...

    async def remove_flow(self, flow_id: str) -> None: ...

    async def module_state(self, flow_id: str, module_id: str) -> Any:
        """The module's state (RunnerError: no such flow or module)."""
        ...

    async def started(self, flow_id: str) -> bool:
        """The flow runs (as a network: started, and not stopped since)."""
        ...

    async def busy(self, flow_id: str, settle: float) -> bool:
        """Messages are in flight after waiting up to ``settle`` s for them to end."""
        ...

    async def start_flow(self, flow_id: str) -> None: ...

    async def stop_flow(self, flow_id: str) -> None: ...

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> None: ...

    async def watch(self, flow_id: str, watched: bool) -> None:
        """Publish the flow's wire events (or stop): wires then pass through the runner."""
        ...


class RunnerBackend:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.runtimes = runner.runtimes

    def subscribe(self, capacity: int) -> Subscription:
        return self.runner.subscribe(kinds=list(EVENT_KINDS), capacity=capacity)

    def flow_ids(self) -> set[str]:
        return {f["id"] for f in self.runner.flows()}

    async def apply_flow(
        self, flow: Flow, document: dict[str, Any], states: dict[str, Any] | None
    ) -> None:
        await self.runner.apply_flow(flow, states=states)

    async def remove_flow(self, flow_id: str) -> None:
        await self.runner.remove_flow(flow_id)

    async def module_state(self, flow_id: str, module_id: str) -> Any:
        return self.runner.module_state(flow_id, module_id)

    async def started(self, flow_id: str) -> bool:
        try:
            return FlowStatus(self.runner.describe_flow(flow_id)["status"]) is FlowStatus.RUNNING
        except RunnerError:
            return False

    async def busy(self, flow_id: str, settle: float) -> bool:
        with trio.move_on_after(settle):
            await self.runner.wait_idle(flow_id)
        return self.runner.describe_flow(flow_id).get("pending", 0) > 0

    async def start_flow(self, flow_id: str) -> None:
        await self.runner.start_flow(flow_id)

    async def stop_flow(self, flow_id: str) -> None:
        await self.runner.stop_flow(flow_id)

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> None:
        await self.runner.inject(flow_id, module_id, port, msgs)

    async def watch(self, flow_id: str, watched: bool) -> None:
        await self.runner.watch_flow(flow_id, watched)


class DispatcherBackend:
    """Graphs as deployed flows. A deployed flow starts where it is placed; a graph's
    network that is not started is stopped again right after each deploy (its IIPs go
    only at ``network:start``, so nothing runs meanwhile but what waited in it)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        from fifoflow.runtimes.registry import discover

        self.dispatcher = dispatcher
        self.runtimes = frozenset(discover(attached=True))
        #: flows started as networks (and not stopped since)
        self._started: set[str] = set()
        #: flow id -> the last document deployed for it that was placed
        self._placed: dict[str, dict[str, Any]] = {}

    def subscribe(self, capacity: int) -> Subscription:
        return self.dispatcher.flow_events.subscribe(kinds=list(EVENT_KINDS), capacity=capacity)

    def flow_ids(self) -> set[str]:
        return {f["id"] for f in self.dispatcher.flows()}

    async def apply_flow(
        self, flow: Flow, document: dict[str, Any], states: dict[str, Any] | None
    ) -> None:
        summary = await self.dispatcher.deploy(document, states)
        if summary["status"] != "placed":
            # refused (no runner takes it, code that does not load, ...): put back what
            # was placed before, or nothing, and say why
            why = summary.get("reason") or summary["status"]
            previous = self._placed.get(flow.id)
            try:
                if previous is not None:
                    await self.dispatcher.deploy(previous)
                else:
                    await self.dispatcher.remove(flow.id)
            except RunnerError:
                pass  # the first refusal is what the client is told
            raise RunnerError(f"the dispatcher could not place the flow: {why}")
        self._placed[flow.id] = document
        # (a watched flow's parts are deployed watched, wherever they go)
        if flow.modules and flow.id not in self._started:
            await self.dispatcher.stop_flow(flow.id)

    async def remove_flow(self, flow_id: str) -> None:
        await self.dispatcher.remove(flow_id)
        self._started.discard(flow_id)
        self._placed.pop(flow_id, None)

    async def module_state(self, flow_id: str, module_id: str) -> Any:
        answer = await self.dispatcher.module_state(flow_id, module_id)
        return answer.get("state") if isinstance(answer, dict) else None

    def _has_parts(self, flow_id: str) -> bool:
        """The flow has modules placed somewhere (an empty graph has none)."""
        try:
            return bool(self.dispatcher.flow(flow_id)["placement"])
        except RunnerError:
            return False

    async def started(self, flow_id: str) -> bool:
        if flow_id not in self._started or flow_id not in self.flow_ids():
            return False
        if not self._has_parts(flow_id):
            return True
        try:
            status = (await self.dispatcher.describe_flow(flow_id))["status"]
        except RunnerError:
            return True  # between runners right now: started, as far as the network goes
        return status == FlowStatus.RUNNING

    async def busy(self, flow_id: str, settle: float) -> bool:
        if not self._has_parts(flow_id):
            return False
        pending = 0
        with trio.move_on_after(settle):
            while True:
                pending = (await self.dispatcher.describe_flow(flow_id))["pending"]
                if not pending:
                    return False
                await trio.sleep(POLL_SECONDS)
        return pending > 0

    async def start_flow(self, flow_id: str) -> None:
        self._started.add(flow_id)
        if self._has_parts(flow_id):
            await self.dispatcher.start_flow(flow_id)

    async def stop_flow(self, flow_id: str) -> None:
        self._started.discard(flow_id)
        if self._has_parts(flow_id):
            await self.dispatcher.stop_flow(flow_id)

    async def inject(self, flow_id: str, module_id: str, port: str, msgs: list[Any]) -> None:
        await self.dispatcher.inject(flow_id, module_id, port, msgs)

    async def watch(self, flow_id: str, watched: bool) -> None:
        # an empty graph's flow too: the parts it gets later are deployed watched
        await self.dispatcher.watch_flow(flow_id, watched)
