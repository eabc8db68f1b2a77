"""The dispatcher service: runner registration, identity, hardware, liveness.

Runner lifecycle: the statuses in ``status.py`` and the calls below that change them.

- An operator asks for a one-time registration token (``issue_token``); a runner trades
  it for an id and a secret (``register``); the token then never works again, and
  expires after its TTL if unused.
- On each (re)connection the runner proves who it is (``hello``), reports hardware —
  everything the first time, then only what changed (``report_hardware``) — and says
  ``ready``. Heartbeats keep it ``ready``; :meth:`Dispatcher.run` marks a runner ``lost``
  when its last heartbeat is older than ``ttl`` (3 intervals by default).

Placement. ``deploy`` stores the flow and places it on a ``ready`` runner whose link is
up, that has every runtime and label the flow's modules need and room for the CPUs and
memory they reserve (``placement.cpus``/``placement.memory``, against the capacity each
runner reports), the least loaded first; when no one runner can take it all, module by
module, and the parts' cross-runner wires are relayed. Each runner gets its part over
its control link (``deploy``) and may still refuse it (its own check); a refusing runner
is left out and the flow placed again. When none can take it, the flow waits as
``pending`` with the reason (which runtime, label or limit), and is placed when a runner
becomes ready. Runners send the module states of each checkpoint (``snapshot``); when a
runner is lost, its flows are placed again elsewhere from their last snapshot (module
state survives; messages that were queued in the lost runner are lost with it). A
runner that comes back after being declared lost is told to remove the flows that now
run elsewhere, so a flow never runs in two places.

Error handling: every refusal is a :class:`DispatcherError` whose message says what to
do; nothing a runner sends can stop the service.
"""

from __future__ import annotations

import secrets
import time
import uuid
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import trio

from ..flows import Wire, dump_flow, parse_flow
from ..runner.rpc import LinkClosed, RemoteError, RpcPeer
from ..runtimes.registry import discover
from .errors import (
    DispatcherError,
    FlowPending,
    FlowUnknown,
    RegistrationRefused,
    RuntimeUnknown,
    UnknownRunner,
)
from .placement import ModuleAsk, PlacementPlan, RunnerOffer, plan_placement
from .status import FlowStatus, RunnerStatus
from .store import DispatcherStore

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Dispatcher",
    "DispatcherConfig",
    # the errors live in errors.py; these names are imported from here too
    "DispatcherError",
    "FlowPending",
    "FlowUnknown",
    "RegistrationRefused",
    "RuntimeUnknown",
    "UnknownRunner",
    "flow_summary",
]

SECONDS = 1.0


@attrs.frozen
class DispatcherConfig:
    state_dir: Path
    #: how often runners send a heartbeat
    heartbeat: float = 5 * SECONDS
    #: a runner silent this long is lost (default: 3 heartbeats)
    ttl: float | None = None
    #: how long an unused registration token stays valid
    token_ttl: float = 3600 * SECONDS

    @property
    def runner_ttl(self) -> float:
        return self.ttl if self.ttl is not None else 3 * self.heartbeat


class Dispatcher:
    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.store = DispatcherStore.open(config.state_dir)
        #: runner id -> the RPC peer of its live control link
        self.links: dict[str, RpcPeer] = {}
        self._nursery: trio.Nursery | None = None
        self._placing = trio.Lock()
        self._route_cache: dict[str, tuple[int, dict[tuple[str, str], Any]]] = {}
        #: why the backend cannot start runners right now (a failed pull, say): added to
        #: the reason of flows that wait for a runner
        self.backend_problem: str | None = None
        #: the container backend, when the dispatcher runs one (for its API)
        self.backend: Any = None
        #: the web pages' client runners (dispatcher/clients.py), when served
        self.clients: Any = None
        self.started_at = time.time()
        #: set (and replaced) whenever a runner becomes ready: wait on ``runner_ready_event``
        self._ready_event = trio.Event()
        try:
            self.version = metadata.version("fifoflow")
        except metadata.PackageNotFoundError:
            self.version = "0+unknown"

    async def run(
        self, *, task_status: trio.TaskStatus[Dispatcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch heartbeats and place flows until cancelled."""
        # The dispatcher's own downtime is no sign that a runner died: every runner it
        # knew as live gets a full TTL from now to reconnect before it is lost (else
        # its flows would be placed again from snapshots older than what they ran).
        self.store.refresh_live_runners(time.time())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                while True:
                    await trio.sleep(min(self.config.heartbeat, self.config.runner_ttl) / 2)
                    for runner_id in self.check_liveness():
                        self.displace(runner_id)
        finally:
            self._nursery = None
            self.store.close()

    # ------------------------------------------------------------------ operators

    def issue_token(self, ttl: float | None = None) -> dict[str, Any]:
        token = "ffreg_" + secrets.token_urlsafe(24)
        expires = self.store.add_token(token, ttl if ttl is not None else self.config.token_ttl)
        self.store.add_event(None, "token", {"expires": expires})
        return {"token": token, "expires": expires}

    def runners(self) -> list[dict[str, Any]]:
        return self.store.runners()

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.store.events(since)

    def health(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for runner in self.store.runners():
            counts[runner["status"]] = counts.get(runner["status"], 0) + 1
        return {
            "status": "ok",
            "version": self.version,
            "uptime": round(time.time() - self.started_at, 3),
            "runners": counts,
            "heartbeat": self.config.heartbeat,
            "ttl": self.config.runner_ttl,
        }

    # ------------------------------------------------------------------ runners

    def register(self, token: str, name: str) -> dict[str, str]:
        runner_id = "r-" + uuid.uuid4().hex[:12]
        why = self.store.use_token(token, runner_id)
        if why is not None:
            raise RegistrationRefused(
                f"{why}; ask the operator for a new one: fifoflow dispatcher token"
            )
        secret = secrets.token_urlsafe(32)
        self.store.add_runner(runner_id, secret, name)
        self.store.add_event(runner_id, "registered", {"name": name})
        return {"runnerId": runner_id, "secret": secret}

    def hello(self, runner_id: str, secret: str, version: str | None) -> dict[str, Any]:
        if not self.store.check_secret(runner_id, secret):
            raise UnknownRunner(
                f"runner {runner_id!r} is not known here or its secret is wrong; "
                "register it again with a new token (remove its dispatcher.json)"
            )
        previous = self.store.runner(runner_id)
        assert previous is not None
        self.store.update_runner(runner_id, status=RunnerStatus.STARTING, last_seen=time.time())
        self.store.add_event(
            runner_id, "connected", {"version": version, "was": previous["status"]}
        )
        return {"heartbeat": self.config.heartbeat, "ttl": self.config.runner_ttl}

    def report_hardware(
        self, runner_id: str, full: dict[str, Any] | None, changes: dict[str, Any] | None
    ) -> dict[str, Any]:
        runner = self._runner(runner_id)
        hardware = dict(full) if full is not None else {**runner["hardware"], **(changes or {})}
        self.store.update_runner(runner_id, hardware=hardware)
        detail = {"full": full is not None, "changed": sorted((full or changes or {}).keys())}
        if changes:
            detail["changes"] = changes
        self.store.add_event(runner_id, "hardware", detail)
        return hardware

    def ready(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.READY, last_seen=time.time())
        self.store.add_event(runner_id, "ready", {})
        self._ready_event.set()
        self._ready_event = trio.Event()

    def runner_ready_event(self) -> trio.Event:
        """An event set the next time a runner says ready."""
        return self._ready_event

    def heartbeat(self, runner_id: str) -> None:
        if self.store.touch_runner(runner_id, time.time()):
            return
        runner = self._runner(runner_id)
        fields: dict[str, Any] = {"last_seen": time.time()}
        if runner["status"] == RunnerStatus.LOST:
            fields["status"] = RunnerStatus.READY
            self.store.add_event(runner_id, "back", {})
        self.store.update_runner(runner_id, **fields)

    def sign_off(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.SIGNED_OFF, last_seen=time.time())
        self.store.add_event(runner_id, "signed-off", {})

    def check_liveness(self) -> list[str]:
        """Mark runners whose last heartbeat is older than the TTL as lost."""
        now = time.time()
        lost = []
        for runner in self.store.stale_runners(now - self.config.runner_ttl):
            self.store.update_runner(runner["id"], status=RunnerStatus.LOST)
            self.store.add_event(
                runner["id"], "lost", {"silentFor": round(now - (runner["lastSeen"] or now), 3)}
            )
            lost.append(runner["id"])
        return lost

    def runner_gone(self, runner_id: str, why: str) -> None:
        """A backend saw the runner's process or container end: lost now, without
        waiting for its heartbeats to run out; its flows are placed again."""
        runner = self.store.runner(runner_id)
        if runner is None or runner["status"] in (
            RunnerStatus.LOST,
            RunnerStatus.SIGNED_OFF,
            RunnerStatus.DRAINED,
        ):
            return
        self.store.update_runner(runner_id, status=RunnerStatus.LOST)
        self.store.add_event(runner_id, "lost", {"why": why})
        self.displace(runner_id)

    # ------------------------------------------------------------------ links

    def attach(self, runner_id: str, peer: RpcPeer) -> None:
        self.links[runner_id] = peer

    def detach(self, runner_id: str, peer: RpcPeer) -> None:
        if self.links.get(runner_id) is peer:
            del self.links[runner_id]

    async def runner_ready(self, runner_id: str, flows: list[dict[str, Any]]) -> None:
        """A runner said ready: remove flows it holds that run elsewhere now, then
        place what is pending."""
        peer = self.links.get(runner_id)
        for summary in flows:
            fid = summary.get("id")
            record = self.store.flow(fid) if isinstance(fid, str) else None
            if peer is not None and (
                record is None or runner_id not in record["placement"].values()
            ):
                with suppress_remote():
                    await peer.call("remove", flowId=fid)
                self.store.add_event(runner_id, "removed-stale-flow", {"flow": fid})
        await self.place_pending()

    def snapshot(self, runner_id: str, flow_id: str, states: dict[str, Any]) -> None:
        record = self.store.flow(flow_id)
        if record is None:
            return
        mine = {m for m, r in record["placement"].items() if r == runner_id}
        merged = {**record["states"], **{m: st for m, st in states.items() if m in mine}}
        if merged != record["states"]:
            self.store.update_flow(flow_id, states=merged)

    # ------------------------------------------------------------------ flows

    def flows(self) -> list[dict[str, Any]]:
        return [flow_summary(f) for f in self.store.flows()]

    def runtimes(self) -> list[dict[str, Any]]:
        """listRuntimes across runners: each runtime some runner reports, and which
        ready runners have it."""
        found: dict[str, list[str]] = {}
        for r in self.store.runners():
            for runtime in r["hardware"].get("runtimes", ()):
                ids = found.setdefault(runtime, [])
                if r["status"] == RunnerStatus.READY:
                    ids.append(r["id"])
        return [{"id": rt, "runners": ids} for rt, ids in sorted(found.items())]

    def flows_for_runtime(self, runtime_id: str) -> list[str]:
        """listFlowsForRuntime across runners: deployed flows with a module in it."""
        known = {r["id"] for r in self.runtimes()}
        if runtime_id not in known:
            raise RuntimeUnknown(
                f"no runner reports runtime {runtime_id!r} (known: {', '.join(sorted(known)) or 'none'})"
            )
        return [
            f["id"]
            for f in self.store.flows()
            if any(m["runtime"] == runtime_id for m in f["document"]["modules"])
        ]

    def flow(self, flow_id: str) -> dict[str, Any]:
        record = self.store.flow(flow_id)
        if record is None:
            known = ", ".join(f["id"] for f in self.store.flows()) or "none"
            raise FlowUnknown(f"no flow {flow_id!r} (flows: {known})")
        return record

    async def deploy(self, document: dict[str, Any]) -> dict[str, Any]:
        flow = parse_flow(
            document, base_dir=None, runtimes=discover(attached=True).keys(), source_name="flow"
        )
        standalone = orjson.loads(dump_flow(flow, inline=True))
        existing = self.store.flow(flow.id)
        self.store.put_flow(flow.id, standalone)
        self.store.add_event(None, "deployed", {"flow": flow.id})
        if existing is not None and existing["status"] == FlowStatus.PLACED:
            # Update in place: each part is hot-swapped where it runs.
            self.store.update_flow(flow.id, status=FlowStatus.UPDATING)
        await self.place(flow.id)
        return flow_summary(self.flow(flow.id))

    async def remove(self, flow_id: str) -> None:
        record = self.flow(flow_id)
        for runner_id in set(record["placement"].values()):
            peer = self.links.get(runner_id)
            if peer is not None:
                with suppress_remote():
                    await peer.call("remove", flowId=flow_id)
        self.store.remove_flow(flow_id)
        self.store.add_event(record["runner"], "flow-removed", {"flow": flow_id})
        await self.place_pending()  # what waited for room may fit now

    async def forward(self, flow_id: str, method: str, **params: Any) -> Any:
        """Call the runner(s) that hold the flow: a module's runner for inject and
        state, every part's runner for start, stop and describe."""
        record = self.flow(flow_id)
        module = params.get("moduleId")
        runners = (
            [record["placement"].get(module)]
            if module is not None
            else sorted(set(record["placement"].values()))
        )
        peers = [self.links.get(r or "") for r in runners]
        if not runners or any(p is None for p in peers):
            raise FlowPending(
                f"flow {flow_id!r} is {record['status']}"
                + (f" ({record['reason']})" if record["reason"] else "")
                + "; it has no runner right now"
            )
        result = None
        for peer in peers:
            assert peer is not None
            try:
                result = await peer.call(method, flowId=flow_id, **params)
            except RemoteError as exc:
                now = self.store.flow(flow_id)
                if (
                    exc.remote_code == "flow_not_found"
                    and now is not None
                    and (
                        now["placement"] != record["placement"]
                        or now["status"] != FlowStatus.PLACED
                    )
                ):
                    # The flow moved while the call was on its way: not gone, elsewhere.
                    raise FlowPending(
                        f"flow {flow_id!r} is moving between runners; send the call again"
                    ) from None
                raise
        return result

    async def drain(self, runner_id: str) -> list[str]:
        """Move every flow off a runner, with its state and the messages that waited in
        it (nothing lost), and stop placing flows there. Returns the flows moved."""
        self._runner(runner_id)
        self.store.update_runner(runner_id, status=RunnerStatus.DRAINING)
        self.store.add_event(runner_id, "draining", {})
        peer = self.links.get(runner_id)
        moved = []
        for record in self.store.flows():
            if runner_id not in record["placement"].values():
                continue
            # Calls for its modules get "pending, send again" (409) from here on, not
            # the draining runner's "no such flow" once it has let go.
            placement = {m: r for m, r in record["placement"].items() if r != runner_id}
            # "moving", not "pending": nobody else places it before its state and
            # waiting messages are handed over (it would start from an older snapshot).
            self.store.update_flow(
                record["id"],
                placement=placement,
                runner=None,
                status=FlowStatus.MOVING,
                reason=f"runner {runner_id} is draining",
            )
            states, queued = dict(record["states"]), dict(record["queued"])
            if peer is not None:
                handed = await peer.call("release", flowId=record["id"])
                states.update(handed["states"])
                queued.update(handed["queued"])
            self.store.update_flow(
                record["id"], states=states, queued=queued, status=FlowStatus.PENDING
            )
            await self.place(record["id"])
            moved.append(record["id"])
        self.store.update_runner(runner_id, status=RunnerStatus.DRAINED)
        self.store.add_event(runner_id, "drained", {"flows": moved})
        return moved

    async def paused(self, runner_id: str, flow_id: str, info: dict[str, Any]) -> None:
        """A part of the flow hit a breakpoint: pause its parts on the other runners."""
        record = self.store.flow(flow_id)
        if record is None:
            return
        self.store.add_event(runner_id, "paused", {"flow": flow_id, **info})
        for other in sorted(set(record["placement"].values()) - {runner_id}):
            peer = self.links.get(other)
            if peer is not None:
                with suppress_remote():
                    await peer.call("pause", flowId=flow_id)

    async def debug(self, flow_id: str, method: str, **params: Any) -> Any:
        """Debugger calls across the flow's runners: a breakpoint goes to its module's
        runner; pause, continue and step go to every part (a step's answers are merged,
        keyed by flowModuleId); ``debug`` and ``queues`` are merged per part (keyed by
        runner id, and by module)."""
        if method in ("break", "unbreak"):
            return await self.forward(flow_id, method, **params)
        if method in ("debug", "queues"):
            parts = {}
            for runner_id in sorted(set(self.flow(flow_id)["placement"].values())):
                peer = self.links.get(runner_id)
                if peer is None:
                    raise FlowPending(f"a part of flow {flow_id!r} has no runner right now")
                parts[runner_id] = await peer.call(method, flowId=flow_id)
            if method == "queues":
                return {m: q for part in parts.values() for m, q in part.items()}
            return parts
        record = self.flow(flow_id)
        merged: dict[str, Any] = {}
        for runner_id in sorted(set(record["placement"].values())):
            peer = self.links.get(runner_id)
            if peer is None:
                raise FlowPending(f"a part of flow {flow_id!r} has no runner right now")
            answer = await peer.call(method, flowId=flow_id)
            if method == "step":
                merged.update(answer)
            else:
                merged = answer
        return merged

    async def logs(
        self, flow_id: str | None = None, runner_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Log lines of a flow (from every runner holding a part), or of a runner."""
        if runner_id is not None:
            self._runner(runner_id)
            peer = self.links.get(runner_id)
            if peer is None:
                raise FlowPending(f"runner {runner_id!r} is not connected")
            return await peer.call("logs", limit=limit)
        assert flow_id is not None
        record = self.flow(flow_id)
        entries: list[dict[str, Any]] = []
        for rid in sorted(set(record["placement"].values())):
            peer = self.links.get(rid)
            if peer is not None:
                entries += [
                    {**e, "runner": rid}
                    for e in await peer.call("logs", flowId=flow_id, limit=limit)
                ]
        return sorted(entries, key=lambda e: e["time"])[-limit:]

    def displace(self, runner_id: str) -> None:
        """The runner is gone: its modules go back to pending and are placed again."""
        for record in self.store.flows():
            if runner_id in record["placement"].values():
                placement = {m: r for m, r in record["placement"].items() if r != runner_id}
                self.store.update_flow(
                    record["id"], placement=placement, runner=None, status=FlowStatus.PENDING,
                    reason=f"runner {runner_id} was lost",
                )  # fmt: skip
                self.store.add_event(runner_id, "displaced", {"flow": record["id"]})
        if self._nursery is not None:
            self._nursery.start_soon(self.place_pending)

    async def place_pending(self) -> None:
        for record in self.store.flows():
            if record["status"] == FlowStatus.PENDING:
                await self.place(record["id"])

    def _plan(self, record: dict[str, Any], refused: dict[str, str]) -> PlacementPlan:
        """Placement's decision for the flow, on what the store and the links say now:
        each runner with what other flows' modules reserve on it and its load (modules
        placed on it, of every flow)."""
        reserved: dict[str, list[float]] = {}
        load: dict[str, int] = {}
        for f in self.store.flows():
            asks = {m["id"]: ModuleAsk.from_module(m) for m in f["document"]["modules"]}
            for module_id, runner_id in f["placement"].items():
                load[runner_id] = load.get(runner_id, 0) + 1
                ask = asks.get(module_id)
                if f["id"] != record["id"] and ask is not None:
                    held = reserved.setdefault(runner_id, [0.0, 0.0])
                    held[0] += ask.cpus
                    held[1] += ask.memory
        offers = []
        for r in self.store.runners():
            cpus, memory = reserved.get(r["id"], [0.0, 0.0])
            offers.append(
                RunnerOffer.from_runner(
                    r,
                    linked=r["id"] in self.links,
                    load=load.get(r["id"], 0),
                    reserved_cpus=cpus,
                    reserved_memory=memory,
                )
            )
        return plan_placement(
            [ModuleAsk.from_module(m) for m in record["document"]["modules"]],
            offers,
            record["placement"],
            refused=refused,
            backend_problem=self.backend_problem,
        )

    async def place(self, flow_id: str) -> None:
        """Give every module of the flow a live runner (all on one runner when one can
        take them all, else module by module), then deploy each runner's part. A runner
        that refuses its part is left out and the flow is placed again without it."""
        async with self._placing:
            refused: dict[str, str] = {}
            while True:
                refusal = await self._place_once(flow_id, refused)
                if refusal is None:
                    return
                runner_id, why = refusal
                refused[runner_id] = why
                self.store.add_event(runner_id, "refused", {"flow": flow_id, "reason": why})

    async def _place_once(self, flow_id: str, refused: dict[str, str]) -> tuple[str, str] | None:
        record = self.flow(flow_id)
        if record["status"] == FlowStatus.MOVING:
            return None  # its move places it once the state is handed over
        plan = self._plan(record, refused)
        if record["status"] == FlowStatus.PLACED and plan.unchanged and not refused:
            return None  # placed already, every part on a live runner: nothing to do
        placement = plan.placement
        if plan.reason is not None:
            await self._release_dropped(record, placement)
            self.store.update_flow(
                flow_id, placement=placement, status=FlowStatus.PENDING, reason=plan.reason
            )
            self.store.add_event(None, "pending", {"flow": flow_id, "reason": plan.reason})
            return None
        try:
            await self._deploy_parts(record, placement)
        except Refusal as exc:
            return exc.runner_id, exc.why
        except (RemoteError, LinkClosed) as exc:
            reason = f"deploying failed: {exc}"
            self.store.update_flow(flow_id, status=FlowStatus.PENDING, reason=reason)
            self.store.add_event(None, "pending", {"flow": flow_id, "reason": reason})
            return None
        runners = set(placement.values())
        self.store.update_flow(
            flow_id,
            placement=placement,
            runner=next(iter(runners)) if len(runners) == 1 else None,
            status=FlowStatus.PLACED,
            reason=None,
            queued={},
        )
        self.store.add_event(None, "placed", {"flow": flow_id, "placement": placement})
        return None

    async def _deploy_parts(self, record: dict[str, Any], placement: dict[str, str]) -> None:
        """Deploy each runner's part. Runners that no longer hold any of the flow hand
        it over first (state and waiting messages, kept in the record), so a flow moved
        off a runner that refused its update loses nothing."""
        doc = record["document"]
        states, queued = await self._release_dropped(record, placement)
        for runner_id in sorted(set(placement.values())):
            mine = {m for m, r in placement.items() if r == runner_id}
            part, relay = flow_part(doc, mine)
            try:
                await self.links[runner_id].call(
                    "deploy",
                    flow=part,
                    states={m: st for m, st in states.items() if m in mine},
                    queued={m: q for m, q in queued.items() if m in mine},
                    relay=relay,
                    start=True,
                )
            except RemoteError as exc:
                if exc.remote_code == "refused":
                    raise Refusal(runner_id, str(exc)) from None
                raise

    async def _release_dropped(
        self, record: dict[str, Any], placement: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Runners that held the flow and hold none of it in ``placement`` (they refused
        an update) hand it over: state and waiting messages go into the record."""
        states, queued = dict(record["states"]), dict(record["queued"])
        for runner_id in sorted(set(record["placement"].values()) - set(placement.values())):
            peer = self.links.get(runner_id)
            if peer is None:
                continue
            with suppress_remote():
                handed = await peer.call("release", flowId=record["id"])
                states.update(handed["states"])
                queued.update(handed["queued"])
                self.store.update_flow(record["id"], states=states, queued=queued)
        return states, queued

    async def relay(
        self, runner_id: str, flow_id: str, module: str, port: str, msgs: list[Any]
    ) -> None:
        """Messages a part emitted on a wire to another runner: into the target modules."""
        for dst, dst_port, target in self._routes(flow_id).get((module, port), ()):
            peer = self.links.get(target or "")
            if peer is None:
                raise FlowPending(f"module {dst!r} of flow {flow_id!r} has no runner right now")
            await peer.call("inject", flowId=flow_id, moduleId=dst, port=dst_port, msgs=msgs)

    def _routes(self, flow_id: str) -> dict[tuple[str, str], list[tuple[str, str, str | None]]]:
        """(module, port) -> [(target module, port, its runner)], cached until the flow's
        record changes (relay runs per batch; reading the record each time halved it)."""
        generation = self.store.flow_generation.get(flow_id, 0)
        cached = self._route_cache.get(flow_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        record = self.flow(flow_id)
        routes: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
        for text in record["document"].get("wires", ()):
            w = Wire.parse(text)
            routes.setdefault((w.src, w.src_port), []).append(
                (w.dst, w.dst_port, record["placement"].get(w.dst))
            )
        self._route_cache[flow_id] = (generation, routes)
        return routes

    def _runner(self, runner_id: str) -> dict[str, Any]:
        runner = self.store.runner(runner_id)
        if runner is None:
            raise UnknownRunner(f"no runner {runner_id!r}")
        return runner


class Refusal(Exception):
    """A runner refused the part it was given (its own check of runtimes and capacity)."""

    def __init__(self, runner_id: str, why: str) -> None:
        super().__init__(f"runner {runner_id} refused: {why}")
        self.runner_id = runner_id
        self.why = why


def flow_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "runner": record["runner"],
        "status": record["status"],
        "reason": record["reason"],
        "modules": [m["id"] for m in record["document"]["modules"]],
        "placement": record["placement"],
        "snapshot": bool(record["states"]),
        "updated": record["updated"],
    }


@contextmanager
def suppress_remote() -> Iterator[None]:
    try:
        yield
    except (RemoteError, LinkClosed):
        pass


def flow_part(doc: dict[str, Any], modules: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The part of a flow one runner holds, and the ports whose wires leave it."""
    wires, relay = [], set()
    for text in doc.get("wires", ()):
        w = Wire.parse(text)
        if w.src in modules and w.dst in modules:
            wires.append(text)
        elif w.src in modules:
            relay.add(f"{w.src}.{w.src_port}")
    part = {**doc, "modules": [m for m in doc["modules"] if m["id"] in modules], "wires": wires}
    return part, sorted(relay)
