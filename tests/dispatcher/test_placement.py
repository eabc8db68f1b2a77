"""Placement decisions, table by table (like Nomad's feasible_test.go and rank_test.go):
runners and asks in, a plan out; no store, no process, no trio."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fifoflow.dispatcher.placement import ModuleAsk, RunnerOffer, plan_placement
from fifoflow.dispatcher.status import RunnerStatus

GiB = 1024**3
MiB = 1024**2


def runner(
    rid: str,
    *runtimes: str,
    status: str = RunnerStatus.READY,
    linked: bool = True,
    registered: float | None = None,
    labels: dict[str, Any] | None = None,
    cpus: float = math.inf,
    memory: float = math.inf,
    reserved: tuple[float, float] = (0.0, 0.0),
    load: int = 0,
) -> RunnerOffer:
    """A runner offer; ``r3`` registered at time 3 unless told, python unless told."""
    return RunnerOffer(
        id=rid,
        status=status,
        linked=linked,
        registered=float(rid.lstrip("r")) if registered is None else registered,
        runtimes=frozenset(runtimes or ("python",)),
        labels=labels or {},
        cpus=cpus,
        memory=memory,
        reserved_cpus=reserved[0],
        reserved_memory=reserved[1],
        load=load,
    )


def ask(
    mid: str,
    runtime: str = "python",
    *,
    labels: dict[str, Any] | None = None,
    cpus: float = 0.0,
    memory: int = 0,
) -> ModuleAsk:
    return ModuleAsk(id=mid, runtime=runtime, labels=labels or {}, cpus=cpus, memory=memory)


def one(module: ModuleAsk, runners: list[RunnerOffer], **kw: Any) -> str:
    """The runner the module goes to, or the reason it waits."""
    plan = plan_placement([module], runners, kw.pop("current", {}), **kw)
    return plan.placement.get(module.id) or plan.unplaced[module.id]


# ---------------------------------------------------------------- feasibility


@pytest.mark.parametrize(
    ("module", "runners", "expected"),
    [
        pytest.param(ask("m"), [runner("r1")], "r1", id="runtime present"),
        pytest.param(
            ask("m", "node"),
            [runner("r1")],
            "no ready runner has runtime node",
            id="runtime missing",
        ),
        pytest.param(
            ask("m", "node"),
            [runner("r1"), runner("r2", "python", "node")],
            "r2",
            id="runtime on another runner",
        ),
        pytest.param(
            ask("m", labels={"gpu": "yes"}),
            [runner("r1"), runner("r2", labels={"gpu": "yes", "zone": "a"})],
            "r2",
            id="labels: the runner has them (and more)",
        ),
        pytest.param(
            ask("m", labels={"gpu": "yes"}),
            [runner("r1", labels={"gpu": "no"})],
            "no ready runner has runtime python and labels {'gpu': 'yes'}",
            id="labels: a value differs",
        ),
        pytest.param(
            ask("m", "node", labels={"client": "p1"}),
            [runner("r1", "node", labels={"client": "p2"})],
            "no ready runner has runtime node and labels {'client': 'p1'}",
            id="labels: a client runner of another page",
        ),
        pytest.param(
            ask("m"),
            [runner("r1", linked=False)],
            "no ready runner has runtime python",
            id="not linked",
        ),
        *[
            pytest.param(
                ask("m"),
                [runner("r1", status=status)],
                "no ready runner has runtime python",
                id=f"not ready: {status}",
            )
            for status in RunnerStatus
            if status != RunnerStatus.READY
        ],
        pytest.param(
            ask("m", cpus=1, memory=256 * MiB),
            [runner("r1", cpus=2, memory=GiB, reserved=(1.5, 0))],
            "needs 1 CPUs and 256MiB of memory; the ready runners with runtime python have"
            " at most 0.5 CPUs and 1GiB free (r1)",
            id="capacity: CPUs short",
        ),
        pytest.param(
            ask("m", cpus=0.5, memory=512 * MiB),
            [runner("r1", cpus=2, memory=GiB, reserved=(0, 768 * MiB))],
            "needs 0.5 CPUs and 512MiB of memory; the ready runners with runtime python have"
            " at most 2 CPUs and 256MiB free (r1)",
            id="capacity: memory short",
        ),
        pytest.param(
            ask("m", cpus=1, memory=GiB),
            [runner("r1", cpus=2, memory=GiB, reserved=(1, 0))],
            "r1",
            id="capacity: exactly what is left",
        ),
        pytest.param(
            ask("m", cpus=0.1),
            [runner("r1", cpus=1, reserved=(0.1 + 0.8, 0))],
            "r1",
            id="capacity: CPUs within the float tolerance",
        ),
        pytest.param(
            ask("m", cpus=0.1 + 1e-6),
            [runner("r1", cpus=1, memory=GiB, reserved=(0.1 + 0.8, 0))],
            "needs 0.100001 CPUs and 0 of memory; the ready runners with runtime python have"
            " at most 0.1 CPUs and 1GiB free (r1)",
            id="capacity: CPUs beyond the tolerance",
        ),
        pytest.param(
            ask("m", cpus=64, memory=64 * GiB),
            [runner("r1")],
            "r1",
            id="capacity: none reported is unlimited",
        ),
        pytest.param(
            ask("m", cpus=1, memory=64 * GiB),
            [runner("r1", cpus=1)],
            "r1",
            id="capacity: CPUs reported, memory unlimited",
        ),
        pytest.param(
            ask("m", cpus=2),
            [runner("r1", cpus=1)],
            "needs 2 CPUs and 0 of memory; the ready runners with runtime python have"
            " at most 1 CPUs and inf free (r1)",
            id="capacity: CPUs short, memory unlimited",
        ),
        pytest.param(
            ask("m", cpus=1, memory=GiB),
            [runner("r1", cpus=1, memory=GiB, reserved=(3, 2 * GiB))],
            "needs 1 CPUs and 1GiB of memory; the ready runners with runtime python have"
            " at most 0 CPUs and 0 free (r1)",
            id="capacity: over-reserved shows nothing left",
        ),
        pytest.param(
            ask("m", cpus=2),
            [
                runner("r1", cpus=1.5, memory=GiB),
                runner("r2", cpus=0.5, memory=2 * GiB),
                runner("r3", "node", cpus=8, memory=8 * GiB),
            ],
            "needs 2 CPUs and 0 of memory; the ready runners with runtime python have"
            " at most 1.5 CPUs and 1GiB free (r1)",
            id="capacity: the reason names the roomiest suitable runner",
        ),
    ],
)
def test_feasibility(module: ModuleAsk, runners: list[RunnerOffer], expected: str) -> None:
    assert one(module, runners) == expected


# ---------------------------------------------------------------- ranking


@pytest.mark.parametrize(
    ("runners", "expected"),
    [
        pytest.param([runner("r1", load=3), runner("r2", load=1)], "r2", id="least loaded"),
        pytest.param(
            [runner("r1", registered=20), runner("r2", registered=10)],
            "r2",
            id="same load: earliest registered",
        ),
        pytest.param(
            [runner("r2", registered=10), runner("r1", registered=20)],
            "r2",
            id="same load: earliest registered, whatever the order given",
        ),
        pytest.param(
            [runner("r1", load=1), runner("r2", load=0)], "r2", id="load before registration"
        ),
        pytest.param([runner("r1", cpus=1), runner("r2", cpus=64)], "r1", id="room does not rank"),
        pytest.param(
            [runner("r1", load=0, linked=False), runner("r2", load=9)],
            "r2",
            id="the least loaded is not linked",
        ),
    ],
)
def test_ranking(runners: list[RunnerOffer], expected: str) -> None:
    assert one(ask("m", cpus=1), runners) == expected


# ---------------------------------------------------------------- whole or split


@pytest.mark.parametrize(
    ("modules", "runners", "expected"),
    [
        pytest.param(
            [ask("a"), ask("b", "node")],
            [runner("r1", load=0), runner("r2", "python", "node", load=5)],
            {"a": "r2", "b": "r2"},
            id="whole on the one runner that can take it all, though busier",
        ),
        pytest.param(
            [ask("a"), ask("b", "node")],
            [runner("r1"), runner("r2", "node")],
            {"a": "r1", "b": "r2"},
            id="split: no runner has every runtime",
        ),
        pytest.param(
            [ask("a", cpus=1), ask("b", cpus=1)],
            [runner("r1", cpus=1), runner("r2", cpus=1)],
            {"a": "r1", "b": "r2"},
            id="split: no runner has room for all",
        ),
        pytest.param(
            [ask("a", cpus=0.2), ask("b", cpus=0.4), ask("c", cpus=0.4)],
            [runner("r1", cpus=1), runner("r2", cpus=1, load=1)],
            {"a": "r1", "b": "r1", "c": "r1"},
            id="whole: shares that add up to the capacity",
        ),
        pytest.param(
            [ask("a", cpus=1), ask("b", cpus=1), ask("c", "node")],
            [runner("r1", cpus=2), runner("r2", "node")],
            {"a": "r1", "b": "r1", "c": "r2"},
            id="split: modules share a runner while it has room",
        ),
        pytest.param(
            [ask("a", cpus=1), ask("b", cpus=1)],
            [runner("r1", cpus=1.5), runner("r2", cpus=1.5, load=1)],
            {"a": "r1", "b": "r2"},
            id="split: this flow's modules count against the room",
        ),
        pytest.param(
            [ask("a", labels={"zone": "a"}), ask("b", labels={"zone": "b"})],
            [runner("r1", labels={"zone": "b"}), runner("r2", labels={"zone": "a"})],
            {"a": "r2", "b": "r1"},
            id="split: modules asking for different labels",
        ),
    ],
)
def test_whole_or_split(
    modules: list[ModuleAsk], runners: list[RunnerOffer], expected: dict[str, str]
) -> None:
    plan = plan_placement(modules, runners, {})
    assert (plan.placement, plan.unplaced, plan.reason) == (expected, {}, None)


# ---------------------------------------------------------------- where it runs now


@pytest.mark.parametrize(
    ("current", "runners", "refused", "expected", "unchanged"),
    [
        pytest.param(
            {"a": "r2", "b": "r2"},
            [runner("r1"), runner("r2", "python", "node", load=7)],
            {},
            {"a": "r2", "b": "r2"},
            True,
            id="kept on its live runner, though another is less loaded",
        ),
        pytest.param(
            {"a": "r2", "b": "r2"},
            [
                runner("r1", "python", "node"),
                runner("r2", "python", "node", status=RunnerStatus.DRAINING),
            ],
            {},
            {"a": "r2", "b": "r2"},
            True,
            id="kept on a linked runner that is not ready",
        ),
        pytest.param(
            {"a": "r2", "b": "r2"},
            [runner("r1", "python", "node"), runner("r2", "python", "node", linked=False)],
            {},
            {"a": "r1", "b": "r1"},
            False,
            id="its runner's link is down: placed again, whole",
        ),
        pytest.param(
            {"a": "r2", "b": "r2"},
            [runner("r1", "python", "node"), runner("r2", "python", "node")],
            {"r2": "no room"},
            {"a": "r1", "b": "r1"},
            False,
            id="its runner refused: placed again without it",
        ),
        pytest.param(
            {"a": "r1"},
            [runner("r1"), runner("r2", "python", "node")],
            {},
            {"a": "r1", "b": "r2"},
            False,
            id="a module kept: the others placed one by one, the kept one does not move",
        ),
        pytest.param(
            {"a": "r1"},
            [runner("r1", "python", "node", cpus=1), runner("r2", "node", load=3)],
            {},
            {"a": "r1", "b": "r2"},
            False,
            id="a kept module's reservation counts on its runner",
        ),
    ],
)
def test_current_placement(
    current: dict[str, str],
    runners: list[RunnerOffer],
    refused: dict[str, str],
    expected: dict[str, str],
    unchanged: bool,
) -> None:
    modules = [ask("a", cpus=1), ask("b", "node", cpus=1)]
    plan = plan_placement(modules, runners, current, refused=refused)
    assert (plan.placement, plan.unchanged, plan.reason) == (expected, unchanged, None)


# ---------------------------------------------------------------- why a flow waits


@pytest.mark.parametrize(
    ("refused", "backend_problem", "expected"),
    [
        pytest.param({}, None, "module b: no ready runner has runtime cobol", id="a module"),
        pytest.param(
            {"r9": "flow f needs 4 CPUs, 1 free now"},
            None,
            "module b: no ready runner has runtime cobol;"
            " runner r9 refused: flow f needs 4 CPUs, 1 free now",
            id="refusals follow the modules",
        ),
        pytest.param(
            {"r9": "full"},
            "the docker backend cannot start a runner: pull of img failed: 404",
            "module b: no ready runner has runtime cobol; runner r9 refused: full;"
            " the docker backend cannot start a runner: pull of img failed: 404",
            id="the backend's problem comes last",
        ),
    ],
)
def test_why_a_flow_waits(
    refused: dict[str, str], backend_problem: str | None, expected: str
) -> None:
    plan = plan_placement(
        [ask("a"), ask("b", "cobol")],
        [runner("r1"), runner("r9")],
        {},
        refused=refused,
        backend_problem=backend_problem,
    )
    # what can be placed is: the flow waits for the rest
    assert plan.placement == {"a": "r1"}
    assert plan.unplaced == {"b": "no ready runner has runtime cobol"}
    assert plan.reason == expected


@pytest.mark.parametrize(
    ("refused", "backend_problem"),
    [({"r1": "full"}, None), ({}, "the docker backend cannot start a runner")],
)
def test_nothing_waits_no_reason(refused: dict[str, str], backend_problem: str | None) -> None:
    plan = plan_placement(
        [ask("a")],
        [runner("r1"), runner("r2")],
        {"a": "r1"},
        refused=refused,
        backend_problem=backend_problem,
    )
    assert plan.reason is None
    assert plan.placement == {"a": "r2" if refused else "r1"}


def test_asks_and_offers_from_stored_records() -> None:
    module = {
        "id": "m",
        "runtime": "python",
        "placement": {"cpus": 0.5, "memory": "256MiB", "labels": {"gpu": "yes"}},
    }
    assert ModuleAsk.from_module(module) == ask(
        "m", labels={"gpu": "yes"}, cpus=0.5, memory=256 * MiB
    )
    assert ModuleAsk.from_module({"id": "m", "runtime": "node"}) == ask("m", "node")
    record = {
        "id": "r1",
        "status": "ready",
        "registered": 5.0,
        "hardware": {"runtimes": ["python", "node"], "capacity": {"cpus": 2, "memory": GiB}},
    }
    offer = RunnerOffer.from_runner(record, linked=True, load=2, reserved_cpus=1.0)
    assert offer == runner(
        "r1", "python", "node", registered=5.0, cpus=2, memory=GiB, reserved=(1.0, 0), load=2
    )
    bare = RunnerOffer.from_runner({**record, "hardware": {}}, linked=False)
    assert (bare.runtimes, bare.labels, bare.cpus, bare.memory) == (
        frozenset(),
        {},
        math.inf,
        math.inf,
    )
