"""Placement decided: which runner takes each module of a flow, or why none can.

Pure: plain values in (:class:`ModuleAsk` per module, :class:`RunnerOffer` per runner,
the flow's current placement, the runners that refused it), a :class:`PlacementPlan`
out; no store, no links, no trio. The dispatcher gathers the inputs from its SQLite
store and its live links, and does what the plan says (``deploy.py``).

The rules:

- A runner *can take* some modules when it is ``ready``, its control link is up, it has
  not refused the flow, it has every runtime they need and every label they ask for
  (equal values), and room for what they reserve: its capacity minus what the modules
  already placed on it reserve, CPUs within :data:`CPU_TOLERANCE`, memory in bytes. A
  runner that reports no capacity (or no CPUs, or no memory) is not limited by it.
- A module keeps its runner while that runner's link is up and it did not refuse the
  flow, whatever its status (a draining runner keeps what it holds until it is moved).
- When no module of the flow has a runner, the whole flow goes to one runner if one
  can take it all; otherwise each module without a runner goes to one that can take it
  beside what this flow already put there, in the flow's module order.
- Among the runners that can, the least loaded (fewest modules placed on it, over all
  flows) first, then the earliest registered.
- A module no runner can take gets a reason: the runtime and labels no ready runner
  has, or what it needs against the most room a runner with them has left.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs

from ..flows.resources import format_size, parse_size
from .status import RunnerStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["CPU_TOLERANCE", "ModuleAsk", "PlacementPlan", "RunnerOffer", "plan_placement"]

#: CPUs are fractions: modules whose shares add up to a runner's capacity fit it even
#: when the float sum comes out a hair above
CPU_TOLERANCE = 1e-9


@attrs.frozen
class ModuleAsk:
    """What one module asks of the runner it goes to."""

    id: str
    runtime: str
    #: labels the runner must report, with these values
    labels: dict[str, Any] = attrs.field(factory=dict)
    #: CPUs and bytes of memory it reserves there
    cpus: float = 0.0
    memory: int = 0

    @classmethod
    def from_module(cls, module: Mapping[str, Any]) -> ModuleAsk:
        """From a module of a stored (validated) flow document."""
        placement = module.get("placement") or {}
        return cls(
            id=module["id"],
            runtime=module["runtime"],
            labels=placement.get("labels") or {},
            cpus=float(placement.get("cpus", 0)),
            memory=parse_size(placement.get("memory", 0)),
        )


@attrs.frozen
class RunnerOffer:
    """One runner as placement sees it: what it has, and what others hold of it."""

    id: str
    #: a :class:`RunnerStatus` value
    status: str
    #: its control link to the dispatcher is up
    linked: bool
    #: when it registered (a tie goes to the earliest)
    registered: float
    runtimes: frozenset[str]
    labels: dict[str, Any] = attrs.field(factory=dict)
    #: the capacity it reports (inf: none reported)
    cpus: float = math.inf
    memory: float = math.inf
    #: what the modules of other flows placed on it reserve
    reserved_cpus: float = 0.0
    reserved_memory: float = 0.0
    #: modules placed on it, of every flow (the one being placed included, as stored)
    load: int = 0

    @classmethod
    def from_runner(
        cls,
        runner: Mapping[str, Any],
        *,
        linked: bool,
        load: int = 0,
        reserved_cpus: float = 0.0,
        reserved_memory: float = 0.0,
    ) -> RunnerOffer:
        """From a runner record of the store (its hardware as the runner reported it)."""
        hardware = runner["hardware"]
        capacity = hardware.get("capacity") or {}
        return cls(
            id=runner["id"],
            status=runner["status"],
            linked=linked,
            registered=runner["registered"],
            runtimes=frozenset(hardware.get("runtimes", ())),
            labels=hardware.get("labels") or {},
            cpus=float(capacity.get("cpus", math.inf)),
            memory=float(capacity.get("memory", math.inf)),
            reserved_cpus=reserved_cpus,
            reserved_memory=reserved_memory,
            load=load,
        )


@attrs.frozen
class PlacementPlan:
    """What placement decided for one flow."""

    #: module id -> runner id, for every module that has a runner (kept or new)
    placement: dict[str, str]
    #: module id -> why no runner can take it, in the flow's module order
    unplaced: dict[str, str]
    #: every module kept the runner it had: nothing was placed
    unchanged: bool
    #: why the flow waits (each unplaced module, each refusal, the backend's problem);
    #: None when every module has a runner
    reason: str | None


def plan_placement(
    modules: Sequence[ModuleAsk],
    runners: Iterable[RunnerOffer],
    current: Mapping[str, str],
    *,
    refused: Mapping[str, str] | None = None,
    backend_problem: str | None = None,
) -> PlacementPlan:
    """Where the flow's ``modules`` go, given every known runner and the flow's
    ``current`` placement (module id -> runner id, as stored). ``refused``: runner id ->
    what that runner said when it refused the flow (it is left out); ``backend_problem``:
    why no new runner can be started, added to the reason when a module waits."""
    refused = refused or {}
    offers = sorted(runners, key=lambda r: r.registered)
    live = {r.id for r in offers if r.linked and r.id not in refused}
    placement = {m: r for m, r in current.items() if r in live}
    unplaced = [m for m in modules if m.id not in placement]
    unchanged = not unplaced
    if unplaced and not placement:
        whole = _candidates(modules, offers, _free(offers, modules, {}), refused)
        if whole:
            placement = {m.id: whole[0].id for m in modules}
            unplaced = []
    why_not: dict[str, str] = {}
    for module in unplaced:
        free = _free(offers, modules, placement)
        found = _candidates([module], offers, free, refused)
        if found:
            placement[module.id] = found[0].id
        else:
            why_not[module.id] = _why_none([module], offers, free, refused)
    reason = None
    if why_not:
        reasons = [f"module {m}: {why}" for m, why in why_not.items()]
        reasons += [f"runner {r} refused: {why}" for r, why in refused.items()]
        if backend_problem:
            reasons.append(backend_problem)
        reason = "; ".join(reasons)
    return PlacementPlan(placement=placement, unplaced=why_not, unchanged=unchanged, reason=reason)


def _free(
    offers: Sequence[RunnerOffer], modules: Sequence[ModuleAsk], placement: Mapping[str, str]
) -> dict[str, tuple[float, float]]:
    """CPUs and memory each runner has left: its capacity minus what other flows' modules
    and this flow's modules in ``placement`` reserve there."""
    asks = {m.id: m for m in modules}
    held = {r.id: [r.reserved_cpus, r.reserved_memory] for r in offers}
    for module_id, runner_id in placement.items():
        ask = asks.get(module_id)
        if ask is not None and runner_id in held:
            held[runner_id][0] += ask.cpus
            held[runner_id][1] += ask.memory
    return {r.id: (r.cpus - held[r.id][0], r.memory - held[r.id][1]) for r in offers}


def _suitable(
    modules: Sequence[ModuleAsk], offers: Sequence[RunnerOffer], refused: Mapping[str, str]
) -> list[RunnerOffer]:
    """The runners that may take ``modules``, room aside: ready, linked, not refusing,
    with every runtime and label they need."""
    needed = {m.runtime for m in modules}
    return [
        r
        for r in offers
        if r.status == RunnerStatus.READY
        and r.linked
        and r.id not in refused
        and needed <= r.runtimes
        and all(r.labels.get(k) == v for m in modules for k, v in m.labels.items())
    ]


def _candidates(
    modules: Sequence[ModuleAsk],
    offers: Sequence[RunnerOffer],
    free: Mapping[str, tuple[float, float]],
    refused: Mapping[str, str],
) -> list[RunnerOffer]:
    """The runners that can take all of ``modules`` together, best first."""
    need_cpus = sum(m.cpus for m in modules)
    need_memory = sum(m.memory for m in modules)
    found = [
        r
        for r in _suitable(modules, offers, refused)
        if need_cpus <= free[r.id][0] + CPU_TOLERANCE and need_memory <= free[r.id][1]
    ]
    return sorted(found, key=lambda r: (r.load, r.registered))


def _why_none(
    modules: Sequence[ModuleAsk],
    offers: Sequence[RunnerOffer],
    free: Mapping[str, tuple[float, float]],
    refused: Mapping[str, str],
) -> str:
    """Why no runner can take ``modules``: what no ready runner has, or the most room
    one that has it has left."""
    needed = {m.runtime for m in modules}
    labels = {k: v for m in modules for k, v in m.labels.items()}
    need = f"runtime {', '.join(sorted(needed))}" + (f" and labels {labels}" if labels else "")
    suitable = _suitable(modules, offers, refused)
    if not suitable:
        return f"no ready runner has {need}"
    roomiest = max(suitable, key=lambda r: free[r.id])
    cpus, memory = free[roomiest.id]
    # a runner that reports CPUs but no memory has inf of it left: "inf", like the CPUs
    left = format_size(int(max(memory, 0))) if math.isfinite(memory) else f"{memory:g}"
    return (
        f"needs {sum(m.cpus for m in modules):g} CPUs and"
        f" {format_size(sum(m.memory for m in modules))} of memory; the ready runners with"
        f" {need} have at most {max(cpus, 0):g} CPUs and {left} free ({roomiest.id})"
    )
