"""What a runner may speak for (``Dispatcher.check_part``), on a real store: the
modules placed on it, and those it is handing over while it drains; nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from fifoflow.dispatcher.errors import NotYourPart
from fifoflow.dispatcher.service import Dispatcher, DispatcherConfig

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Dispatcher]:
    d = Dispatcher(DispatcherConfig(tmp_path))
    doc = {"fifoflow": 1, "id": "f", "modules": [{"id": m} for m in "abc"], "wires": []}
    d.store.put_flow("f", doc)
    d.store.update_flow("f", placement={"a": "r1", "b": "r1", "c": "r2"}, status="placed")
    try:
        yield d
    finally:
        d.store.close()


@pytest.mark.parametrize(
    ("runner", "call", "flow", "modules", "param", "field"),
    [
        ("r2", "relay", "f", ["a"], "moduleId", "moduleId"),  # its flow, not its module
        ("r1", "snapshot", "f", ["a", "c"], "states", "states"),  # one state too many
        ("r3", "paused", "f", [], "module", "flowId"),  # no part of the flow at all
        ("r1", "relay", "nope", ["a"], "moduleId", "flowId"),  # no such flow
    ],
)
def test_calls_about_other_parts_are_refused_and_recorded(
    dispatcher: Dispatcher,
    runner: str,
    call: str,
    flow: str,
    modules: list[str],
    param: str,
    field: str,
) -> None:
    with pytest.raises(NotYourPart) as caught:
        dispatcher.check_part(runner, call, flow, modules, field=param)
    assert (caught.value.code, caught.value.field) == ("not_your_part", field)
    assert str(caught.value).startswith(f"{call}: ")
    [event] = [e for e in dispatcher.events() if e["kind"] == "refused-call"]
    assert (event["runner"], event["call"], event["flow"], event["field"]) == (
        runner, call, flow, field,
    )  # fmt: skip


def test_own_modules_and_those_being_handed_over_pass(dispatcher: Dispatcher) -> None:
    dispatcher.check_part("r1", "relay", "f", ["a"])
    dispatcher.check_part("r1", "snapshot", "f", ["a", "b"], field="states")
    dispatcher.check_part("r2", "paused", "f")
    # r2 drains: the store lets go of c before r2 hands it over; meanwhile r2 still
    # relays and snapshots for c (it stops the part gracefully), and only for c.
    dispatcher.store.update_flow("f", placement={"a": "r1", "b": "r1"}, status="moving")
    dispatcher.deployments.handing_over["f"] = {"c": "r2"}
    dispatcher.check_part("r2", "relay", "f", ["c"])
    with pytest.raises(NotYourPart):
        dispatcher.check_part("r2", "relay", "f", ["a"])
    del dispatcher.deployments.handing_over["f"]
    with pytest.raises(NotYourPart):
        dispatcher.check_part("r2", "relay", "f", ["c"])
    assert len([e for e in dispatcher.events() if e["kind"] == "refused-call"]) == 2


def test_a_part_being_deployed_may_speak_before_it_is_recorded(dispatcher: Dispatcher) -> None:
    """A runner that just got its part checkpoints (snapshot) before the deploy call has
    returned and the store says it is placed: that is its part already (a race the
    lost-runner test once hit as a refused-call)."""
    with pytest.raises(NotYourPart):
        dispatcher.check_part("r3", "snapshot", "f", ["c"], field="states")
    dispatcher.deployments._claims["f"] = {"a": "r1", "b": "r1", "c": "r3"}
    try:
        dispatcher.check_part("r3", "snapshot", "f", ["c"], field="states")
    finally:
        del dispatcher.deployments._claims["f"]


def test_flow_events_are_published_only_for_watched_flows_and_own_parts(
    dispatcher: Dispatcher,
) -> None:
    """``flowEvent`` (a watched flow's events, for FBP clients): a runner speaks for the
    modules of its part only; events of a flow nobody watches are dropped."""
    sub = dispatcher.flow_events.subscribe()
    wire = {"kind": "wire", "module": "a", "port": "out", "dst": "c", "dstPort": "in", "msgs": [1]}
    dispatcher.flow_event("r1", "f", wire)  # not watched: dropped
    dispatcher.parts.watched.add("f")
    dispatcher.flow_event("r1", "f", wire)
    with pytest.raises(NotYourPart) as caught:
        dispatcher.flow_event("r2", "f", wire)  # a is r1's
    assert caught.value.field == "module"
    with pytest.raises(NotYourPart):
        dispatcher.flow_event("r3", "f", {"kind": "log", "module": None, "text": "x"})
    assert sub.receive_nowait() == {**wire, "flow": "f", "runner": "r1"}
    with pytest.raises(trio.WouldBlock):  # nothing else was published
        sub.receive_nowait()
    assert [e["call"] for e in dispatcher.events() if e["kind"] == "refused-call"] == [
        "flowEvent",
        "flowEvent",
    ]
