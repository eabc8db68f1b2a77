"""The protocol over a real runner: session.py and server.py, a WebSocket client on 127.0.0.1."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio
import trio_websocket

from fifoflow.api.fbp import FbpRuntime, serve_fbp, session
from fifoflow.flows import dump_flow, parse_flow
from fifoflow.flows.library import ComponentLibrary
from fifoflow.runner import RunnerConfig, open_runner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SECRET = "fbp-secret-0123"
TALLY = """# @description Counts what passes (in its state) and sends it on.
# @inports in
# @outports out


def handle(msg, ctx):
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    return msg
"""


class Client:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.url = ""

    async def send(
        self, protocol: str, command: str, secret: str | None = SECRET, **payload: Any
    ) -> None:
        message: dict[str, Any] = {"protocol": protocol, "command": command, "payload": payload}
        if secret is not None:
            message["secret"] = secret
        await self.ws.send_message(orjson.dumps(message).decode())

    async def expect(
        self, protocol: str, command: str, seconds: float = 20, **match: Any
    ) -> dict[str, Any]:
        """The next message of protocol:command (payload fields matching), or fail."""
        with trio.fail_after(seconds):
            while True:
                message = orjson.loads(await self.ws.get_message())
                self.seen.append(message)
                assert "secret" not in message
                payload = message["payload"]
                assert not (isinstance(payload, dict) and "secret" in payload)
                if message["protocol"] == protocol and message["command"] == command:
                    if all(payload.get(k) == v for k, v in match.items()):
                        return payload

    async def source(self, **payload: Any) -> dict[str, Any]:
        """component:source is answered with the component (its ports) as it now is."""
        await self.send("component", "source", **payload)
        return await self.expect("component", "component")

    async def call(self, protocol: str, command: str, **payload: Any) -> dict[str, Any]:
        """Send a command; its answer (network's are named for the state: start -> started)."""
        answer = {"start": "started", "stop": "stopped", "getstatus": "status"}
        await self.send(protocol, command, **payload)
        return await self.expect(
            protocol, answer.get(command, command) if protocol == "network" else command
        )


@asynccontextmanager
async def fbp_runtime(state_dir: Path) -> AsyncIterator[tuple[Client, FbpRuntime]]:
    async with open_runner(RunnerConfig(state_dir=state_dir)) as runner:
        fbp = FbpRuntime(runner, SECRET, ComponentLibrary(state_dir / "components"))
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve_fbp(
                    fbp, "127.0.0.1:0", shutdown=stop, max_message=1 << 20, task_status=task_status
                )
            )
            async with trio_websocket.open_websocket_url(urls[0], subprotocols=["noflo"]) as ws:
                assert ws.subprotocol == "noflo"
                client = Client(ws)
                client.url = urls[0]
                yield client, fbp
            stop.set()


async def build(client: Client, graph: str = "g") -> None:
    await client.call("graph", "clear", id=graph, name="G", main=True)
    await client.call("graph", "addnode", graph=graph, id="Src", component="core/Repeat")
    await client.call("graph", "addnode", graph=graph, id="Tally", component="project/Tally")
    await client.call(
        "graph",
        "addedge",
        graph=graph,
        src={"node": "Src", "port": "out"},
        tgt={"node": "Tally", "port": "in"},
    )


async def test_a_graph_built_through_the_protocol_is_the_flow_the_runner_reports(
    tmp_path: Path,
) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        created = await client.source(
            name="Tally", library="project", language="python", code=TALLY
        )
        assert created["name"] == "project/Tally"
        assert [p["id"] for p in created["inPorts"]] == ["in"]
        await build(client)
        reported = fbp.runner.flow_document("g")
        graph = fbp.graphs.graphs["g"]
        expected = parse_flow(
            graph.flow_document(
                {n.component: fbp.library.get(n.component) for n in graph.nodes.values()}
            ),
            base_dir=None,
            runtimes=fbp.runner.runtimes,
        )
        assert reported == orjson.loads(dump_flow(expected, inline=True))
        assert [m["id"] for m in reported["modules"]] == ["Src", "Tally"]
        assert reported["modules"][1]["code"] == TALLY
        assert reported["wires"] == ["Src.out -> Tally.in"]
        await client.send("component", "getsource", name="g")
        source = await client.expect("component", "source")
        assert source["language"] == "json"
        assert set(orjson.loads(source["code"])["processes"]) == {"Src", "Tally"}


async def test_an_edit_while_the_network_runs_is_a_hot_swap_that_loses_nothing(
    tmp_path: Path,
) -> None:
    n = 2000
    async with fbp_runtime(tmp_path) as (client, fbp):
        await client.source(name="project/Tally", language="python", code=TALLY)
        await build(client)
        await client.call("network", "start", graph="g")
        runner = fbp.runner
        revision = runner.describe_flow("g")["revision"]

        async def feed() -> None:
            for i in range(n):
                await runner.inject("g", "Src", "in", [i])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            # a new node and wire, and Tally's code changed, while messages flow
            await client.call("graph", "addnode", graph="g", id="Out", component="core/Repeat")
            await client.call(
                "graph",
                "addedge",
                graph="g",
                src={"node": "Tally", "port": "out"},
                tgt={"node": "Out", "port": "in"},
            )
            await client.source(
                name="project/Tally",
                language="python",
                code=TALLY.replace("# @description Counts", "# @description Still counts"),
            )
        with trio.fail_after(30):
            await runner.wait_idle("g")
        assert runner.describe_flow("g")["revision"] == revision + 3
        assert runner.describe_flow("g")["status"] == "running"
        assert runner.module_state("g", "Tally") == {"n": n}  # none lost, state kept
        status = await client.call("network", "getstatus", graph="g")
        assert status == {"graph": "g", "running": False, "started": True}
        await client.call("network", "stop", graph="g")


async def test_network_data_and_output_come_from_the_runner(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, _fbp):
        await client.source(
            name="shell/Upper",
            language="exec",
            code='# @inports in\n# @outports out\nwhile read -r line; do echo "$line" | tr a-z A-Z; done\n',
        )
        await client.call("graph", "clear", id="d")
        await client.call("graph", "addnode", graph="d", id="Up", component="shell/Upper")
        await client.call("graph", "addnode", graph="d", id="Say", component="core/Output")
        await client.call(
            "graph",
            "addedge",
            graph="d",
            src={"node": "Up", "port": "out"},
            tgt={"node": "Say", "port": "in"},
        )
        await client.call(
            "graph",
            "addinitial",
            graph="d",
            src={"data": "hello"},
            tgt={"node": "Up", "port": "in"},
        )
        await client.send("network", "start", graph="d")
        await client.expect("network", "started", graph="d")
        iip = await client.expect("network", "data", id="DATA -> IN Up()")
        assert iip == {
            "id": "DATA -> IN Up()",
            "graph": "d",
            "tgt": {"node": "Up", "port": "in"},
            "data": "hello",
        }
        edge = await client.expect("network", "data", id="Up() OUT -> IN Say()")
        assert edge["data"] == "HELLO"
        output = await client.expect("network", "output")
        assert output["message"] == "HELLO"
        # started again while it runs: no second round of IIPs
        await client.call("network", "start", graph="d")
        status = await client.call("network", "getstatus", graph="d")
        assert status == {"graph": "d", "running": False, "started": True}
        assert [m["payload"].get("id") for m in client.seen].count("DATA -> IN Up()") == 1
        stopped = await client.call("network", "stop", graph="d")
        assert stopped["started"] is False
        assert set(stopped) == {"graph", "time", "uptime", "running", "started"}
        await client.call("network", "getstatus", graph="d")
        assert [m["command"] for m in client.seen].count("stopped") == 1


async def test_protocol_errors(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        await client.ws.send_message("{not json")
        assert "not a JSON message" in (await client.expect("runtime", "error"))["message"]
        await client.ws.send_message("[1]")
        await client.expect("runtime", "error")
        # no secret: the runtime says what it is, and permits nothing
        await client.send("runtime", "getruntime", secret=None)
        runtime = await client.expect("runtime", "runtime")
        assert runtime["capabilities"] == []
        assert "protocol:graph" in runtime["allCapabilities"]
        await client.send("graph", "clear", secret="wrong", id="x")
        assert "access denied" in (await client.expect("graph", "error"))["message"]
        assert "x" not in fbp.graphs.graphs
        # the secret may come in the payload, as older clients send it
        await client.ws.send_message(
            orjson.dumps(
                {"protocol": "graph", "command": "clear", "payload": {"id": "x", "secret": SECRET}}
            ).decode()
        )
        await client.expect("graph", "clear", id="x")
        # what is not implemented is refused, and not claimed
        await client.send("runtime", "getruntime", secret="wrong")
        assert "graph" not in await client.expect("runtime", "runtime")  # not even its id
        await client.send("runtime", "getruntime")
        runtime = await client.expect("runtime", "runtime")
        assert runtime["graph"] == "x"
        assert "protocol:runtime" not in runtime["capabilities"]
        assert "network:persist" not in runtime["capabilities"]
        await client.send("network", "persist")
        assert "not supported" in (await client.expect("network", "error"))["message"]
        await client.send("trace", "start", graph="x")
        await client.expect("trace", "error")
        await client.send("graph", "addgroupz", graph="x")
        await client.expect("graph", "error")
        # a refused edit changes neither the graph nor the runner's flow
        await client.call("graph", "addnode", graph="x", id="A", component="core/Repeat")
        before = fbp.runner.flow_document("x")
        await client.send(
            "graph",
            "addedge",
            graph="x",
            src={"node": "A", "port": "nope"},
            tgt={"node": "A", "port": "in"},
        )
        assert "Requested port not found" in (await client.expect("graph", "error"))["message"]
        await client.send("network", "start", graph="nope")
        assert (await client.expect("network", "error"))["message"] == "Requested graph not found"
        # component code that does not load: refused, the graph runs on the old code
        await client.source(name="project/T", language="python", code=TALLY)
        await client.call("graph", "addnode", graph="x", id="T", component="project/T")
        await client.call("network", "start", graph="x")
        await client.send(
            "component", "source", name="project/T", language="python", code="def handle(:\n"
        )
        assert "refused" in (await client.expect("component", "error"))["message"]
        assert fbp.library.get("project/T").code == TALLY
        await client.send("component", "source", name="project/T", language="cobol", code="x")
        assert "unsupported language" in (await client.expect("component", "error"))["message"]
        await client.send("component", "getsource", name="core/Nope")
        await client.expect("component", "error")
        assert fbp.runner.flow_document("x")["modules"][0] == before["modules"][0]
        assert len(fbp.runner.flow_document("x")["modules"]) == 2
        await client.call("network", "stop", graph="x")


async def test_a_flow_that_is_not_a_graph_is_left_alone(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        doc = {
            "fifoflow": 1,
            "id": "mine",
            "modules": [{"id": "a", "runtime": "python", "code": TALLY}],
        }
        await fbp.runner.apply_flow(parse_flow(doc, base_dir=None, runtimes=fbp.runner.runtimes))
        await client.send("graph", "clear", id="mine")
        assert "not an FBP graph" in (await client.expect("graph", "error"))["message"]
        assert fbp.runner.flow_document("mine")["modules"][0]["id"] == "a"
        assert "mine" not in fbp.graphs.graphs


async def test_graphs_are_kept_across_restarts(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        fbp.graph_dir = tmp_path / "graphs"
        await client.source(name="project/Tally", language="python", code=TALLY)
        await build(client)
        await client.call(
            "graph", "addinitial", graph="g", src={"data": 7}, tgt={"node": "Src", "port": "in"}
        )
        kept = fbp.graphs.graphs["g"]
    async with open_runner(RunnerConfig(state_dir=tmp_path)) as runner:
        again = FbpRuntime(
            runner, SECRET, ComponentLibrary(tmp_path / "components"), graph_dir=tmp_path / "graphs"
        )
        assert again.restore() == []
        assert again.graphs.graphs["g"] == kept
        assert again.graphs.main == "g"
        (tmp_path / "graphs" / "broken.json").write_text("{")
        problems = FbpRuntime(
            runner, SECRET, ComponentLibrary(), graph_dir=tmp_path / "graphs"
        ).restore()
        assert len(problems) == 1
        assert "broken.json" in problems[0]


async def test_a_client_that_falls_behind_loses_events_and_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "CLIENT_BUFFER", 5)
    async with fbp_runtime(tmp_path) as (client, fbp):
        await client.call("graph", "clear", id="f")
        await client.call("graph", "addnode", graph="f", id="A", component="core/Repeat")
        await client.call("graph", "addnode", graph="f", id="B", component="core/Drop")
        edge = {"src": {"node": "A", "port": "out"}, "tgt": {"node": "B", "port": "in"}}
        await client.call("graph", "addedge", graph="f", **edge)
        await client.call("network", "start", graph="f")
        await fbp.runner.inject("f", "A", "in", list(range(200)))  # one batch: 200 events at once
        notice = await client.expect("network", "error")
        assert "were dropped" in notice["message"]
        data = [m for m in client.seen if m["command"] == "data"]
        assert 0 < len(data) < 200
        # it keeps working
        status = await client.call("network", "getstatus", graph="f")
        assert status["started"] is True


async def test_a_javascript_component_from_the_ide_runs_in_node(tmp_path: Path) -> None:
    code = (
        "// @inports in\n// @outports out\nexports.handle = (msg, ctx) => ({ twice: msg * 2 });\n"
    )
    async with fbp_runtime(tmp_path) as (client, fbp):
        made = await client.source(name="Twice", library="js", language="javascript", code=code)
        assert made["name"] == "js/Twice"
        await client.send("component", "getsource", name="js/Twice")
        source = await client.expect("component", "source")
        assert source == {"name": "Twice", "library": "js", "language": "javascript", "code": code}
        await client.call("graph", "clear", id="j")
        await client.call("graph", "addnode", graph="j", id="T", component="js/Twice")
        await client.call("graph", "addnode", graph="j", id="D", component="core/Drop")
        edge = {"src": {"node": "T", "port": "out"}, "tgt": {"node": "D", "port": "in"}}
        await client.call("graph", "addedge", graph="j", **edge)
        await client.call(
            "graph", "addinitial", graph="j", src={"data": 21}, tgt={"node": "T", "port": "in"}
        )
        assert fbp.runner.flow_document("j")["modules"][0]["runtime"] == "node"
        await client.send("network", "start", graph="j")
        data = await client.expect("network", "data", id="T() OUT -> IN D()")
        assert data["data"] == {"twice": 42}
        await client.call("network", "stop", graph="j")


async def test_networks_are_watched_only_while_an_ide_is_connected(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (bystander, fbp):  # never sends: not authorized
        async with trio_websocket.open_websocket_url(bystander.url, subprotocols=["noflo"]) as ws:
            ide = Client(ws)
            await ide.call("graph", "clear", id="w")
            await ide.call("graph", "addnode", graph="w", id="A", component="core/Repeat")
            await ide.call("graph", "addnode", graph="w", id="B", component="core/Drop")
            edge = {"src": {"node": "A", "port": "out"}, "tgt": {"node": "B", "port": "in"}}
            await ide.call("graph", "addedge", graph="w", **edge)
            await ide.call("network", "start", graph="w")
            assert fbp.runner.flow("w").external_routing
            unwatched = fbp.watch_changed()
        # the IDE left: the fast wiring is back, the network runs on
        with trio.fail_after(20):
            await unwatched.wait()
        assert not fbp.runner.flow("w").external_routing
        assert fbp.runner.describe_flow("w")["status"] == "running"
        async with trio_websocket.open_websocket_url(bystander.url, subprotocols=["noflo"]) as ws:
            ide = Client(ws)
            await ide.call("network", "getstatus", graph="w")
            assert fbp.runner.flow("w").external_routing
            await fbp.runner.inject("w", "A", "in", ["again"])
            data = await ide.expect("network", "data", id="A() OUT -> IN B()")
            assert data["data"] == "again"
            await ide.call("network", "stop", graph="w")


async def test_clearing_a_running_graph_stops_its_network(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        await client.call("graph", "clear", id="c", name="first")
        await client.call("graph", "addnode", graph="c", id="A", component="core/Repeat")
        await client.call("network", "start", graph="c")
        assert fbp.runner.describe_flow("c")["status"] == "running"
        await client.send("graph", "clear", id="c", name="second")
        stopped = await client.expect("network", "stopped", graph="c")
        assert stopped["running"] is False
        await client.expect("graph", "clear", id="c", name="second")
        assert fbp.runner.flow_document("c")["modules"] == []
        assert fbp.runner.describe_flow("c")["status"] == "stopped"
        status = await client.call("network", "getstatus", graph="c")
        assert status == {"graph": "c", "running": False, "started": False}


async def test_a_renamed_node_keeps_its_state_in_a_running_network(tmp_path: Path) -> None:
    async with fbp_runtime(tmp_path) as (client, fbp):
        await client.source(name="project/Tally", language="python", code=TALLY)
        await build(client)
        await client.call("network", "start", graph="g")
        await fbp.runner.inject("g", "Src", "in", [1, 2, 3])
        with trio.fail_after(20):
            await fbp.runner.wait_idle("g")
        await client.call("graph", "renamenode", graph="g", **{"from": "Tally", "to": "Tally 2"})
        assert [m["id"] for m in fbp.runner.flow_document("g")["modules"]] == ["Src", "Tally_2"]
        assert fbp.runner.module_state("g", "Tally_2") == {"n": 3}
        await fbp.runner.inject("g", "Src", "in", [4])
        with trio.fail_after(20):
            await fbp.runner.wait_idle("g")
        assert fbp.runner.module_state("g", "Tally_2") == {"n": 4}
        data = await client.expect("network", "data", data=4, id="Src() OUT -> IN Tally 2()")
        assert data["tgt"] == {"node": "Tally 2", "port": "in"}
        await client.call("network", "stop", graph="g")
