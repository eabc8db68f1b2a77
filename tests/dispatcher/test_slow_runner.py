"""One slow runner does not stall the dispatcher: a runner that takes a call and never
answers costs that call the dispatcher's call timeout, and nothing else.

A silent runner registers over the real control link (the runner's side of the protocol,
spoken by hand here) and never answers the dispatcher's calls, but for a ``deploy`` of
the flow ``quiet``. A real runner (``fifoflow runner serve --dispatcher``) takes the
other flows. Labels decide which runner a flow asks for.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import trio
import trio_websocket

from ..api.helpers import ServerProcess
from .test_dispatcher import DispatcherProcess, linked_id, wait_until

if TYPE_CHECKING:
    from pathlib import Path

CALL_TIMEOUT = 3.0


def _flow(flow_id: str, kind: str, cpus: float = 0) -> dict[str, Any]:
    return {
        "fifoflow": 1,
        "id": flow_id,
        "modules": [
            {
                "id": "m",
                "runtime": "python",
                "code": "def handle(msg, ctx):\n    return msg\n",
                "placement": {"labels": {"kind": kind}, "cpus": cpus},
            }
        ],
    }


class SilentRunner:
    """A runner over the real link that never answers the dispatcher (but a deploy of
    ``quiet``); it says hello, reports hardware, says ready and keeps its heartbeats."""

    def __init__(self, url: str, token: str, heartbeat: float) -> None:
        self.url = url.replace("http", "ws") + "/link"
        self.token = token
        self.heartbeat = heartbeat
        self.runner_id = ""
        self.ready = trio.Event()
        #: cancel to cut the link
        self.scope = trio.CancelScope()
        #: method -> the flows the dispatcher called it for, in order
        self.calls: dict[str, list[str]] = {}
        #: set when the dispatcher calls a method (replaced each time)
        self.called: dict[str, trio.Event] = {}
        self._ids = itertools.count(1)
        self._replies: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}

    def wait_called(self, method: str) -> trio.Event:
        return self.called.setdefault(method, trio.Event())

    async def run(self) -> None:
        with self.scope:
            await self._run()

    async def _run(self) -> None:
        async with (
            trio_websocket.open_websocket_url(self.url) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._read, ws)
            identity = await self._call(ws, "register", token=self.token, name="silent")
            self.runner_id = identity["runnerId"]
            await self._call(ws, "hello", runnerId=self.runner_id, secret=identity["secret"])
            hardware = {
                "cpus": 1,
                "capacity": {"cpus": 1},
                "runtimes": ["python"],
                "labels": {"kind": "silent"},
            }
            await self._call(ws, "hardware", full=hardware)
            await self._call(ws, "ready", flows=[])
            self.ready.set()
            while True:
                await trio.sleep(self.heartbeat)  # the heartbeat's own period, not a wait
                await self._call(ws, "heartbeat")

    async def _call(
        self, ws: trio_websocket.WebSocketConnection, method: str, **params: Any
    ) -> Any:
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._replies[request_id] = send
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        await ws.send_message(orjson.dumps(message).decode())
        reply = await receive.receive()
        assert "error" not in reply, reply
        return reply["result"]

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            message = orjson.loads(await ws.get_message())
            if "method" not in message:
                self._replies.pop(message["id"]).send_nowait(message)
                continue
            method, params = message["method"], message["params"]
            flow_id = params.get("flowId") or params.get("flow", {}).get("id")
            self.calls.setdefault(method, []).append(flow_id)
            self.called.pop(method, trio.Event()).set()
            if method == "deploy" and flow_id == "quiet":
                reply = {"jsonrpc": "2.0", "id": message["id"], "result": {"created": True}}
                await ws.send_message(orjson.dumps(reply).decode())
            # anything else: never answered


async def test_a_silent_runner_costs_its_calls_the_timeout_and_stalls_nothing_else(
    tmp_path: Path,
) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--call-timeout", str(CALL_TIMEOUT),
    ]  # fmt: skip
    dispatcher.start()
    real = ServerProcess(
        tmp_path / "real",
        *("--dispatcher", dispatcher.url, "--registration-token", dispatcher.token()),
        *("--label", "kind=real"),
    )
    real.start()
    try:
        real_id = linked_id(real)
        # A python runtime up on the real runner, so its deploys answer well in time (on
        # a busy machine the first one may not: it is placed when deployed again).
        wait_until(
            "the warm-up flow to be placed on the real runner",
            lambda: (
                dispatcher.api("PUT", "/flows/warm", json=_flow("warm", "real"))["runner"]
                == real_id
            ),
            timeout=60,
        )
        silent = SilentRunner(dispatcher.url, dispatcher.token(), dispatcher.heartbeat)
        token = (dispatcher.state_dir / "token").read_text().strip()
        async with (
            httpx.AsyncClient(
                base_url=dispatcher.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as http,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(silent.run)
            with trio.fail_after(20):
                await silent.ready.wait()
            await _silent_deploy_is_a_refusal_and_others_are_placed_meanwhile(
                http, silent, real_id, nursery
            )
            await _a_forwarded_call_to_the_silent_runner_is_a_504(http, silent, real_id, nursery)
            nursery.cancel_scope.cancel()
    finally:
        real.stop()
        dispatcher.stop()


async def _silent_deploy_is_a_refusal_and_others_are_placed_meanwhile(
    http: httpx.AsyncClient, silent: SilentRunner, real_id: str, nursery: trio.Nursery
) -> None:
    slow: dict[str, Any] = {}
    slow_done = trio.Event()

    async def deploy_slow() -> None:
        start = time.monotonic()
        slow["response"] = await http.put(
            "/flows/slowflow", json=_flow("slowflow", "silent", cpus=1)
        )
        slow["seconds"] = time.monotonic() - start
        slow_done.set()

    deploy_called = silent.wait_called("deploy")
    nursery.start_soon(deploy_slow)
    with trio.fail_after(10):
        await deploy_called.wait()
    assert silent.calls["deploy"] == ["slowflow"]

    # While the silent runner holds slowflow's deploy, another flow is placed.
    start = time.monotonic()
    other = await http.put("/flows/other", json=_flow("other", "real"))
    other_seconds = time.monotonic() - start
    assert other.status_code == 200, other.text
    assert (other.json()["status"], other.json()["runner"]) == ("placed", real_id)
    assert not slow_done.is_set(), f"other took {other_seconds:.2f} s, after slowflow's answer"
    # ...and the API answers reads too.
    assert (await http.get("/flows")).status_code == 200
    # The CPU slowflow's deploy holds is not promised to another flow meanwhile.
    crowd = await http.put("/flows/crowd", json=_flow("crowd", "silent", cpus=1))
    assert crowd.json()["status"] == "pending", crowd.text
    assert f"at most 0 CPUs and inf free ({silent.runner_id})" in crowd.json()["reason"]
    assert silent.calls["deploy"] == ["slowflow"]
    assert not slow_done.is_set()

    with trio.fail_after(CALL_TIMEOUT + 10):
        await slow_done.wait()
    answer = slow["response"]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "pending"
    assert (
        f"runner {silent.runner_id} refused: did not answer within {CALL_TIMEOUT:g} s"
        in (body["reason"])
    ), body["reason"]
    assert CALL_TIMEOUT <= slow["seconds"] < CALL_TIMEOUT + 5, slow["seconds"]
    events = (await http.get("/events")).json()
    [refused] = [e for e in events if e["kind"] == "refused" and e.get("flow") == "slowflow"]
    assert refused["runner"] == silent.runner_id


async def _a_forwarded_call_to_the_silent_runner_is_a_504(
    http: httpx.AsyncClient, silent: SilentRunner, real_id: str, nursery: trio.Nursery
) -> None:
    placed = await http.put("/flows/quiet", json=_flow("quiet", "silent"))
    assert placed.status_code == 200, placed.text
    assert (placed.json()["status"], placed.json()["runner"]) == ("placed", silent.runner_id)

    answered: dict[str, Any] = {}
    done = trio.Event()

    async def read_state() -> None:
        start = time.monotonic()
        answered["response"] = await http.get("/flows/quiet/modules/m/state")
        answered["seconds"] = time.monotonic() - start
        done.set()

    state_called = silent.wait_called("state")
    nursery.start_soon(read_state)
    with trio.fail_after(10):
        await state_called.wait()
    # Forwarding to the real runner goes on meanwhile.
    other = await http.get("/flows/other/modules/m/state")
    assert other.status_code == 200, other.text
    assert not done.is_set()

    with trio.fail_after(CALL_TIMEOUT + 10):
        await done.wait()
    response = answered["response"]
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "runner_timeout"
    assert error["message"] == (
        f"runner {silent.runner_id} did not answer state within {CALL_TIMEOUT:g} s"
    )
    assert CALL_TIMEOUT <= answered["seconds"] < CALL_TIMEOUT + 5
    # the same for an injection
    inject = await http.post("/flows/quiet/modules/m/inputs/in", json={"msgs": [1]})
    assert inject.status_code == 504, inject.text
    assert silent.runner_id in inject.json()["error"]["message"]

    # A link that closes while a call waits: "send it again" (409), not a bad request.
    answered.clear()
    done = trio.Event()
    state_called = silent.wait_called("state")
    nursery.start_soon(read_state)
    with trio.fail_after(10):
        await state_called.wait()
    silent.scope.cancel()
    with trio.fail_after(CALL_TIMEOUT):  # well before the deadline: the link closed
        await done.wait()
    response = answered["response"]
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "flow_pending"
    assert error["message"] == (
        f"runner {silent.runner_id} went away before it answered state; send the call again"
    )
