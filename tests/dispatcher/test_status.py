"""Statuses are enums whose values are the strings stored in SQLite and sent in answers."""

from __future__ import annotations

import orjson

from fifoflow.dispatcher.status import FlowStatus, RunnerStatus


def test_values_are_the_stored_strings() -> None:
    assert list(RunnerStatus) == [
        "registered", "starting", "ready", "lost", "signed-off", "draining", "drained",
    ]  # fmt: skip
    assert list(FlowStatus) == ["pending", "placed", "updating", "moving"]


def test_members_are_their_strings_in_json() -> None:
    record = {"status": RunnerStatus.SIGNED_OFF, "flows": [FlowStatus.PLACED]}
    assert orjson.dumps(record) == b'{"status":"signed-off","flows":["placed"]}'
    assert f"flow is {FlowStatus.PENDING}" == "flow is pending"
