"""No input can kill a server: every door refuses a value no later stage could encode.

orjson parses JSON nested 1024 levels deep but writes only 254: a message nested ~250
deep used to be accepted by inject and then break ``/debug``, ``/queues``, ``/step``,
the event subscribers and the checkpoint. Each door is fuzzed here with values nested
exactly at ``MAX_DEPTH`` (accepted), one deeper (refused, naming the field), huge,
non-UTF-8 and non-finite; after each the server still serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import trio

from fifoflow.api.client import open_websocket
from fifoflow.flows.limits import MAX_DEPTH, MAX_INJECT

from .helpers import serve_runner, wait_event

if TYPE_CHECKING:
    from pathlib import Path

    from .helpers import Served


def nest(levels: int) -> Any:
    """A value ``levels`` arrays deep: ``nest(2) == [[0]]``."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


#: a module that passes messages on and keeps the last one's type and a count as its state
ECHO = {
    "fifoflow": 1,
    "id": "echo",
    "modules": [
        {
            "id": "m",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
                "    ctx.state['last'] = type(msg).__name__\n"
                "    return msg\n"
            ),
        }
    ],
}

#: modules whose user code makes values too deep to encode: returned, and kept as state
#: (200 levels: python's orjson writes them, the runner must not take them; 300: the
#: host itself cannot write them)
DEEP = {
    "fifoflow": 1,
    "id": "deep",
    "modules": [
        {
            "id": "emitter",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    value = 0\n"
                "    for _ in range(msg['depth']):\n"
                "        value = [value]\n"
                "    return value\n"
            ),
        },
        {
            "id": "keeper",
            "runtime": "python",
            "code": (
                "def handle(msg, ctx):\n"
                "    value = 0\n"
                "    for _ in range(msg['depth']):\n"
                "        value = [value]\n"
                "    ctx.state['deep'] = value\n"
                "    ctx.state['n'] = msg['n']\n"
                "    return {'n': msg['n']}\n"
            ),
        },
        {
            "id": "after",
            "runtime": "python",
            "code": "def handle(msg, ctx):\n    return msg\n",
        },
    ],
    "wires": ["emitter.out -> after.in"],
}


async def still_serves(http: httpx.AsyncClient, flow_id: str) -> None:
    """The server answers, and the views that encode queued messages and state work."""
    assert (await http.get("/health")).json()["status"] == "ok"
    for view in ("debug", "queues"):
        response = await http.get(f"/flows/{flow_id}/{view}")
        assert response.status_code == 200, response.text


def deep(levels: int) -> str:
    """``nest(levels)`` as JSON text (orjson writes only 254 levels)."""
    return "[" * levels + "0" + "]" * levels


def http_client(served: Served) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=served.url, headers={"Authorization": f"Bearer {served.token}"}, timeout=30
    )


async def test_rest_doors_refuse_values_no_stage_could_encode() -> None:
    async with serve_runner(max_body=4 * 1024 * 1024) as served, http_client(served) as http:
        assert (await http.put("/flows/echo", json=ECHO)).status_code == 201
        assert (await http.post("/flows/echo/start")).status_code == 200
        inject = "/flows/echo/modules/m/inputs/in"

        # exactly at the limit: accepted, handled, and every view can show it
        response = await http.post(inject, json={"msgs": [nest(MAX_DEPTH)]})
        assert response.status_code == 200, response.text
        await served.runner.wait_idle("echo")
        assert (await http.get("/flows/echo/modules/m/state")).json()["state"] == {
            "n": 1,
            "last": "list",
        }
        await still_serves(http, "echo")

        async def refused(path: str, body: bytes, status: int, field: str, text: str) -> None:
            response = await http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["field"] == field, error
            assert text in error["message"], error
            await still_serves(http, "echo")

        # one deeper (a few hundred bytes), much deeper, in msg or msgs
        for body, field in (
            (f'{{"msgs": [1, {deep(MAX_DEPTH + 1)}]}}', "msgs[1]"),
            (f'{{"msg": {deep(250)}}}', "msg"),
            (f'{{"msg": {{"a": {deep(1000)}}}}}', "msg"),
        ):
            await refused(
                inject, body.encode(), 422, field, f"{field}: nested deeper than 100 levels"
            )
        # what orjson does not parse: the syntax error, never a 500
        for body in (
            b'{"msg": NaN}',
            b'{"msg": Infinity}',
            b'{"msg": 1e400}',
            b'{"msg": "\xff\xfe"}',
            b'{"msg": "\\ud800"}',
            b"[" * 2000 + b"]" * 2000,
        ):
            await refused(inject, body, 400, "body", "the body is not valid JSON")
        # too many messages in one call, and a body over the limit
        too_many = orjson.dumps({"msgs": [0] * (MAX_INJECT + 1)})
        await refused(inject, too_many, 422, "msgs", f"at most {MAX_INJECT} items")
        # (on a connection of its own: what a 413 leaves of a keep-alive connection is
        # api/common/http.py's business, not this test's)
        async with http_client(served) as other:
            huge = orjson.dumps({"msg": "x" * (5 * 1024 * 1024)})
            response = await other.post(
                inject, content=huge, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 413
            assert response.json()["error"]["field"] == "body"
        await still_serves(http, "echo")

        # a flow's config is a JSON value too: at the limit taken, deeper refused
        flow = {**ECHO, "id": "conf"}
        flow["modules"] = [{**ECHO["modules"][0], "config": {"x": nest(MAX_DEPTH - 1)}}]
        assert (await http.put("/flows/conf", json=flow)).status_code == 201
        flow["modules"] = [{**ECHO["modules"][0], "config": {"x": nest(MAX_DEPTH)}}]
        response = await http.put("/flows/conf", json=flow)
        assert response.status_code == 422, response.text
        assert "modules[0].config: nested deeper than 100 levels" in response.text

        # the flow never noticed: it still handles messages
        response = await http.post(inject, json={"msg": {"n": 1}})
        assert response.status_code == 200
        await served.runner.wait_idle("echo")
        assert (await http.get("/flows/echo/modules/m/state")).json()["state"] == {
            "n": 2,
            "last": "dict",
        }
        assert (await http.get("/flows/echo/modules/m/errors")).json() == []


async def test_json_rpc_door_refuses_them_with_32602_naming_the_param() -> None:
    async with serve_runner() as served, http_client(served) as http:
        await http.put("/flows/echo", json=ECHO)
        await http.post("/flows/echo/start")
        url = served.url.replace("http", "ws") + "/ws"
        auth = [(b"Authorization", f"Bearer {served.token}".encode())]
        async with open_websocket(url, headers=auth) as ws:

            async def call(raw: str | bytes) -> Any:
                await ws.send_message(raw if isinstance(raw, str) else raw.decode())
                with trio.fail_after(20):
                    return orjson.loads(await ws.get_message())

            def inject(msgs: Any, request_id: str = "1") -> str:
                params = f'{{"flowId": "echo", "moduleId": "m", "msgs": {msgs}}}'
                return f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "inject", "params": {params}}}'

            assert "result" in await call(inject(f"[{deep(MAX_DEPTH)}]"))
            reply = await call(inject(f'["ok", {deep(MAX_DEPTH + 1)}]'))
            assert reply["error"]["code"] == -32602
            assert reply["error"]["message"] == "msgs[1]: nested deeper than 100 levels"
            assert reply["error"]["data"]["field"] == "msgs[1]"
            # a deep id is not echoed (the reply could not carry it): the reply says why
            reply = await call(inject("[1]", request_id=deep(300)))
            assert reply["id"] is None
            assert reply["error"]["code"] == -32600
            # deep params of any method, deep batch items, non-finite and bad text
            reply = await call(
                f'{{"jsonrpc": "2.0", "id": 2, "method": "health", "params": {deep(300)}}}'
            )
            assert reply["error"]["code"] == -32602
            reply = await call(
                f'{{"jsonrpc": "2.0", "id": 2, "method": "subscribe", '
                f'"params": {{"flows": {deep(300)}}}}}'
            )
            assert reply["error"]["code"] == -32602
            reply = await call('{"jsonrpc": "2.0", "id": 3, "method": "inject", "params": NaN}')
            assert reply["error"]["code"] == -32700
            reply = await call("[" * 2000 + "]" * 2000)
            assert reply["error"]["code"] == -32700
            reply = await call(f"[{deep(300)}]")
            assert reply[0]["error"]["code"] == -32600
            # the connection and the flow still serve
            assert "result" in await call(inject('[{"n": 2}]'))
        await served.runner.wait_idle("echo")
        assert (await http.get("/flows/echo/modules/m/state")).json()["state"] == {
            "n": 2,
            "last": "dict",
        }
        await still_serves(http, "echo")


@pytest.mark.parametrize("depth", [200, 300])
async def test_a_module_that_makes_a_value_too_deep_gets_an_error_and_goes_on(
    tmp_path: Path, depth: int
) -> None:
    async with (
        serve_runner(state_dir=tmp_path / "state") as served,
        http_client(served) as http,
        served.client() as client,
        client.rpc() as rpc,
    ):
        assert (await http.put("/flows/deep", json=DEEP)).status_code == 201
        assert (await http.post("/flows/deep/start")).status_code == 200
        await rpc.call("subscribe", flows=["deep"])
        base = "/flows/deep/modules"
        await http.post(f"{base}/emitter/inputs/in", json={"msg": {"depth": depth}})
        await http.post(f"{base}/keeper/inputs/in", json={"msg": {"depth": depth, "n": 1}})
        await served.runner.wait_idle("deep")
        # each module has an error naming what it did; the subscriber heard of both
        # (emitter -> after stays inside one python host: the value leaves it from after)
        emitted = [
            *(await http.get(f"{base}/emitter/errors")).json(),
            *(await http.get(f"{base}/after/errors")).json(),
        ]
        assert len(emitted) == 1, emitted
        message = emitted[0]["error"]["message"]
        assert "emitted message" in message or "not JSON-serializable" in message, message
        keeper = (await http.get(f"{base}/keeper/errors")).json()
        assert keeper, "the keeper has no error"
        assert "state" in keeper[-1]["error"]["message"]
        await wait_event(rpc, "error", module="keeper")
        # the state that could not be kept is not the module's state; the last good one is
        state = (await http.get(f"{base}/keeper/state")).json()["state"]
        assert state is None or "deep" not in state
        # the checkpoint (forced, as the interval would) writes, the runner lives
        served.runner.checkpoint()
        await still_serves(http, "deep")
        step = await http.post("/flows/deep/pause")
        assert step.status_code == 200, step.text
        assert (await http.post("/flows/deep/step")).status_code == 200
        assert (await http.post("/flows/deep/continue")).status_code == 200
        # the flow goes on: good values pass, the subscriber still gets events
        await http.post(f"{base}/emitter/inputs/in", json={"msg": {"depth": 3}})
        event = await wait_event(rpc, "output", module="after")
        assert event["msgs"] == [nest(3)] or nest(3) in str(event)
        await http.post(f"{base}/keeper/inputs/in", json={"msg": {"depth": 2, "n": 2}})
        await served.runner.wait_idle("deep")
        assert (await http.get(f"{base}/keeper/state")).json()["state"] == {"deep": nest(2), "n": 2}
        assert (await http.get("/flows/deep")).json()["status"] == "running"


async def test_the_runner_link_and_a_pages_control_socket_refuse_them(tmp_path: Path) -> None:
    import trio_websocket

    from ..dispatcher.test_dispatcher import DispatcherProcess

    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        ws_url = dispatcher.url.replace("http", "ws")
        with trio.fail_after(60):
            async with trio_websocket.open_websocket_url(ws_url + "/link") as ws:

                async def call(raw: str) -> Any:
                    await ws.send_message(raw)
                    return orjson.loads(await ws.get_message())

                def relay(msgs: str, request_id: str = "1") -> str:
                    params = f'{{"flowId": "f", "moduleId": "m", "port": "in", "msgs": {msgs}}}'
                    return f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "relay", "params": {params}}}'

                # at the limit: the params pass (and the link asks for hello first)
                reply = await call(relay(f"[{deep(MAX_DEPTH)}]"))
                assert "say hello first" in reply["error"]["message"]
                reply = await call(relay(f"[1, {deep(MAX_DEPTH + 1)}]"))
                assert reply["error"]["code"] == -32602
                assert "msgs[1]: nested deeper than 100 levels" in reply["error"]["message"]
                reply = await call(
                    f'{{"jsonrpc": "2.0", "id": 2, "method": "register", '
                    f'"params": {{"token": "t", "name": {deep(300)}}}}}'
                )
                assert reply["error"]["code"] == -32602
                # a deep id or method: no reply to carry it, and the link stays
                await ws.send_message(relay("[1]", request_id=deep(300)))
                reply = await call('{"jsonrpc": "2.0", "id": 3, "method": ' + deep(300) + "}")
                assert reply["error"]["code"] == -32602
                reply = await call(relay("[1]", request_id="4"))
                assert reply["id"] == 4
                assert "say hello first" in reply["error"]["message"]

            token = dispatcher.api("GET", "/client-token")["token"]
            async with trio_websocket.open_websocket_url(
                f"{ws_url}/client/ws?token={token}&page=p1"
            ) as ws:
                assert orjson.loads(await ws.get_message())["op"] == "welcome"

                async def control(raw: str) -> Any:
                    await ws.send_message(raw)
                    return orjson.loads(await ws.get_message())

                reply = await control(
                    f'{{"op": "inject", "id": 8, "flow": "nope", "module": "m", '
                    f'"msgs": [{deep(MAX_DEPTH)}]}}'
                )
                assert "no flow 'nope'" in reply["message"]
                reply = await control(
                    f'{{"op": "inject", "id": 9, "flow": "nope", "module": "m", '
                    f'"msgs": [{deep(MAX_DEPTH + 1)}]}}'
                )
                assert reply == {
                    "op": "error",
                    "id": 9,
                    "message": "msgs[0]: nested deeper than 100 levels",
                    "field": "msgs[0]",
                }
                reply = await control(f'{{"op": "inject", "id": {deep(300)}, "flow": 1}}')
                assert reply["op"] == "error"
                assert reply["id"] is None
                assert reply["field"] == "flow"
                reply = await control(f'{{"op": {deep(300)}}}')
                assert "unknown op '(a list)'" in reply["message"]
                reply = await control('{"op": "inject", "msgs": [NaN]}')
                assert reply["message"] == "not a control message"
                await ws.send_message('{"op": "bye"}')
        # the dispatcher still serves
        assert dispatcher.api("GET", "/health")["status"] == "ok"
    finally:
        dispatcher.stop()
