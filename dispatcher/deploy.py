"""Deployed flows: their records, where their parts run, and getting them there.

``deploy`` stores the flow and places it: :func:`~.placement.plan_placement` decides
where each module goes, on inputs read here from the store and the live links; each
runner then gets its part over its control link (``deploy``, with the modules' last
states and waiting messages) and may still refuse it (its own check of runtimes and
capacity): a refusing runner is left out and the flow placed again without it. When no
runner can take a module, the flow waits as ``pending`` with the reason, and is placed
again when a runner becomes ready or room frees up (``place_pending``).

Runners send the module states of each checkpoint (``snapshot``). A lost runner's flows
are placed again elsewhere from their last snapshot (``displace``; messages queued in
the lost runner are lost with it); a draining runner's flows move with their state and
waiting messages (``move_off``; nothing lost). A runner that comes back is told to
remove the flows that run elsewhere now (``runner_ready``), so a flow never runs in
two places.

Every call to a runner has a deadline (the dispatcher's ``call_timeout``;
``calls.py``): a runner that does not answer ``deploy`` in time is taken as refusing
(``did not answer within N s``), so the flow goes to another runner or waits with that
reason. Placements of different flows run side by side, so one slow runner holds up
only the flows it was given: a flow is placed by one task at a time (a lock per flow),
and the placement a task is deploying counts as held (a *claim*) when others plan, so
two flows are never promised the same room. A runner that answers ``deploy`` after its
deadline may hold the flow anyway; it is told to remove it when it next says ready.

Owns: the flows' records in the store, the per-flow placing locks and the claims.
Reads the dispatcher's live links (it attaches and detaches them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import trio

from ..flows import dump_flow, parse_flow
from ..runner.rpc import LinkClosed, RemoteError
from ..runtimes.registry import discover
from .calls import call_runner
from .errors import FlowUnknown, RunnerTimeout
from .parts import flow_part, known_flow, suppress_remote
from .placement import ModuleAsk, RunnerOffer, plan_placement
from .status import FlowStatus

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..runner.rpc import RpcPeer
    from .peers import PeerDirectory
    from .placement import PlacementPlan
    from .store import DispatcherStore

__all__ = ["Deployments", "flow_summary"]


def flow_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a flow's record: where it runs, or why it waits."""
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


class Refusal(Exception):
    """A runner refused the part it was given (its own check of runtimes and capacity)."""

    def __init__(self, runner_id: str, why: str) -> None:
        super().__init__(f"runner {runner_id} refused: {why}")
        self.runner_id = runner_id
        self.why = why


class Deployments:
    def __init__(
        self,
        store: DispatcherStore,
        links: dict[str, RpcPeer],
        backend_problem: Callable[[], str | None],
        call_timeout: float | None = None,
    ) -> None:
        self.store = store
        #: the dispatcher's live links (runner id -> peer)
        self.links = links
        #: why the backend cannot start runners right now, if it cannot
        self.backend_problem = backend_problem
        #: seconds a runner has to answer a call (None: no deadline)
        self.call_timeout = call_timeout
        #: flow id -> the lock its placements take (one placement of a flow at a time)
        self._placing: dict[str, trio.Lock] = {}
        #: flow id -> the placement being deployed now (held, for other flows' plans)
        self._claims: dict[str, dict[str, str]] = {}
        #: flow id -> {module id: runner id} of parts a draining runner is handing over
        #: right now: the store's placement has let go of them already, but the runner
        #: still speaks for them (relays and snapshots while it stops the part)
        self.handing_over: dict[str, dict[str, str]] = {}
        #: runner-to-runner relay (dispatcher/peers.py); None: every wire through here
        self.peers: PeerDirectory | None = None
        #: watched flows (``Dispatcher.watch_flow``): their parts are deployed watched,
        #: wherever they are placed (a move, a lost runner, an update)
        self.watched: set[str] = set()

    def held(self, runner_id: str, flow_id: str) -> set[str] | None:
        """The modules of the flow the runner holds: placed on it, being deployed to it,
        or being handed over by it; None when the dispatcher knows no such flow."""
        record = self.store.flow(flow_id)
        if record is None:
            return None
        moving = self.handing_over.get(flow_id, {})
        # a part being deployed right now speaks (a snapshot, a relay) before the store
        # says it is placed
        deploying = self._claims.get(flow_id, {})
        return {
            m for placed in (record["placement"], moving, deploying) for m, r in placed.items()
            if r == runner_id
        }  # fmt: skip

    async def _call(self, runner_id: str, method: str, /, **params: Any) -> Any:
        """Call a runner, with the deadline; :class:`LinkClosed` if it is not linked."""
        peer = self.links.get(runner_id)
        if peer is None:
            raise LinkClosed(f"runner {runner_id} is not connected")
        return await call_runner(peer, runner_id, self.call_timeout, method, **params)

    def summaries(self) -> list[dict[str, Any]]:
        return [flow_summary(f) for f in self.store.flows()]

    async def deploy(
        self, document: dict[str, Any], states: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store and place (or hot-swap) a flow. ``states`` seeds the modules this
        document adds (a renamed module keeps its state); the others keep theirs."""
        flow = parse_flow(
            document, base_dir=None, runtimes=discover(attached=True).keys(), source_name="flow"
        )
        standalone = orjson.loads(dump_flow(flow, inline=True))
        existing = self.store.flow(flow.id)
        self.store.put_flow(flow.id, standalone)
        if states:
            before = {m["id"] for m in existing["document"]["modules"]} if existing else set()
            added = {m.id for m in flow.modules} - before
            seeds = {m: st for m, st in states.items() if m in added}
            if seeds:
                record = known_flow(self.store, flow.id)
                self.store.update_flow(flow.id, states={**record["states"], **seeds})
        self.store.add_event(None, "deployed", {"flow": flow.id})
        if existing is not None and existing["status"] == FlowStatus.PLACED:
            # Update in place: each part is hot-swapped where it runs.
            self.store.update_flow(flow.id, status=FlowStatus.UPDATING)
        await self.place(flow.id)
        return flow_summary(known_flow(self.store, flow.id))

    async def remove(self, flow_id: str) -> None:
        record = known_flow(self.store, flow_id)
        for runner_id in set(record["placement"].values()):
            if runner_id in self.links:
                with suppress_remote():
                    await self._call(runner_id, "remove", flowId=flow_id)
        self.store.remove_flow(flow_id)
        lock = self._placing.get(flow_id)
        if lock is not None and not lock.locked():
            del self._placing[flow_id]
        self.store.add_event(record["runner"], "flow-removed", {"flow": flow_id})
        await self.place_pending()  # what waited for room may fit now

    def snapshot(self, runner_id: str, flow_id: str, states: dict[str, Any]) -> None:
        """Module states of a checkpoint of the runner's part: kept for its modules."""
        record = self.store.flow(flow_id)
        if record is None:
            return
        mine = {m for m, r in record["placement"].items() if r == runner_id}
        merged = {**record["states"], **{m: st for m, st in states.items() if m in mine}}
        if merged != record["states"]:
            self.store.update_flow(flow_id, states=merged)

    async def runner_ready(self, runner_id: str, flows: list[dict[str, Any]]) -> None:
        """A runner said ready, holding ``flows``: remove those that run elsewhere now,
        then place what is pending."""
        for summary in flows:
            fid = summary.get("id")
            record = self.store.flow(fid) if isinstance(fid, str) else None
            if runner_id in self.links and (
                record is None or runner_id not in record["placement"].values()
            ):
                if record is not None and summary.get("durability") == "journal":
                    await self._take_back(runner_id, record)
                    continue
                with suppress_remote():
                    await self._call(runner_id, "remove", flowId=fid)
                self.store.add_event(runner_id, "removed-stale-flow", {"flow": fid})
        await self.place_pending()

    async def _take_back(self, runner_id: str, record: dict[str, Any]) -> None:
        """A runner came back on its state dir holding a journaled flow that was placed
        again meanwhile (runner/JOURNAL.md): it hands the flow over (stopped
        gracefully: the messages of its journal it did not handle, its states) instead of
        dropping it. A flow still pending takes both; a flow placed elsewhere gets the
        messages, in order (its states moved on there)."""
        flow_id = record["id"]
        with suppress_remote():
            handed = await self._call(runner_id, "release", flowId=flow_id)
            record = self.store.flow(flow_id) or record
            queued: dict[str, list[Any]] = handed["queued"]
            count = sum(len(entries) for entries in queued.values())
            self.store.add_event(
                runner_id,
                "journal-handed-over",
                {"flow": flow_id, "messages": count, "states": sorted(handed["states"])},
            )
            if not record["placement"]:
                states = {**record["states"], **handed["states"]}
                merged = {
                    m: [*queued.get(m, []), *record["queued"].get(m, [])]
                    for m in {*queued, *record["queued"]}
                }
                self.store.update_flow(flow_id, states=states, queued=merged)
                return
            for module_id, entries in queued.items():
                holder = record["placement"].get(module_id)
                if holder is None:
                    continue
                for port, msgs in _runs(entries):
                    await self._call(
                        holder, "inject", flowId=flow_id, moduleId=module_id, port=port, msgs=msgs
                    )

    def displace(self, runner_id: str) -> None:
        """The runner is gone: its modules go back to pending (``place_pending`` places
        them again)."""
        for record in self.store.flows():
            if runner_id in record["placement"].values():
                placement = {m: r for m, r in record["placement"].items() if r != runner_id}
                self.store.update_flow(
                    record["id"], placement=placement, runner=None, status=FlowStatus.PENDING,
                    reason=f"runner {runner_id} was lost",
                )  # fmt: skip
                self.store.add_event(runner_id, "displaced", {"flow": record["id"]})

    async def move_off(self, runner_id: str) -> list[str]:
        """Move every flow off a (draining) runner, with its state and the messages that
        waited in it. Returns the flows moved."""
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
            if runner_id in self.links:
                leaving = {m: r for m, r in record["placement"].items() if r == runner_id}
                self.handing_over[record["id"]] = leaving
                try:
                    handed = await self._call(runner_id, "release", flowId=record["id"])
                except RunnerTimeout as exc:
                    # Placed again from its last snapshot (what waited there stays there),
                    # rather than "moving" for ever.
                    self.store.add_event(
                        runner_id, "release-unanswered", {"flow": record["id"], "why": str(exc)}
                    )
                else:
                    states.update(handed["states"])
                    queued.update(handed["queued"])
                finally:
                    del self.handing_over[record["id"]]
            self.store.update_flow(
                record["id"], states=states, queued=queued, status=FlowStatus.PENDING
            )
            await self.place(record["id"])
            moved.append(record["id"])
        return moved

    async def place_pending(self) -> None:
        """Place every pending flow, side by side (one slow runner delays only the flows
        it was given)."""
        async with trio.open_nursery() as nursery:
            for record in self.store.flows():
                if record["status"] == FlowStatus.PENDING:
                    nursery.start_soon(self._place_if_known, record["id"])

    async def _place_if_known(self, flow_id: str) -> None:
        try:
            await self.place(flow_id)
        except FlowUnknown:
            pass  # removed while it waited for its turn: nothing to place

    async def place(self, flow_id: str) -> None:
        """Give every module of the flow a live runner (all on one runner when one can
        take them all, else module by module), then deploy each runner's part. A runner
        that refuses its part is left out and the flow is placed again without it."""
        async with self._placing.setdefault(flow_id, trio.Lock()):
            refused: dict[str, str] = {}
            while True:
                refusal = await self._place_once(flow_id, refused)
                if refusal is None:
                    return
                runner_id, why = refusal
                refused[runner_id] = why
                self.store.add_event(runner_id, "refused", {"flow": flow_id, "reason": why})

    async def _place_once(self, flow_id: str, refused: dict[str, str]) -> tuple[str, str] | None:
        record = known_flow(self.store, flow_id)
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
        # Planned without an await since the store was read: claimed before the first.
        self._claims[flow_id] = placement
        try:
            await self._deploy_parts(record, placement)
        except Refusal as exc:
            return exc.runner_id, exc.why
        except (RemoteError, LinkClosed) as exc:
            reason = f"deploying failed: {exc}"
            self.store.update_flow(flow_id, status=FlowStatus.PENDING, reason=reason)
            self.store.add_event(None, "pending", {"flow": flow_id, "reason": reason})
            return None
        finally:
            del self._claims[flow_id]
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

    def _plan(self, record: dict[str, Any], refused: dict[str, str]) -> PlacementPlan:
        """Placement's decision for the flow, on what the store and the links say now:
        each runner with what other flows' modules reserve on it and its load (modules
        placed on it, of every flow). Other flows' placements being deployed now (their
        claims) count as placed, with the runners their modules leave."""
        reserved: dict[str, list[float]] = {}
        load: dict[str, int] = {}
        for f in self.store.flows():
            asks = {m["id"]: ModuleAsk.from_module(m) for m in f["document"]["modules"]}
            claim = self._claims.get(f["id"], {}) if f["id"] != record["id"] else {}
            for module_id, runner_id in {*f["placement"].items(), *claim.items()}:
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
            backend_problem=self.backend_problem(),
        )

    async def _deploy_parts(self, record: dict[str, Any], placement: dict[str, str]) -> None:
        """Deploy each runner's part. Runners that no longer hold any of the flow hand
        it over first (state and waiting messages, kept in the record), so a flow moved
        off a runner that refused its update loses nothing."""
        doc = record["document"]
        states, queued = await self._release_dropped(record, placement)
        for runner_id in sorted(set(placement.values())):
            mine = {m for m, r in placement.items() if r == runner_id}
            part, relay = flow_part(doc, mine)
            # where each leaving wire's target is, to send to it directly (runner/peers.py)
            routes = (
                self.peers.routes(record["id"], doc, placement, runner_id)
                if self.peers is not None and relay
                else None
            )
            try:
                await self._call(
                    runner_id,
                    "deploy",
                    flow=part,
                    states={m: st for m, st in states.items() if m in mine},
                    queued={m: q for m, q in queued.items() if m in mine},
                    relay=relay,
                    **({"routes": routes} if routes is not None else {}),
                    **({"watch": True} if record["id"] in self.watched else {}),
                    start=True,
                )
            except RemoteError as exc:
                if exc.remote_code == "refused":
                    raise Refusal(runner_id, str(exc)) from None
                raise
            except RunnerTimeout:
                raise Refusal(runner_id, f"did not answer within {self.call_timeout:g} s") from None

    async def _release_dropped(
        self, record: dict[str, Any], placement: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Runners that held the flow and hold none of it in ``placement`` (they refused
        an update) hand it over: state and waiting messages go into the record."""
        states, queued = dict(record["states"]), dict(record["queued"])
        for runner_id in sorted(set(record["placement"].values()) - set(placement.values())):
            if runner_id not in self.links:
                continue
            with suppress_remote():
                handed = await self._call(runner_id, "release", flowId=record["id"])
                states.update(handed["states"])
                queued.update(handed["queued"])
                self.store.update_flow(record["id"], states=states, queued=queued)
        return states, queued


def _runs(entries: list[Any]) -> list[tuple[str, list[Any]]]:
    """``[[port, msg], ...]`` as consecutive runs of one port: ``[(port, [msg, ...])]``."""
    found: list[tuple[str, list[Any]]] = []
    for port, msg in entries:
        if found and found[-1][0] == port:
            found[-1][1].append(msg)
        else:
            found.append((port, [msg]))
    return found
