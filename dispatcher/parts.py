"""A placed flow's parts: what each runner holds of it, and the calls that reach them.

A flow placed on several runners runs as one *part* per runner (:func:`flow_part`): the
modules placed there, the wires between them, and the ports whose wires leave it, which
that runner sends to the dispatcher to relay. :class:`FlowParts` carries what users and
runners send to a flow across its runners: calls forwarded to the runner(s) that hold
it (inject, state, start, stop), the live counters merged over the parts (``stats``:
each part's, plus the wires between runners, counted by the relay), debugger calls fanned out to every part and their
answers merged, log lines gathered, a pause spread to every part, and relayed messages
delivered into the parts that hold their target modules.

Owns: the relay routes cache (per flow, kept until the flow's record changes). Reads
the store's records and the dispatcher's live links; never writes the store.

Error handling: a flow the store does not hold is :class:`FlowUnknown`; a part without a
live runner is :class:`FlowPending` (send the call again); what a runner answers with
an error comes back as its :class:`~fifoflow.runner.rpc.RemoteError`; a runner that does
not answer within the call timeout is :class:`~.errors.RunnerTimeout`, naming it (every
call but the relay has that deadline: ``calls.py``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..flows import Wire
from ..runner.errors import ModuleNotFound
from ..runner.rpc import LinkClosed, RemoteError
from .calls import call_runner, forward_call
from .errors import FlowPending, FlowUnknown, RunnerTimeout
from .status import FlowStatus

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..runner.events import EventHub
    from ..runner.rpc import RpcPeer
    from .store import DispatcherStore

__all__ = ["FlowParts", "flow_part", "known_flow", "suppress_remote"]

#: (module, port) -> [(target module, its port, the runner that holds it)]
Routes = dict[tuple[str, str], list[tuple[str, str, str | None]]]


def flow_part(doc: dict[str, Any], modules: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The part of a flow one runner holds, and the ports whose wires leave it.

    The part lists those ports in its ``exits``, so that a port wired both within the
    part and to another runner sends its messages both ways (without the listing, a port
    that still has a wire inside the part would not reach the part's output sink)."""
    wires, relay = [], set()
    for text in doc.get("wires", ()):
        w = Wire.parse(text)
        if w.src in modules and w.dst in modules:
            wires.append(text)
        elif w.src in modules:
            relay.add(f"{w.src}.{w.src_port}")
    exits = [e for e in doc.get("exits") or () if e.rpartition(".")[0] in modules]
    exits += sorted(relay - set(exits))
    part = {**doc, "modules": [m for m in doc["modules"] if m["id"] in modules], "wires": wires}
    if exits:
        part["exits"] = exits
    else:
        part.pop("exits", None)
    return part, sorted(relay)


def known_flow(store: DispatcherStore, flow_id: str) -> dict[str, Any]:
    """The flow's record; :class:`FlowUnknown`, naming the flows there are, if none."""
    record = store.flow(flow_id)
    if record is None:
        known = ", ".join(f["id"] for f in store.flows()) or "none"
        raise FlowUnknown(f"no flow {flow_id!r} (flows: {known})")
    return record


@contextmanager
def suppress_remote() -> Iterator[None]:
    """For calls whose failure changes nothing (the runner or its flow is gone already,
    or the runner did not answer in time: what it holds is settled when it next says
    ready)."""
    try:
        yield
    except (RemoteError, LinkClosed, RunnerTimeout):
        pass


class FlowParts:
    def __init__(
        self,
        store: DispatcherStore,
        links: dict[str, RpcPeer],
        call_timeout: float | None = None,
    ) -> None:
        self.store = store
        #: the dispatcher's live links (runner id -> peer); it attaches and detaches them
        self.links = links
        #: seconds a runner has to answer a call (None: no deadline); not for the relay
        self.call_timeout = call_timeout
        self._route_cache: dict[str, tuple[int, Routes]] = {}
        #: flow id -> (module, port, target module, its port) -> messages relayed on
        #: that wire (a wire between runners; counted per batch, nothing is looked at)
        self.relayed: dict[str, dict[tuple[str, str, str, str], int]] = {}
        #: flows whose events go to ``events`` (``Dispatcher.watch_flow``): the wires
        #: relayed here are published there as ``wire`` events
        self.watched: set[str] = set()
        self.events: EventHub | None = None

    async def forward(self, flow_id: str, method: str, **params: Any) -> Any:
        """Call the runner(s) that hold the flow: a module's runner for inject and
        state, every part's runner for start, stop and describe."""
        record = known_flow(self.store, flow_id)
        module = params.get("moduleId")
        if module is not None:
            known = [m["id"] for m in record["document"]["modules"]]
            if module not in known:
                raise ModuleNotFound(
                    f"flow {flow_id!r} has no module {module!r} (modules: {', '.join(known)})"
                )
        runners = (
            [record["placement"].get(module)]
            if module is not None
            else sorted(set(record["placement"].values()))
        )
        peers = [(r or "", self.links.get(r or "")) for r in runners]
        if not runners or any(p is None for _, p in peers):
            raise FlowPending(
                f"flow {flow_id!r} is {record['status']}"
                + (f" ({record['reason']})" if record["reason"] else "")
                + "; it has no runner right now"
            )
        result = None
        for runner_id, peer in peers:
            assert peer is not None
            try:
                result = await forward_call(
                    peer, runner_id, self.call_timeout, method, flowId=flow_id, **params
                )
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

    async def each_part(self, flow_id: str, method: str, **params: Any) -> dict[str, Any]:
        """``method`` on every part of the flow: runner id -> its answer (FlowPending if
        a part has no runner right now)."""
        record = known_flow(self.store, flow_id)
        answers: dict[str, Any] = {}
        for runner_id in sorted(set(record["placement"].values())):
            peer = self.links.get(runner_id)
            if peer is None:
                raise FlowPending(f"a part of flow {flow_id!r} has no runner right now")
            answers[runner_id] = await forward_call(
                peer, runner_id, self.call_timeout, method, flowId=flow_id, **params
            )
        return answers

    async def debug(self, flow_id: str, method: str, **params: Any) -> Any:
        """Debugger calls across the flow's runners: a breakpoint goes to its module's
        runner; pause, continue and step go to every part (a step's answers are merged,
        keyed by flowModuleId); ``debug`` and ``queues`` are merged per part (keyed by
        runner id, and by module)."""
        if method in ("break", "unbreak"):
            return await self.forward(flow_id, method, **params)
        if method in ("debug", "queues"):
            parts = {}
            for runner_id in sorted(set(known_flow(self.store, flow_id)["placement"].values())):
                peer = self.links.get(runner_id)
                if peer is None:
                    raise FlowPending(f"a part of flow {flow_id!r} has no runner right now")
                parts[runner_id] = await forward_call(
                    peer, runner_id, self.call_timeout, method, flowId=flow_id
                )
            if method == "queues":
                return {m: q for part in parts.values() for m, q in part.items()}
            return parts
        record = known_flow(self.store, flow_id)
        merged: dict[str, Any] = {}
        for runner_id in sorted(set(record["placement"].values())):
            peer = self.links.get(runner_id)
            if peer is None:
                raise FlowPending(f"a part of flow {flow_id!r} has no runner right now")
            answer = await forward_call(peer, runner_id, self.call_timeout, method, flowId=flow_id)
            if method == "step":
                merged.update(answer)
            else:
                merged = answer
        return merged

    async def logs(self, flow_id: str, limit: int) -> list[dict[str, Any]]:
        """The flow's last ``limit`` log lines, from every runner holding a part."""
        record = known_flow(self.store, flow_id)
        entries: list[dict[str, Any]] = []
        for rid in sorted(set(record["placement"].values())):
            peer = self.links.get(rid)
            if peer is not None:
                entries += [
                    {**e, "runner": rid}
                    for e in await forward_call(
                        peer, rid, self.call_timeout, "logs", flowId=flow_id, limit=limit
                    )
                ]
        return sorted(entries, key=lambda e: e["time"])[-limit:]

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
                    await call_runner(peer, other, self.call_timeout, "pause", flowId=flow_id)

    async def relay(
        self,
        flow_id: str,
        module: str,
        port: str,
        msgs: list[Any],
        to: tuple[str, ...] | None = None,
    ) -> None:
        """Messages a part emitted on a wire to another runner: into the target modules
        (``to``: that (module, port) only; a runner sends batches it could not send
        directly that way, ``runner/peers.py``). No deadline: the data path waits for a
        slow target (backpressure on the sender); each relayed batch is its own task on
        the sender's link, so it holds up nothing else."""
        counts = self.relayed.setdefault(flow_id, {})
        for dst, dst_port, target in self._routes(flow_id).get((module, port), ()):
            if to is not None and (dst, dst_port) != tuple(to):
                continue
            peer = self.links.get(target or "")
            if peer is None:
                raise FlowPending(f"module {dst!r} of flow {flow_id!r} has no runner right now")
            await peer.call("inject", flowId=flow_id, moduleId=dst, port=dst_port, msgs=msgs)
            key = (module, port, dst, dst_port)
            counts[key] = counts.get(key, 0) + len(msgs)
            # (a batch for one target, ``to``, was published by its sender already)
            if flow_id in self.watched and self.events is not None and to is None:
                self.events.publish(
                    {
                        "kind": "wire",
                        "flow": flow_id,
                        "module": module,
                        "port": port,
                        "dst": dst,
                        "dstPort": dst_port,
                        "msgs": msgs,
                        "via": "relay",
                    }
                )

    async def stats(self, flow_id: str) -> dict[str, Any]:
        """The flow's counters for a live picture, merged over its parts: each part's
        ``flowStats`` (``FlowRun.stats``), every module marked with the runner (or page)
        holding it (``runner``), and the wires between runners (``via: "relay"``) counted
        here as the relay delivers them. A part whose runner is not linked, or does not
        answer (a page), has its modules listed with ``runner`` only (``reachable``
        False) and adds no counters."""
        record = known_flow(self.store, flow_id)
        placement: dict[str, str] = record["placement"]
        parts: dict[str, dict[str, Any] | None] = {}
        for runner_id in sorted(set(placement.values())):
            peer = self.links.get(runner_id)
            parts[runner_id] = None
            if peer is not None:
                with suppress_remote():
                    parts[runner_id] = await forward_call(
                        peer, runner_id, self.call_timeout, "flowStats", flowId=flow_id
                    )
        answered = [p for p in parts.values() if p is not None]
        modules: dict[str, Any] = {}
        for module in record["document"]["modules"]:
            holder = placement.get(module["id"])
            part = parts.get(holder or "")
            counters = (part or {}).get("modules", {}).get(module["id"])
            modules[module["id"]] = {
                **(counters or {"runtime": module.get("runtime")}),
                "runner": holder,
                "reachable": counters is not None,
            }
        part_wires = {w["wire"]: w for p in answered for w in p.get("wires", ())}
        relayed = self.relayed.get(flow_id, {})
        # what the parts sent each other directly (runner/peers.py), per wire
        direct: dict[str, int] = {}
        for p in answered:
            for wire_id, n in (p.get("peerWires") or {}).items():
                direct[wire_id] = direct.get(wire_id, 0) + n
        wires = []
        for text in record["document"].get("wires", ()):
            w = Wire.parse(text)
            wire_id = f"{w.src}.{w.src_port}->{w.dst}.{w.dst_port}"
            if placement.get(w.src) != placement.get(w.dst):
                count = relayed.get((w.src, w.src_port, w.dst, w.dst_port), 0)
                wires.append(
                    {
                        "wire": wire_id,
                        "via": "relay",
                        "messages": count + direct.get(wire_id, 0),
                        # of which the dispatcher relayed / the runners sent directly
                        "dispatcher": count,
                        "direct": direct.get(wire_id, 0),
                    }
                )
            elif wire_id in part_wires:
                wires.append(part_wires[wire_id])
            else:
                wires.append({"wire": wire_id, "via": "host", "messages": None})
        merged_counts = lambda key: {k: v for p in answered for k, v in p.get(key, {}).items()}  # noqa: E731
        return {
            "id": flow_id,
            "status": str(record["status"]),
            "time": max((p["time"] for p in answered), default=time.time()),
            "pending": sum(p.get("pending", 0) for p in answered),
            "outputs": sum(p.get("outputs", 0) for p in answered),
            "errors": sum(p.get("errors", 0) for p in answered),
            "paused": any(p.get("paused") for p in answered),
            "wires": wires,
            "modules": modules,
            "exits": merged_counts("exits"),
            "injected": merged_counts("injected"),
            "parts": {rid: (p or {}).get("status") for rid, p in parts.items()},
        }

    def _routes(self, flow_id: str) -> Routes:
        """The flow's routes, cached until its record changes (relay runs per batch;
        reading the record each time halved it)."""
        generation = self.store.flow_generation.get(flow_id, 0)
        cached = self._route_cache.get(flow_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        record = known_flow(self.store, flow_id)
        routes: Routes = {}
        placement = record["placement"]
        for text in record["document"].get("wires", ()):
            w = Wire.parse(text)
            target = placement.get(w.dst)
            if target is not None and target == placement.get(w.src):
                continue  # the part's own wire: its runner delivers it (flow_part)
            routes.setdefault((w.src, w.src_port), []).append((w.dst, w.dst_port, target))
        self._route_cache[flow_id] = (generation, routes)
        return routes
