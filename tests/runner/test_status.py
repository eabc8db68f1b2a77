"""Statuses and kinds are enums whose values are the strings the API always carried."""

from __future__ import annotations

import orjson

from fifoflow.runner import EventKind, FlowStatus, InstanceStatus, PauseReason, open_runner

from .helpers import make_flow


def test_values_are_the_strings_of_the_api() -> None:
    assert list(FlowStatus) == ["stopped", "starting", "running", "stopping", "failed"]
    assert list(InstanceStatus) == ["stopped", "starting", "running", "restarting", "failed"]
    assert list(PauseReason) == ["breakpoint", "pause"]
    assert set(EventKind) == {
        "output",
        "error",
        "log",
        "flow",
        "checkpoint",
        "swap",
        "paused",
        "continued",
        "step",
        "queue",
        "runtime",
        "environment",
        "build",
        "run",
        "run-progress",
        "wire",
        "missed",
    }
    assert f"flow is {FlowStatus.FAILED}" == "flow is failed"
    assert orjson.dumps({"status": FlowStatus.RUNNING}) == b'{"status":"running"}'


async def test_descriptions_encode_as_before() -> None:
    async with open_runner() as runner:
        flow = make_flow(
            {
                "id": "idle",
                "modules": [
                    {
                        "id": "m",
                        "runtime": "python",
                        "code": "def handle(msg, ctx):\n    return msg\n",
                    }
                ],
                "wires": [],
            }
        )
        await runner.add_or_update_flow(flow)
        described = orjson.loads(orjson.dumps(runner.flows()))
        assert described[0]["status"] == "stopped"
        assert described[0]["runtimes"]["python"]["status"] == "stopped"
        # counts keyed by status: a plain-string key (orjson refuses enum keys)
        assert orjson.loads(orjson.dumps(runner.health()))["flows"] == {"stopped": 1}
