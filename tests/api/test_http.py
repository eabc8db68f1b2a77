"""The Runner API end to end: a real hypercorn on 127.0.0.1, real runtimes behind it."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket

from fifoflow.api.client import ApiError, open_websocket

from .helpers import CHAIN, serve_runner, wait_event


async def test_chain_over_http_with_events_over_websocket() -> None:
    async with serve_runner() as served, served.client() as client:
        assert {r["id"] for r in await client.list_runtimes()} >= {"python", "node", "exec"}
        assert await client.add_or_update_flow(CHAIN) is True
        assert await client.list_flows_for_runtime("node", ids=True) == ["chain"]
        assert [f["id"] for f in await client.list_flows_for_runtime("node")] == ["chain"]
        summary = await client.start_flow("chain")
        assert summary["status"] == "running"
        async with client.rpc() as rpc:
            await rpc.subscribe(flows=["chain"], kinds=["output"], outputs=["label.out"])
            assert await client.inject("chain", "add", "in", [{"n": i} for i in range(50)]) == 50
            got: list[dict[str, Any]] = []
            while len(_all_msgs(got)) < 50:
                got.append(await wait_event(rpc, "output"))
        msgs = _all_msgs(got)
        assert [m["n"] for m in msgs] == [(i + 1) * 2 for i in range(50)]
        assert [m["seen"] for m in msgs] == list(range(1, 51))
        assert await client.module_state("chain", "double") == {"seen": 50}
        flows = await client.list_flows()
        assert [(f["id"], f["status"], f["outputs"]) for f in flows] == [("chain", "running", 50)]
        assert (await client.stop_flow("chain"))["status"] == "stopped"
        await client.remove_flow("chain")
        assert await client.list_flows() == []


def _all_msgs(events: list[dict[str, Any]]) -> list[Any]:
    return [m for event in events for m in event["msgs"]]


async def test_chain_over_json_rpc() -> None:
    async with serve_runner() as served, served.client() as client, client.rpc() as rpc:
        assert {r["id"] for r in await rpc.call("listRuntimes")} >= {"python", "node"}
        assert await rpc.call("addOrUpdateFlow", flow=CHAIN) is True
        assert await rpc.call("listFlowsForRuntime", runtimeId="python", ids=True) == ["chain"]
        # the seed's methods by position, as it writes them: listFlowsForRuntime(runtimeId)
        # answers the flows
        flows = await rpc.call("listFlowsForRuntime", "python")
        assert [(f["id"], "revision" in f) for f in flows] == [("chain", True)]
        assert (await rpc.call("startFlow", flowId="chain"))["status"] == "running"
        await rpc.subscribe(flows=["chain"], kinds=["output", "flow"])
        for i in range(20):  # calls on one connection are handled in order
            await rpc.call("inject", flowId="chain", moduleId="add", msg={"n": i})
        events = []
        while len(_all_msgs(events)) < 20:
            events.append(await wait_event(rpc, "output", module="label"))
        assert [m["n"] for m in _all_msgs(events)] == [(i + 1) * 2 for i in range(20)]
        assert await rpc.call("getModuleState", flowId="chain", moduleId="add") == {
            "state": {"seen": 20}
        }
        assert (await rpc.call("stopFlow", flowId="chain"))["status"] == "stopped"
        stopped = await wait_event(rpc, "flow", status="stopped")
        assert stopped["flow"] == "chain"
        assert await rpc.call("removeFlow", flowId="chain") is True
        assert await rpc.call("listFlows") == []


async def test_json_rpc_errors_name_the_problem() -> None:
    async with serve_runner() as served, served.client() as client, client.rpc() as rpc:
        with pytest.raises(ApiError) as info:
            await rpc.call("startFlow", flowId="ghost")
        assert (info.value.status, info.value.code, info.value.field) == (
            404,
            "flow_not_found",
            "flowId",
        )
        # by position, as the seed writes them: the same answers
        with pytest.raises(ApiError) as info:
            await rpc.call("startFlow", "ghost")
        assert (info.value.status, info.value.code) == (404, "flow_not_found")
        with pytest.raises(ApiError) as info:
            await rpc.call("getModuleState", "ghost", "m", "extra")
        assert info.value.field == "params"
        assert "at most 2 params by position (flowId, moduleId)" in info.value.message
        with pytest.raises(ApiError) as info:
            await rpc.call("startFlow")
        assert info.value.field == "flowId"
        assert "missing" in info.value.message
        with pytest.raises(ApiError) as info:
            await rpc.call("listFlowsForRuntime", runtimeId=3)
        assert info.value.field == "runtimeId"
        assert "an integer" in info.value.message
        with pytest.raises(ApiError) as info:
            await rpc.call("noSuchMethod")
        assert "unknown method 'noSuchMethod'" in info.value.message
        assert "addOrUpdateFlow" in info.value.message
        with pytest.raises(ApiError) as info:
            await rpc.call(
                "addOrUpdateFlow",
                flow={
                    "fifoflow": 1,
                    "id": "x",
                    "modules": [{"id": "a", "runtime": "nodejs", "code": ""}],
                },
            )
        assert info.value.code == "invalid_flow"
        assert info.value.field == "flow.modules[0].runtime"
        assert "unknown runtime 'nodejs'" in info.value.message

    # Raw frames: broken JSON, not a call, a batch; the connection keeps serving.
    async with serve_runner() as served:
        url = served.url.replace("http", "ws") + "/ws"
        headers = [(b"Authorization", f"Bearer {served.token}".encode())]
        async with open_websocket(url, headers=headers) as ws:
            await ws.send_message("{not json")
            reply = orjson.loads(await ws.get_message())
            assert reply["error"]["code"] == -32700
            assert reply["id"] is None
            await ws.send_message('{"id": 1, "method": "health"}')
            reply = orjson.loads(await ws.get_message())
            assert reply["error"]["code"] == -32600
            assert "jsonrpc" in reply["error"]["message"]
            await ws.send_message('{"jsonrpc": "2.0", "id": 2, "method": "health", "params": [1]}')
            assert orjson.loads(await ws.get_message())["error"]["code"] == -32602
            batch = [
                {"jsonrpc": "2.0", "id": 3, "method": "health"},
                {"jsonrpc": "2.0", "method": "health"},  # a notification: no reply
                {"jsonrpc": "2.0", "id": 4, "method": "getFlow", "params": {"flowId": "x"}},
            ]
            await ws.send_message(orjson.dumps(batch).decode())
            replies = orjson.loads(await ws.get_message())
            assert [r["id"] for r in replies] == [3, 4]
            assert replies[0]["result"]["status"] == "ok"
            assert replies[1]["error"]["data"]["code"] == "flow_not_found"


async def test_every_route_and_the_websocket_need_the_token() -> None:
    async with serve_runner() as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            for method, path in [
                ("GET", "/health"),
                ("GET", "/runtimes"),
                ("GET", "/flows"),
                ("PUT", "/flows/x"),
                ("POST", "/flows/x/modules/a/inputs/in"),
                ("GET", "/openapi.json"),
                ("GET", "/nothing-here"),
            ]:
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": served.token},
                ):
                    response = await http.request(method, path, headers=headers, content=b"{}")
                    assert response.status_code == 401, (method, path, headers)
                    assert response.headers["www-authenticate"].startswith("Bearer")
                    assert response.json()["error"]["field"] == "Authorization"
        async with served.client(token="wrong") as bad:
            with pytest.raises(ApiError) as info:
                await bad.health()
            assert info.value.status == 401
            assert "wrong token" in info.value.message
            with pytest.raises(ApiError) as info:
                async with bad.rpc():
                    pass
            assert info.value.status == 401
        # Browsers pass the token as a query parameter on /ws.
        url = served.url.replace("http", "ws") + f"/ws?access_token={served.token}"
        async with open_websocket(url) as ws:
            await ws.send_message('{"jsonrpc": "2.0", "id": 1, "method": "health"}')
            assert orjson.loads(await ws.get_message())["result"]["status"] == "ok"


async def test_bad_input_gets_a_4xx_naming_the_field_and_loses_nothing() -> None:
    async with serve_runner(max_body=4096) as served, served.client() as client:
        await client.add_or_update_flow(CHAIN)
        await client.start_flow("chain")
        auth = {"Authorization": f"Bearer {served.token}"}
        async with httpx.AsyncClient(base_url=served.url, headers=auth) as http:

            async def expect(
                status: int, method: str, path: str, field: str | None, **kw: Any
            ) -> str:
                response = await http.request(method, path, **kw)
                assert response.status_code == status, (method, path, response.text)
                error = response.json()["error"]
                assert error["status"] == status
                if field is not None:
                    assert error.get("field") == field, error
                return error["message"]

            inject = "/flows/chain/modules/add/inputs/in"
            assert "not valid JSON" in await expect(
                400, "PUT", "/flows/f", "body", content=b"{oops"
            )
            assert "needs a JSON body" in await expect(400, "POST", inject, "body")
            await expect(422, "PUT", "/flows/f", "body", content=b"[1, 2]")
            message = await expect(422, "PUT", "/flows/f", "flow.id", json={**CHAIN, "id": "other"})
            assert "'other'" in message
            assert "'f'" in message
            broken = copy.deepcopy(CHAIN)
            broken["modules"][1]["runtime"] = 42
            broken["wires"].append("label.out -> nowhere.in")
            response = await http.put("/flows/chain2", json={**broken, "id": "chain2"})
            assert response.status_code == 422
            problems = response.json()["error"]["problems"]
            assert {p["path"] for p in problems} >= {"modules[1].runtime"}
            await expect(422, "PUT", "/flows/f?revision=abc", "revision", json=CHAIN)
            await expect(404, "GET", "/flows/ghost", "flowId")
            await expect(404, "GET", "/flows/chain/modules/ghost/state", "moduleId")
            await expect(
                404, "POST", "/flows/chain/modules/add/inputs/nope", "port", json={"msg": 1}
            )
            await expect(404, "GET", "/runtimes/cobol/flows", "runtimeId")
            await expect(422, "POST", inject, "msgs", json={"msgs": 5})
            await expect(422, "POST", inject, "msgs", json={"msg": 1, "msgs": [1]})
            await expect(422, "POST", inject, "msgs", json={"msg": None})
            await expect(422, "POST", inject, "extra", json={"msg": 1, "extra": 2})
            await expect(422, "POST", inject, "flowId", json={"msg": 1, "flowId": "x"})
            await expect(422, "GET", "/flows/chain/logs?limit=0", "limit")
            message = await expect(422, "GET", "/flows/chain/logs?limt=5", "limt")
            assert "allowed here: limit" in message
            await expect(413, "PUT", "/flows/big", "body", content=b"[" + b"1," * 5000 + b"1]")
            await expect(405, "PATCH", "/flows/chain", None)
            await expect(404, "GET", "/nothing-here", None)
            message = await expect(409, "PUT", "/flows/chain?revision=7", "revision", json=CHAIN)
            assert "revision 1, not 7" in message

        # Nothing was lost: the flow still runs and computes.
        async with client.rpc() as rpc:
            await rpc.subscribe(flows=["chain"], outputs=["label.out"])
            await client.inject("chain", "add", "in", [{"n": 1}])
            event = await wait_event(rpc, "output")
        assert event["msgs"] == [{"n": 4, "seen": 1}]
        assert [f["id"] for f in await client.list_flows()] == ["chain"]


async def test_debugging_over_http_and_json_rpc() -> None:
    async with serve_runner() as served, served.client() as client, client.rpc() as rpc:
        await client.add_or_update_flow(CHAIN)
        await client.start_flow("chain")
        await rpc.subscribe(flows=["chain"], kinds=["paused", "step", "queue", "output"])
        auth = {"Authorization": f"Bearer {served.token}"}
        async with httpx.AsyncClient(base_url=served.url, headers=auth) as http:
            response = await http.put(
                "/flows/chain/modules/double/breakpoint", json={"condition": "msg.n >= 3"}
            )
            assert response.json() == {"module": "double", "condition": "msg.n >= 3", "hits": 0}
            bad = await http.put(
                "/flows/chain/modules/double/breakpoint", json={"condition": "n = 3"}
            )
            assert bad.status_code == 422
            assert bad.json()["error"]["field"] == "condition"
            assert (await http.put("/flows/chain/modules/ghost/breakpoint")).status_code == 404

            await client.inject("chain", "add", "in", [{"n": 0}, {"n": 2}, {"n": 5}])
            paused = await wait_event(rpc, "paused")
            assert (paused["module"], paused["msg"]) == ("double", {"n": 3})
            await http.post("/flows/chain/pause")  # returns once nothing is in flight
            queues = (await http.get("/flows/chain/queues")).json()
            assert [q["msg"] for q in queues["double"]] == [{"n": 3}, {"n": 6}]
            assert [q["msg"] for q in queues["label"]] == [{"n": 2}]
            debug = (await http.get("/flows/chain/debug")).json()
            assert debug["paused"] is True
            assert debug["pause"]["reason"] == "breakpoint"
            assert (await http.get("/flows/chain")).json()["paused"] is True

            edited = await http.put("/flows/chain/modules/double/queue/1", json={"msg": {"n": 60}})
            assert edited.json() == {"old": {"n": 6}}
            assert (await wait_event(rpc, "queue"))["new"] == {"n": 60}
            missing = await http.delete("/flows/chain/modules/double/queue/9")
            assert missing.status_code == 404

            step = (await http.post("/flows/chain/step")).json()
            assert step["chain/double"]["inputStates"] == {
                "consumed": {"port": "in", "msg": {"n": 3}},
                "queued": {"in": [{"n": 60}]},
            }
            assert step["chain/double"]["outputStates"] == {"out": [{"n": 6}]}
            assert step["chain/double"]["edits"][0]["new"] == {"n": 60}
            assert step["chain/label"]["outputStates"] == {"out": [{"n": 2, "seen": 1}]}
            assert (await wait_event(rpc, "step"))["modules"] == step

        # The same debugger over JSON-RPC.
        assert await rpc.call("removeBreakPointAtModule", flowModuleId="chain/double") is True
        step = await rpc.call("singleStepFlow")  # the one paused flow
        assert step["chain/double"]["inputStates"]["consumed"] == {"port": "in", "msg": {"n": 60}}
        with pytest.raises(ApiError) as info:
            await rpc.call("setBreakPointAtModule", flowModuleId="chain")
        assert info.value.field is None
        assert "'<flow id>/<module id>'" in info.value.message
        state = await rpc.call("continueFlow", flowId="chain")
        assert state["paused"] is False
        with pytest.raises(ApiError) as info:
            await rpc.call("continueFlow", flowId="chain")
        assert info.value.status == 409
        outputs: list[Any] = []
        while len(outputs) < 2:
            outputs += (await wait_event(rpc, "output"))["msgs"]
        assert outputs == [{"n": 6, "seen": 2}, {"n": 120, "seen": 3}]


async def test_update_a_stopped_flow_keeps_state_and_revisions_guard_updates() -> None:
    async with serve_runner() as served, served.client() as client:
        assert await client.add_or_update_flow(CHAIN, revision=0) is True
        with pytest.raises(ApiError) as info:
            await client.add_or_update_flow(CHAIN, revision=0)
        assert info.value.status == 409
        await client.start_flow("chain")
        await client.inject("chain", "add", "in", [{"n": 1}, {"n": 2}])
        await served.runner.wait_idle("chain")
        await client.stop_flow("chain")
        assert await client.module_state("chain", "label") == {"seen": 2}
        changed = copy.deepcopy(CHAIN)
        changed["modules"][2]["code"] = changed["modules"][2]["code"].replace(
            "'n': msg['n']", "'n': msg['n'], 'v': 2"
        )
        assert await client.add_or_update_flow(changed, revision=1) is False
        detail = await client.get_flow("chain")
        assert detail["revision"] == 2
        assert "'v': 2" in detail["flow"]["modules"][2]["code"]
        await client.start_flow("chain")
        async with client.rpc() as rpc:
            await rpc.subscribe(flows=["chain"], outputs=["label.out"])
            await client.inject("chain", "add", "in", [{"n": 0}])
            event = await wait_event(rpc, "output")
        assert event["msgs"] == [{"n": 2, "v": 2, "seen": 3}]


async def test_module_errors_logs_and_health() -> None:
    flow = {
        "fifoflow": 1,
        "id": "noisy",
        "modules": [
            {
                "id": "m",
                "runtime": "python",
                "code": (
                    "def handle(msg, ctx):\n"
                    "    ctx.log('got', msg)\n"
                    "    if msg == 'boom':\n"
                    "        raise ValueError('no boom please')\n"
                    "    return msg\n"
                ),
            }
        ],
    }
    async with serve_runner() as served, served.client() as client:
        await client.add_or_update_flow(flow)
        await client.start_flow("noisy")
        async with client.rpc() as rpc:
            await rpc.subscribe(flows=["noisy"], kinds=["error", "log"])
            await client.inject("noisy", "m", "in", ["hello", "boom"])
            seen: dict[str, dict[str, Any]] = {}
            with trio.fail_after(20):
                while len(seen) < 2:
                    event = (await rpc.next_event())["event"]
                    if event["kind"] == "error" or event.get("text") == "got hello":
                        seen[event["kind"]] = event
            error, log = seen["error"], seen["log"]
        assert error["error"]["type"] == "ValueError"
        assert error["msg"] == "boom"
        assert log["module"] == "m"
        errors = await client.module_errors("noisy", "m")
        assert [(e["msg"], e["error"]["message"]) for e in errors] == [("boom", "no boom please")]
        lines = [entry["text"] for entry in await client.logs("noisy")]
        assert "got hello" in lines
        assert "got boom" in lines
        assert [e["text"] for e in await client.logs("noisy", limit=1)] == lines[-1:]
        health = await client.health()
        assert health["status"] == "ok"
        assert health["flows"] == {"running": 1}
        assert health["version"] == served.runner.version


async def test_a_stalled_subscriber_never_slows_the_flow_and_is_told_what_it_missed() -> None:
    counter = {
        "fifoflow": 1,
        "id": "fast",
        "modules": [
            {"id": "m", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"}
        ],
    }
    async with serve_runner(subscription_buffer=5) as served, served.client() as client:
        await client.add_or_update_flow(counter)
        await client.start_flow("fast")
        auth = [(b"Authorization", f"Bearer {served.token}".encode())]
        url = served.url.replace("http", "ws") + "/ws"
        # A raw client that subscribes and then does not read at all.
        async with open_websocket(url, headers=auth) as stalled:
            await stalled.send_message(
                '{"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"kinds": ["output"]}}'
            )
            assert "subscription" in orjson.loads(await stalled.get_message())["result"]
            with trio.fail_after(30):
                # ~20 MB of output events: more than the socket buffers can hide
                for _ in range(200):
                    await client.inject("fast", "m", "in", ["x" * 1000] * 100)
                while (await client.get_flow("fast"))["outputs"] < 20_000:
                    await served.runner.wait_idle("fast")
            # Now read: the buffer held a few events, then the count of the rest.
            kinds = []
            with trio.fail_after(10):
                while "missed" not in kinds:
                    event = orjson.loads(await stalled.get_message())["params"]["event"]
                    kinds.append(event["kind"])
                    if event["kind"] == "missed":
                        assert event["count"] > 0
        # The subscriber got its buffer's worth and what the socket held, not all 200.
        assert kinds.count("output") < 200


async def test_an_oversize_websocket_message_closes_that_socket_only() -> None:
    async with serve_runner(max_body=4096) as served:
        url = served.url.replace("http", "ws") + "/ws"
        auth = [(b"Authorization", f"Bearer {served.token}".encode())]
        async with open_websocket(url, headers=auth) as ws:
            call = {"jsonrpc": "2.0", "id": 1, "method": "health", "params": {"pad": "x" * 10_000}}
            await ws.send_message(orjson.dumps(call).decode())
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1009  # message too big
        async with served.client() as client, client.rpc() as rpc:
            assert (await rpc.call("health"))["status"] == "ok"


async def test_updating_a_running_flow_hot_swaps_it() -> None:
    async with serve_runner() as served, served.client() as client, client.rpc() as rpc:
        await client.add_or_update_flow(CHAIN)
        await client.start_flow("chain")
        await rpc.subscribe(flows=["chain"], kinds=["output", "swap"], outputs=["label.out"])
        await client.inject("chain", "add", "in", [{"n": 1}])
        assert (await wait_event(rpc, "output"))["msgs"] == [{"n": 4, "seen": 1}]

        changed = copy.deepcopy(CHAIN)
        changed["modules"][1]["runtime"] = "python"  # double moves from node to python
        changed["modules"][1]["code"] = (
            "def handle(msg, ctx):\n"
            "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
            "    return {'n': msg['n'] * 3}\n"
        )
        auth = {"Authorization": f"Bearer {served.token}"}
        async with httpx.AsyncClient(base_url=served.url, headers=auth) as http:
            response = await http.put("/flows/chain", json=changed)
            assert response.status_code == 200
            body = response.json()
            assert body["created"] is False
            assert body["flow"]["status"] == "running"
            assert body["flow"]["revision"] == 2
            assert body["swap"]["changes"]["moved"] == [
                {"module": "double", "from": "node", "to": "python"}
            ]
            assert body["swap"]["summary"] == "moved: double (node -> python)"
            event = await wait_event(rpc, "swap")
            assert event["summary"] == body["swap"]["summary"]
            assert await client.module_state("chain", "double") == {"seen": 1}

            await client.inject("chain", "add", "in", [{"n": 1}])
            assert (await wait_event(rpc, "output"))["msgs"] == [{"n": 6, "seen": 2}]

            broken = copy.deepcopy(changed)
            broken["modules"][1]["code"] = "def handle(msg, ctx):\n    return msg['n'] +\n"
            response = await http.put("/flows/chain", json=broken)
            assert response.status_code == 422
            error = response.json()["error"]
            assert error["code"] == "swap_rejected"
            assert "SyntaxError" in error["message"]
            assert error["problems"][0]["path"] == "modules.double"

        # The old version runs on; JSON-RPC keeps the seed's answer (false: not created).
        await client.inject("chain", "add", "in", [{"n": 1}])
        assert (await wait_event(rpc, "output"))["msgs"] == [{"n": 6, "seen": 3}]
        assert await rpc.call("addOrUpdateFlow", flow=CHAIN) is False
        answer = await rpc.call("applyFlow", flow=CHAIN)
        assert answer["swap"]["summary"] == "no change"
        assert (await client.get_flow("chain"))["flow"]["modules"][1]["runtime"] == "node"
