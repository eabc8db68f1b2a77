"""A page's client token reaches only its own page (issue 16): raw websockets to a
real dispatcher process, as a page (or someone holding the page's token) would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio
import trio_websocket

from .test_dispatcher import COUNTER, DispatcherProcess, events, linked_id, start_runner

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def dispatcher(tmp_path: Path) -> Any:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _ws(dispatcher: DispatcherProcess) -> str:
    return dispatcher.url.replace("http", "ws")


async def _welcome(ws: Any) -> dict[str, Any]:
    welcome = orjson.loads(await ws.get_message())
    assert welcome["op"] == "welcome", welcome
    return welcome


async def test_a_page_injects_only_into_flows_it_runs(
    tmp_path: Path, dispatcher: DispatcherProcess
) -> None:
    runner = start_runner(tmp_path, "r1", dispatcher, dispatcher.token())
    try:
        linked_id(runner)
        assert dispatcher.api("POST", "/flows", json=COUNTER)["status"] == "placed"
        token = dispatcher.api("GET", "/client-token")["token"]
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                f"{_ws(dispatcher)}/client/ws?token={token}&page=p1"
            ) as ws:
                welcome = await _welcome(ws)
                # a deployed flow of a server runner, and a flow that does not exist:
                # the same refusal, naming the field (nothing learnt about other flows)
                for n, flow in enumerate(("counter", "nope")):
                    await ws.send_message(
                        orjson.dumps(
                            {
                                "op": "inject",
                                "id": n,
                                "flow": flow,
                                "module": "count",
                                "msgs": ["x"],
                            }
                        ).decode()
                    )
                    reply = orjson.loads(await ws.get_message())
                    assert (reply["op"], reply["id"], reply["field"]) == ("error", n, "flow")
                    assert f"no flow {flow!r} has modules on this page" in reply["message"]
                await ws.send_message('{"op": "bye"}')
        refused = events(dispatcher, "refused-inject", welcome["runner"])
        assert [(e["page"], e["flow"]) for e in refused] == [("p1", "counter"), ("p1", "nope")]
        # nothing reached the flow's module
        state = dispatcher.api("GET", "/flows/counter/modules/count/state")
        assert "x" not in orjson.dumps(state).decode()
    finally:
        runner.stop()
