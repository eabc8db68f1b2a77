"""The one walk over exception groups (runner/errors.py): no process, no trio run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from fifoflow.runner import FlowLoadError, RunnerError, first, leaves

if TYPE_CHECKING:
    from pathlib import Path


def test_leaves_flattens_nested_groups_in_order() -> None:
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    group = BaseExceptionGroup(
        "outer", [a, ExceptionGroup("inner", [b, ExceptionGroup("deep", [c])])]
    )
    assert leaves(group) == [a, b, c]
    assert leaves(a) == [a]


def test_first_matches_kind_and_never_a_cancellation() -> None:
    cancelled = trio.Cancelled._create()
    load = FlowLoadError("f/m", {"type": "SyntaxError", "message": "bad"})
    group = BaseExceptionGroup("g", [cancelled, ExceptionGroup("inner", [ValueError("v"), load])])
    assert first(group, RunnerError) is load
    assert first(group, (KeyError, FlowLoadError)) is load
    assert isinstance(first(group, BaseException), ValueError)
    assert first(group, KeyError) is None
    assert first(BaseExceptionGroup("only", [cancelled]), BaseException) is None


async def test_a_checkpoint_that_cannot_write_one_flow_writes_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from fifoflow.flows import parse_flow
    from fifoflow.runner import RunnerConfig, open_runner

    def flow(flow_id: str) -> Any:
        doc = {
            "fifoflow": 1,
            "id": flow_id,
            "modules": [
                {"id": "m", "runtime": "python", "code": "def handle(msg, ctx):\n    pass\n"}
            ],
        }
        return parse_flow(doc, base_dir=None, runtimes=["python"])

    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    async with open_runner(RunnerConfig(state_dir=tmp_path / "state")) as runner:
        for flow_id, state in (("bad", {"deep": deep}), ("good", {"n": 1})):
            await runner.add_or_update_flow(flow(flow_id))
            runner.flow(flow_id).seed_states({"m": state})
        sub = runner.subscribe(kinds=["checkpoint"])
        runner.checkpoint()  # does not raise
        saved = orjson.loads((tmp_path / "state" / "states" / "good.json").read_bytes())
        assert saved["modules"] == {"m": {"n": 1}}
        assert not (tmp_path / "state" / "states" / "bad.json").exists()
        assert "could not checkpoint: flow 'bad'" in caplog.text
        with trio.fail_after(5):
            events = [await sub.__anext__(), await sub.__anext__()]
        by_flow = {e["flow"]: e for e in events}
        assert by_flow["bad"]["error"]["code"] == "unencodable"
        assert "Recursion limit" in by_flow["bad"]["error"]["message"]
        assert "error" not in by_flow["good"]
        sub.close()
