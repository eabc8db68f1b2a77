"""A flow inside the runner: its runtime instances, its routing table, outputs and errors.

Isolation: every flow gets its own runtime instances (one host process per runtime the
flow uses), so a slow or crashing module of one flow never holds up another flow.

Routing: wires between modules of the same runtime are given to the host (``route``)
and never leave it. The runner's table holds only what crosses hosts, plus the output
ports no wire leaves (the flow's exits), whose messages go to the flow's output sink.

Accounting: ``pending`` counts messages queued for, or in flight to, any host of the
flow. A message routed from A to B is counted before A's delivery is acknowledged (A's
``emit`` precedes its ``done`` on the pipe), so ``pending == 0`` means the flow is idle.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from .debugger import Debugger
from .direct import DirectChannels
from .errors import (
    FlowStateError,
    ModuleNotFound,
    PortNotFound,
    ProtocolError,
    RunnerError,
    first,
)
from .events import EventKind
from .framing import parse_messages
from .instance import RuntimeInstance
from .queues import Delivery, DeliveryQueues
from .status import FlowStatus, InstanceStatus

if TYPE_CHECKING:
    from ..flows import Flow
    from ..runtimes.registry import RuntimeManifest
    from .config import RunnerConfig
    from .environments import Environment, EnvironmentManager
    from .events import Event, EventHub
    from .journal import Journal

__all__ = ["FlowRun", "OutputSink", "Plan"]

#: called with (module id, port, messages) for what reaches the flow's exits
OutputSink = Callable[[str, str, list[Any]], Awaitable[None]]

_SINK = None


@attrs.frozen
class Plan:
    instances: dict[str, RuntimeInstance]
    loads: dict[str, dict[str, dict[str, Any]]]
    host_routes: dict[str, dict[str, Any]]
    routes: dict[tuple[str, str], list[tuple[RuntimeInstance, str, str] | None]]
    downstream: dict[str, dict[str, list[tuple[DeliveryQueues, str]]]]
    #: every wire goes through the runner (while the flow is debugged)
    external: bool = False


class FlowRun:
    def __init__(
        self,
        flow: Flow,
        runtimes: dict[str, RuntimeManifest],
        config: RunnerConfig,
        hub: EventHub,
        environments: EnvironmentManager | None = None,
        *,
        instances: dict[str, RuntimeInstance] | None = None,
    ) -> None:
        """``instances`` (host key -> running instance): hosts this flow is given instead
        of making its own (a run's warm hosts, ``runner/runs/pool.py``); they are adopted
        (:meth:`RuntimeInstance.adopt`) and :meth:`plan` reuses them. Their ``run`` task
        belongs to whoever gave them: start such a flow with :meth:`attach`, not :meth:`run`."""
        self.environments = environments
        self.flow = flow
        self.flow_id = flow.id
        self.config = config
        self.hub = hub
        self.status = FlowStatus.STOPPED
        #: bumped by every addOrUpdateFlow of this flow id; a caller can update "from" one
        self.revision = 1
        self.error: str | None = None
        self.sink: OutputSink | None = None
        self.pending = 0
        self.outputs = 0
        self.errors: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=config.keep_errors)
        )
        self.error_count = 0
        #: what the page's graph shows (:meth:`stats`): messages per wire the runner
        #: routed (src, port, dst, dst port: qualified ids), per exit and per injected
        #: port, errors per module; plain integer increments, once per routed batch
        self.wire_counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        #: of those, the messages that went through a direct channel (runner/direct.py)
        self.direct_counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        #: messages delivered inside one host (a wire the runner does not route), as
        #: the hosts that list ``counts`` report them in ``done`` (PROTOCOL.md section 12)
        self.host_counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.exit_counts: dict[tuple[str, str], int] = defaultdict(int)
        self.inject_counts: dict[tuple[str, str], int] = defaultdict(int)
        self.module_errors: dict[str, int] = defaultdict(int)
        self._idle = trio.Event()
        self._idle.set()
        self._progress = trio.Event()
        self._touched: set[RuntimeInstance] = set()
        self._ended = trio.Event()
        self._ended.set()
        self._scope: trio.CancelScope | None = None
        self.runtimes = runtimes
        self.instances: dict[str, RuntimeInstance] = dict(instances or {})
        for given in self.instances.values():
            given.adopt(self)
        self._routes: dict[tuple[str, str], list[tuple[RuntimeInstance, str, str] | None]] = {}
        #: where the instances run while the flow runs (a hot swap starts new ones here)
        self.instance_nursery: trio.Nursery | None = None
        self.debugger = Debugger(self)
        #: whether the installed wiring sends every wire through the runner
        self.external_routing = False
        #: publish a ``wire`` event for every message a wire carries (wires then pass
        #: through the runner, as when debugged); set through ``Runner.watch_flow``
        self.watched = False
        #: the flow's journal when its durability is ``journal`` (given by the runner:
        #: :meth:`use_journal`); None: state is checkpointed
        self.journal: Journal | None = None
        #: direct host-to-host channels (runner/direct.py; PROTOCOL.md section 11)
        self.direct = DirectChannels(self)
        self._build(runtimes)

    # ------------------------------------------------------------------ wiring

    def qualified(self, module_id: str) -> str:
        return f"{self.flow_id}/{module_id}"

    def short(self, qualified: str) -> str:
        prefix = self.flow_id + "/"
        return qualified[len(prefix) :] if qualified.startswith(prefix) else qualified

    def _build(self, runtimes: dict[str, RuntimeManifest]) -> None:
        self._install(self.plan(self.flow))

    def plan(self, flow: Flow) -> Plan:
        """Everything the runner and the hosts need to run ``flow``: one instance per
        runtime (this flow's existing ones reused, new ones created but not started),
        load frames, host route tables, the runner's table, and downstream sets.

        While the flow is debugged (a breakpoint, or paused) every wire goes through the
        runner, same-runtime ones included, so that the debugger gates every message;
        so does a watched flow (its wire events need every message)."""
        external = self.debugger.active or self.watched
        by_id = {m.id: m for m in flow.modules}
        instances: dict[str, RuntimeInstance] = {}
        for module in flow.modules:
            host = module.host
            if host not in instances:
                existing = self.instances.get(host)
                if existing is not None:
                    instances[host] = existing
                elif module.runtime not in self.runtimes:
                    raise RunnerError(
                        f"modules.{module.id}.runtime: runtime {module.runtime!r} is not available here"
                    )
                else:
                    instances[host] = RuntimeInstance(
                        self,
                        self.runtimes[module.runtime],
                        self.config,
                        environment=module.environment,
                        requirements=module.requirements,
                    )
        listed_exits = set(flow.exits)
        wires_from: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for wire in flow.wires:
            wires_from[(wire.src, wire.src_port)].append(wire)
        loads: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        host_routes: dict[str, dict[str, Any]] = defaultdict(dict)
        routes: dict[tuple[str, str], list[tuple[RuntimeInstance, str, str] | None]] = {}
        for module in flow.modules:
            qid = self.qualified(module.id)
            loads[module.host][qid] = {
                "op": "load",
                "module": qid,
                "code": module.source,
                "filename": module.filename,
                "config": dict(module.config),
                "timeout": float(module.timeout),
                "command": list(module.command) if module.command else None,
                "cwd": str(module.cwd) if module.cwd else None,
                "env": None,
            }
            table: dict[str, Any] = {}
            for port in module.outputs:
                local: list[list[str]] = []
                targets: list[tuple[RuntimeInstance, str, str] | None] = []
                wires = wires_from.get((module.id, port), [])
                for wire in wires:
                    dst = by_id[wire.dst]
                    if dst.host == module.host and not external:
                        local.append([self.qualified(dst.id), wire.dst_port])
                    else:
                        targets.append((instances[dst.host], self.qualified(dst.id), wire.dst_port))
                if not wires or (module.id, port) in listed_exits:
                    targets.append(_SINK)
                table[port] = {"local": local, "external": bool(targets)}
                if targets:
                    routes[(qid, port)] = targets
            host_routes[module.host][qid] = table
            if module.command:
                # A host that supervises children backs off and gives up by the same rule.
                loads[module.host][qid]["restart"] = {
                    "limit": self.config.crash_limit,
                    "period": self.config.crash_period,
                    "backoffMax": self.config.restart_backoff_max,
                }
        for host, instance in instances.items():
            if instance.manifest.build is not None and host in loads:
                instance.build_loads = dict(loads[host])
        # What each module's deliveries can produce messages for, through same-host wires.
        downstream: dict[str, dict[str, list[tuple[DeliveryQueues, str]]]] = defaultdict(dict)
        for module in flow.modules:
            qid = self.qualified(module.id)
            seen: set[str] = set()
            todo = [qid]
            found: set[tuple[RuntimeInstance, str]] = set()
            while todo:
                current = todo.pop()
                if current in seen:
                    continue
                seen.add(current)
                for port, spec in host_routes[module.host].get(current, {}).items():
                    todo.extend(dst for dst, _ in spec["local"])
                    for target in routes.get((current, port), ()):
                        if target is not None:
                            found.add((target[0], target[1]))
            downstream[module.host][qid] = [
                (instance.queues, dst)
                for instance, dst in sorted(found, key=lambda t: (t[0].name, t[1]))
            ]
        return Plan(instances, dict(loads), dict(host_routes), routes, dict(downstream), external)

    async def build_environment(self, instance: RuntimeInstance) -> Environment:
        """The environment an instance's host needs, built now if it does not exist;
        progress goes out as ``environment`` events of this flow."""
        if self.environments is None:
            raise RunnerError("this runner has no environment manager")
        assert instance.environment is not None

        def progress(event: dict[str, Any]) -> None:
            self.publish({"kind": EventKind.ENVIRONMENT, "runtime": instance.manifest.id, **event})

        return await self.environments.ensure(
            instance.manifest.id, instance.environment, instance.requirements, progress
        )

    def _install(self, plan: Plan) -> None:
        """Make ``plan`` the flow's wiring: one synchronous step, so no message is ever
        routed by half of an old and half of a new table."""
        self.direct.cut_all()  # channels belong to a wiring
        self._routes = plan.routes
        self.external_routing = plan.external
        for runtime, instance in plan.instances.items():
            instance.set_modules(plan.loads.get(runtime, {}), plan.host_routes.get(runtime, {}))
            instance.queues.downstream = plan.downstream.get(runtime, {})
            instance.queues.set_local(*_local_order(plan.host_routes.get(runtime, {})))
        self.instances = plan.instances
        self.direct.configure()

    def count_in_host(self, counts: list[tuple[str, str, str, str, int]]) -> None:
        """Messages a host delivered inside itself since its previous ``done``
        (``[src, port, dst, dst port, n]``, qualified ids; screened by the instance)."""
        host_counts = self.host_counts
        for src, port, dst, dst_port, n in counts:
            host_counts[(src, port, dst, dst_port)] += n

    def _host_counts(self, module_id: str) -> bool:
        """Whether the host of ``module_id`` reports what it delivers inside itself."""
        try:
            instance = self.instances.get(self._module(module_id).host)
        except RunnerError:
            return False
        return instance is not None and instance.counts_in_host

    def instance_of(self, module_id: str) -> RuntimeInstance:
        module = self._module(module_id)
        return self.instances[module.host]

    def _module(self, module_id: str) -> Any:
        for module in self.flow.modules:
            if module.id == module_id:
                return module
        known = ", ".join(m.id for m in self.flow.modules)
        raise ModuleNotFound(
            f"flow {self.flow_id!r} has no module {module_id!r} (modules: {known})"
        )

    # ------------------------------------------------------------------ messages

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
        """Route what ``module`` emitted on ``port``: ``msgs``, or (``msgs`` None)
        ``count`` messages as the raw JSON array ``body`` of a host with the ``raw``
        feature. A raw body goes to the queues of other hosts as it is; it is parsed
        only where it must be looked at: a flow exit (the sink, ``output`` events) or
        the debugger's step record. ``ch``, ``d``: the emitting host also wrote these
        messages into the direct channels ``ch`` as their frame ``d`` (runner/direct.py):
        the copy for a target those reach is held, not queued."""
        if msgs is None:
            n = count
            if self.debugger.tick is not None or any(
                t is None for t in self._routes.get((module, port)) or (None,)
            ):
                msgs = self._parse(module, port, body or b"[]")
        else:
            n = len(msgs)
        tick = self.debugger.tick
        if tick is not None and msgs is not None:
            tick.outputs[self.short(module)][port].extend(msgs)
        targets = self._routes.get((module, port))
        if targets is None:
            targets = [_SINK]  # an undeclared port: keep the messages visible as outputs
        for target in targets:
            if target is None:
                if msgs:
                    await self._output(module, port, msgs)
            else:
                instance, dst, dst_port = target
                self.wire_counts[(module, port, dst, dst_port)] += n
                if self.watched and self.hub.has_subscribers:
                    if msgs is None:
                        msgs = _shown(body)
                    self._publish_wire(module, port, dst, dst_port, msgs)
                if ch is not None:
                    c = self.direct.channel(ch, instance)
                    if c is not None:
                        if d <= c.acked:
                            self.direct_counts[(module, port, dst, dst_port)] += n
                            continue  # the receiving host handled it already
                        self._add_pending(n)
                        if c.open:
                            self.direct_counts[(module, port, dst, dst_port)] += n
                            self.direct.hold(
                                c, d, Delivery(dst, dst_port, msgs, body=body, count=n, src=module)
                            )
                        else:
                            instance.queues.enqueue(
                                dst, dst_port, msgs, body=body, count=n, ch=c.id, direct=d,
                                src=module,
                            )  # fmt: skip
                            self._touched.add(instance)
                        continue
                self._add_pending(n)
                if body is not None:
                    instance.queues.enqueue(dst, dst_port, None, body=body, count=n, src=module)
                else:
                    instance.queues.enqueue(dst, dst_port, msgs, src=module)
                self._touched.add(instance)

    def _publish_wire(self, module: str, port: str, dst: str, dst_port: str, msgs: Any) -> None:
        """A ``wire`` event: messages a wire carried (a watched flow, ``Runner.watch_flow``)."""
        self.publish(
            {
                "kind": EventKind.WIRE,
                "module": self.short(module),
                "port": port,
                "dst": self.short(dst),
                "dstPort": dst_port,
                "msgs": msgs,
            }
        )

    def _parse(self, module: str, port: str, body: bytes) -> list[Any]:
        """The messages of a raw body, for a flow exit or the debugger; values no later
        stage could encode are taken out and reported as errors of ``module``."""
        try:
            msgs, taken = parse_messages(body, port)
        except ProtocolError as exc:
            msgs, taken = [], [str(exc)]
        for text in taken:
            self.record_error(
                module,
                port,
                None,
                {"type": "InvalidValue", "message": text, "traceback": ""},
                runtime=self._runtime_of(module),
            )
        return msgs

    def _runtime_of(self, qualified: str) -> str:
        for module in self.flow.modules:
            if self.qualified(module.id) == qualified:
                return module.runtime
        return "?"

    async def commit(self, instance: RuntimeInstance, consumed: dict[str, int]) -> None:
        """A journaled flow's host said ``done`` (``consumed``: how far each module's
        stream is handled): record what it consumed, the emits it held and its changed
        states as one journal record, then route the emits and keep the states. In one
        step (no await) up to the queues, so that a message is in the journal before any
        host can have it (runner/JOURNAL.md)."""
        journal = self.journal
        assert journal is not None
        emits, instance.held_emits = instance.held_emits, []
        states, instance.held_states = instance.held_states, {}
        tick = self.debugger.tick
        wires: list[tuple[str, str, RuntimeInstance, str, str, list[Any] | bytes, int]] = []
        outputs: list[tuple[str, str, list[Any]]] = []
        for module, port, msgs, n in emits:
            targets = self._routes.get((module, port)) or [_SINK]
            if isinstance(msgs, bytes) and (tick is not None or None in targets):
                msgs = self._parse(module, port, msgs)  # looked at: exits, the debugger
                n = len(msgs)
            if tick is not None:
                tick.outputs[self.short(module)][port].extend(msgs)
            for target in targets:
                if target is None:
                    if msgs:
                        outputs.append((module, port, msgs))  # type: ignore[arg-type]
                elif n:
                    wires.append((module, port, *target, msgs, n))
        ends = journal.commit(consumed, [(w[3], w[4], w[5], w[6]) for w in wires], states)
        for (module, port, target, dst, dst_port, msgs, n), end in zip(wires, ends, strict=True):
            self.wire_counts[(module, port, dst, dst_port)] += n
            if self.watched and self.hub.has_subscribers:
                shown = _shown(msgs) if isinstance(msgs, bytes) else msgs
                self._publish_wire(module, port, dst, dst_port, shown)
            self._add_pending(n)
            if isinstance(msgs, bytes):
                target.queues.enqueue(dst, dst_port, None, body=msgs, count=n, end=end, src=module)
            else:
                target.queues.enqueue(dst, dst_port, msgs, end=end, src=module)
            self._touched.add(target)
        instance.states.update(states)
        for module, port, msgs in outputs:
            await self._output(module, port, msgs)

    def use_journal(self, journal: Journal) -> None:
        """Make ``journal`` this flow's (before it starts): module states and the
        messages the journal holds unhandled are put back, in order."""
        self.journal = journal
        by_qid = {self.qualified(m.id): m for m in self.flow.modules}
        for qid, state in journal.model.states.items():
            module = by_qid.get(qid)
            if module is not None:
                self.instances[module.host].states[qid] = state
        journal.seed({q: s for inst in self.instances.values() for q, s in inst.states.items()})
        for qid, entries in journal.model.pending().items():
            module = by_qid.get(qid)
            if module is None:
                continue  # a module the flow no longer has (documented in JOURNAL.md)
            queues = self.instances[module.host].queues
            for port, end, msgs in entries:
                self._add_pending(len(msgs))
                queues.enqueue(qid, port, msgs, end=end)

    def kick(self) -> None:
        """After a batch of routing: push what can go now to the hosts it was routed to."""
        if not self._touched:
            return
        touched, self._touched = self._touched, set()
        for instance in touched:
            instance.kick()

    async def inject(self, module_id: str, port: str, msgs: list[Any]) -> None:
        if self.status is not FlowStatus.RUNNING:
            raise FlowStateError(
                f"flow {self.flow_id!r} is {self.status}; start it before sending messages"
            )
        module = self._module(module_id)
        if port not in module.inputs:
            raise PortNotFound(
                f"module {module_id!r} has no input port {port!r} (inputs: {', '.join(module.inputs)})"
            )
        step = self.config.frame_messages
        qid = self.qualified(module_id)
        journal = self.journal
        ticket = 0
        if journal is not None and len(msgs) > step:
            # several chunks: all of them or none (each chunk is checked again)
            journal.check_room(len(orjson.dumps(msgs)) + 64 * (len(msgs) // step + 1))
        for start in range(0, len(msgs), step):
            chunk = msgs[start : start + step]
            while True:
                # Looked up again after every wait: a hot swap may have moved the module.
                instance = self.instance_of(module_id)
                if instance.queues.has_room(qid):
                    break
                await self.progress_event().wait()
            if self.status is not FlowStatus.RUNNING:
                raise FlowStateError(f"flow {self.flow_id!r} stopped while messages were sent")
            end = 0
            if journal is not None:
                end, ticket = journal.accept(qid, port, chunk)  # raises JournalFull
            self._add_pending(len(chunk))
            self.inject_counts[(module_id, port)] += len(chunk)
            instance.queues.enqueue(qid, port, chunk, end=end)
            if journal is None:
                instance.kick()
            else:
                # Answered after its group's sync anyway: the messages go with the host's
                # writer task, in one pipe write with those of the injects made meanwhile,
                # which the host answers with one done (fewer round trips, fewer records).
                self.notify()
        if ticket:
            # answered once the messages are durable (group commit: runner/JOURNAL.md)
            await journal.durable(ticket)

    def _add_pending(self, n: int) -> None:
        if self.pending == 0 and n:
            self._idle = trio.Event()
        self.pending += n

    def notify(self) -> None:
        """Something moved (a queue grew or shrank, a window freed): wake the writers."""
        self._progress.set()
        self._progress = trio.Event()

    def progress_event(self) -> trio.Event:
        return self._progress

    def settle(self, n: int) -> None:
        self.pending -= n
        if self.pending <= 0:
            self.pending = 0
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no message of this flow is queued or in flight (or the flow stopped)."""
        while self.pending and self.status in (FlowStatus.RUNNING, FlowStatus.STARTING):
            await self._idle.wait()
        if self.journal is not None:
            await self.journal.durable()

    async def _output(self, module: str, port: str, msgs: list[Any]) -> None:
        self.outputs += len(msgs)
        self.exit_counts[(module, port)] += len(msgs)
        if self.sink is not None:
            await self.sink(self.short(module), port, msgs)
        if self.hub.has_subscribers:
            self.publish(
                {"kind": EventKind.OUTPUT, "module": self.short(module), "port": port, "msgs": msgs}
            )

    def record_error(
        self, module: str, port: str | None, msg: Any, error: dict[str, Any], *, runtime: str
    ) -> None:
        short = self.short(module)
        entry = {
            "time": time.time(),
            "module": short,
            "port": port,
            "runtime": runtime,
            "msg": msg,
            "error": error,
        }
        self.errors[short].append(entry)
        self.error_count += 1
        self.module_errors[short] += 1
        if self.debugger.tick is not None:
            self.debugger.tick.errors[short].append(entry)
        self.publish({"kind": EventKind.ERROR, **entry})

    def publish(self, event: Event) -> None:
        if self.hub.has_subscribers:
            self.hub.publish({"flow": self.flow_id, **event})

    def module_state(self, module_id: str) -> Any:
        """The module's last state; a journaled flow's last durable one (what a crash
        keeps: a state read here never goes backwards)."""
        module = self._module(module_id)
        if self.journal is not None:
            qid = self.qualified(module_id)
            if qid in self.journal.durable_states:
                return self.journal.durable_states[qid]
        return self.instances[module.host].states.get(self.qualified(module_id))

    def snapshot(self) -> dict[str, Any]:
        """The last state each module reported, by module id (modules without state left
        out); a journaled flow's last durable one (as :meth:`module_state`)."""
        found: dict[str, Any] = {}
        durable = self.journal.durable_states if self.journal is not None else {}
        for module in self.flow.modules:
            qid = self.qualified(module.id)
            state = durable.get(qid, self.instances[module.host].states.get(qid))
            if state is not None:
                found[module.id] = state
        return found

    def seed_states(self, states: dict[str, Any]) -> None:
        """Give modules a state before the flow starts (a restored or updated flow).
        States of modules this flow does not have are ignored."""
        for module in self.flow.modules:
            if module.id in states:
                self.instances[module.host].states[self.qualified(module.id)] = states[module.id]

    def logs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Recent log lines of every runtime of the flow, oldest first."""
        merged = sorted(
            (entry for inst in self.instances.values() for entry in inst.logs),
            key=lambda entry: entry["time"],
        )
        return merged[-limit:] if limit else merged

    # ------------------------------------------------------------------ lifecycle

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.flow_id,
            "revision": self.revision,
            "status": self.status,
            "error": self.error,
            "pending": self.pending,
            "outputs": self.outputs,
            "errors": self.error_count,
            # host restarts and module child restarts (exec), since the flow was made
            "restarts": sum(
                inst.restarts + sum(inst.child_restarts.values())
                for inst in self.instances.values()
            ),
            "runtimes": {rid: inst.statistics() for rid, inst in self.instances.items()},
            # messages in the journal not handled yet (durability journal; JOURNAL.md)
            "journaled": self.journal.depth if self.journal is not None else 0,
            "durability": "journal" if self.journal is not None else "checkpoint",
        }

    def stats(self) -> dict[str, Any]:
        """Counters for a live picture of the flow (the page polls them and computes
        rates): per wire, messages the runner routed (``messages: None`` for a wire that
        stays inside one host, which the runner never sees: ``via: "host"``); per module,
        its queue (waiting messages, capacity, ``full``: back-pressure), errors and
        breakpoint; per exit and injected port, messages. Cheap: no message is looked at."""
        routed = {
            (src, port, target[1], target[2])
            for (src, port), targets in self._routes.items()
            for target in targets
            if target is not None
        }
        wires = []
        for wire in self.flow.wires:
            key = (
                self.qualified(wire.src),
                wire.src_port,
                self.qualified(wire.dst),
                wire.dst_port,
            )
            seen = key in routed
            # a wire inside one host is counted by a host that lists ``counts``
            in_host = self.host_counts.get(key)
            if in_host is None and not seen and self._host_counts(wire.src):
                in_host = 0
            wires.append(
                {
                    "wire": f"{wire.src}.{wire.src_port}->{wire.dst}.{wire.dst_port}",
                    "via": "runner" if seen else "host",
                    # every message that went along it: through the runner (a debugged
                    # flow's wires do) and inside its host; None: not known
                    "messages": (
                        None
                        if in_host is None and not seen
                        else self.wire_counts.get(key, 0) + (in_host or 0)
                    ),
                    # of those, how many went inside one host (None: not known)
                    "host": in_host,
                    # of those, how many went host to host through a direct channel
                    # (the runner kept a copy of each) and how many the runner delivered
                    "direct": self.direct_counts.get(key, 0) if seen else None,
                    "runner": (
                        self.wire_counts.get(key, 0) - self.direct_counts.get(key, 0)
                        if seen
                        else None
                    ),
                }
            )
        breakpoints = self.debugger.breakpoints
        modules = {}
        for module in self.flow.modules:
            qid = self.qualified(module.id)
            instance = self.instances.get(module.host)
            queues = instance.queues if instance is not None else None
            queued = queues.depth(qid) if queues is not None else 0
            capacity = queues.capacity if queues is not None else 0
            bp = breakpoints.get(module.id)
            modules[module.id] = {
                "runtime": module.runtime,
                "host": module.host,
                "queued": queued,
                "capacity": capacity,
                "full": queues is not None and queued >= capacity,
                "errors": self.module_errors.get(module.id, 0),
                "breakpoint": bp.describe() if bp is not None else None,
            }
        return {
            "id": self.flow_id,
            "status": self.status,
            "revision": self.revision,
            "time": time.time(),
            "pending": self.pending,
            "outputs": self.outputs,
            "errors": self.error_count,
            "paused": self.debugger.paused,
            "wires": wires,
            "modules": modules,
            "exits": {f"{self.short(m)}.{p}": n for (m, p), n in sorted(self.exit_counts.items())},
            "injected": {f"{m}.{p}": n for (m, p), n in sorted(self.inject_counts.items())},
        }

    def _set_status(self, status: FlowStatus, error: str | None = None) -> None:
        self.status = status
        if error is not None:
            self.error = error
        self.publish({"kind": EventKind.FLOW, "status": status, "error": error})
        if status not in (FlowStatus.RUNNING, FlowStatus.STARTING):
            self._idle.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every runtime instance of the flow until :meth:`stop` (or a crash loop)."""
        self._ended = trio.Event()
        self.error = None
        self._set_status(FlowStatus.STARTING)
        started = False
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    async with trio.open_nursery() as nursery:
                        self.instance_nursery = nursery
                        for instance in self.instances.values():
                            await nursery.start(instance.run)
                        self._set_status(FlowStatus.RUNNING)
                        started = True
                        self.direct.poll()
                        task_status.started()
                except BaseExceptionGroup as group:
                    leaf = first(group, RunnerError)
                    if leaf is None:
                        raise
                    raise leaf from None
        except RunnerError as exc:
            self._set_status(FlowStatus.FAILED, str(exc))
            if not started:
                raise
        finally:
            self._scope = None
            self.instance_nursery = None
            if self.status is not FlowStatus.FAILED:
                self._set_status(FlowStatus.STOPPED)
            self._ended.set()

    async def attach(self) -> None:
        """Start a flow made with ``instances`` (hosts that already run, owned by someone
        else): load its modules into them and mark it running. Raises what
        :meth:`RuntimeInstance.load_all` raises (the flow is then failed)."""
        self._ended = trio.Event()
        self.error = None
        self._set_status(FlowStatus.STARTING)
        try:
            async with trio.open_nursery() as nursery:
                for instance in self.instances.values():
                    nursery.start_soon(instance.load_all)
        except BaseExceptionGroup as group:
            leaf = first(group, RunnerError)
            self._set_status(FlowStatus.FAILED, str(leaf or group))
            self._ended.set()
            if leaf is None:
                raise
            raise leaf from None
        self._set_status(FlowStatus.RUNNING)
        self.direct.poll()

    def detach(self) -> None:
        """End a flow started with :meth:`attach`; its hosts are left to their owner
        (who unloads the modules: :meth:`RuntimeInstance.unload_all`)."""
        self.direct.cut_all()
        if self.status is not FlowStatus.FAILED:
            self._set_status(FlowStatus.STOPPED)
        self._ended.set()

    async def stop(self) -> None:
        if self.status in (FlowStatus.STOPPED, FlowStatus.FAILED) and self._ended.is_set():
            return
        self._set_status(FlowStatus.STOPPING)
        async with trio.open_nursery() as nursery:
            for instance in self.instances.values():
                nursery.start_soon(instance.stop)
        with trio.move_on_after(self.config.stop_timeout):
            await self._ended.wait()
        if self._scope is not None:
            self._scope.cancel()
        await self._ended.wait()

    def instance_failed(
        self,
        instance: RuntimeInstance,
        message: str,
        *,
        module: str | None = None,
        kind: str = "RuntimeFailed",
    ) -> None:
        """A runtime crash-looped, or (``module``) a host gave one module up: the flow
        fails with ``message``, recorded as an error of the module (or of ``*``)."""
        self.error = message
        self._set_status(FlowStatus.FAILED, message)
        self.record_error(
            module or f"{self.flow_id}/*",
            None,
            None,
            {"type": kind, "message": message},
            runtime=instance.manifest.id,
        )
        # The rest of the flow cannot make progress through the dead runtime; stop it all.
        # Queued and unacknowledged messages stay in the instances for the next start.
        for other in self.instances.values():
            if other is not instance and other.status is not InstanceStatus.STOPPED:
                other._stopping = True
        if self._scope is not None:
            self._scope.cancel()


def _shown(body: bytes | None) -> list[Any]:
    """A raw body for a ``wire`` event (a watching IDE): parsed once; a body that does
    not parse is shown empty (its receiving host reports it)."""
    try:
        value = orjson.loads(body or b"[]")
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _local_order(
    host_routes: dict[str, Any],
) -> tuple[set[tuple[str, str]], dict[str, tuple[str, ...]]]:
    """A host's wires inside itself (source, target), and per module the modules they
    lead to from it that do not lead back to it (a cycle is not ordered): while one of
    those has older messages queued in the runner, the module waits
    (:meth:`~.queues.DeliveryQueues.set_local`)."""
    wires = {
        (src, dst)
        for src, table in host_routes.items()
        for spec in table.values()
        for dst, _ in spec["local"]
    }
    if not wires:
        return wires, {}
    after: dict[str, set[str]] = defaultdict(set)
    for src, dst in wires:
        after[src].add(dst)
    reach: dict[str, set[str]] = {}
    for start in after:
        seen: set[str] = set()
        todo = list(after[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(after.get(m, ()))
        reach[start] = seen
    blockers = {
        m: tuple(sorted(d for d in found if d != m and m not in reach.get(d, ())))
        for m, found in reach.items()
    }
    return wires, {m: b for m, b in blockers.items() if b}
