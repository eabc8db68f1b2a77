"""``dispatcher serve --fbp-port``: the FBP protocol for the flows a dispatcher deploys.

Real processes: a dispatcher with local runners, the upstream ``fbp-test`` suite and a
WebSocket client on 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import orjson
import trio
import trio_websocket

from tests.dispatcher.test_dispatcher import DispatcherProcess, wait_until
from tests.dispatcher.test_peer_relay import cross_wires, start_zoned

from . import fbp_protocol
from .test_conformance import _unavailable, fbp_url
from .test_session import TALLY, Client

if TYPE_CHECKING:
    from pathlib import Path


def _dispatcher(tmp_path: Path, runners: int, *extra: str) -> DispatcherProcess:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher", heartbeat=1.0)
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher),
        "--local-runners", str(runners), "--fbp-port", "0", *extra,
    ]  # fmt: skip
    return dispatcher


def _ready(dispatcher: DispatcherProcess, n: int) -> list[dict[str, Any]]:
    return wait_until(
        f"{n} ready runner(s)",
        lambda: (
            (rs := dispatcher.api("GET", "/runners"))
            and [r["status"] for r in rs] == ["ready"] * n
            and rs
        ),
        90,
    )


def test_fbp_test_passes_every_case_against_the_dispatcher(tmp_path: Path) -> None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        _unavailable("npm and node are needed to install and run fbp-test")
    try:
        prefix = fbp_protocol.ensure_installed()
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"fbp-protocol {fbp_protocol.VERSION} could not be installed: {exc}")
    dispatcher = _dispatcher(tmp_path, 1)
    dispatcher.start()
    try:
        host, port = fbp_url(dispatcher)
        _ready(dispatcher, 1)
        token = (tmp_path / "dispatcher" / "token").read_text().strip()
        project = tmp_path / "project"
        project.mkdir()
        done = fbp_protocol.run_fbp_test(prefix, project, host=host, port=port, secret=token)
        # the graphs fbp-test built are flows the dispatcher placed
        flows = {f["id"]: f for f in dispatcher.api("GET", "/flows")}
    finally:
        assert dispatcher.stop() == 0, dispatcher.output()
    report = done.stdout + done.stderr
    print(report)
    passing = re.search(r"(\d+) passing", report)
    assert done.returncode == 0, report
    assert passing is not None, report
    assert int(passing.group(1)) == fbp_protocol.CASES, report
    assert not re.search(r"\d+ (failing|pending)", report), report
    assert flows["bar"]["status"] == "placed"
    assert sorted(flows["bar"]["modules"]) == ["Hello", "World"]


async def test_graphs_through_the_dispatcher_deploy_hot_swap_and_report_cross_runner_wires(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "fbp-secret"
    secret_file.write_text("ide-secret\n")
    dispatcher = _dispatcher(tmp_path, 2, "--fbp-secret-file", str(secret_file))
    await trio.to_thread.run_sync(dispatcher.start)
    try:
        host, port = await trio.to_thread.run_sync(fbp_url, dispatcher)
        runners = await trio.to_thread.run_sync(_ready, dispatcher, 2)

        def api(method: str, path: str, **kw: Any) -> Any:
            return trio.to_thread.run_sync(lambda: dispatcher.api(method, path, **kw))

        async with trio_websocket.open_websocket_url(
            f"ws://{host}:{port}/", subprotocols=["noflo"]
        ) as ws:
            client = Client(ws)
            secret = "ide-secret"

            async def call(protocol: str, command: str, **payload: Any) -> dict[str, Any]:
                answer = {
                    "start": "started",
                    "stop": "stopped",
                    "getstatus": "status",
                    "getruntime": "runtime",
                }
                await client.send(protocol, command, secret=secret, **payload)
                name = answer.get(command, command) if protocol != "graph" else command
                return await client.expect(protocol, name, seconds=30)

            runtime = await call("runtime", "getruntime")
            assert runtime["label"].startswith("fifoflow dispatcher")
            assert "protocol:network" in runtime["capabilities"]

            # -- a graph built here is a deployed flow whose document is the graph
            await client.send(
                "component", "source", secret=secret, name="project/Tally",
                language="python", code=TALLY,
            )  # fmt: skip
            await client.expect("component", "component")
            await call("graph", "clear", id="g", name="G", main=True)
            await call("graph", "addnode", graph="g", id="Src", component="core/Repeat")
            await call("graph", "addnode", graph="g", id="Tally", component="project/Tally")
            edge = {"src": {"node": "Src", "port": "out"}, "tgt": {"node": "Tally", "port": "in"}}
            await call("graph", "addedge", graph="g", **edge)
            record = await api("GET", "/flows/g")
            assert record["status"] == "placed"
            await client.send("component", "getsource", secret=secret, name="g")
            source = await client.expect("component", "source")
            graph = orjson.loads(source["code"])
            doc = record["flow"]
            assert [m["id"] for m in doc["modules"]] == list(graph["processes"]) == ["Src", "Tally"]
            assert doc["modules"][1]["code"] == TALLY
            assert doc["wires"] == [
                f"{c['src']['process']}.{c['src']['port']} -> {c['tgt']['process']}.{c['tgt']['port']}"
                for c in graph["connections"]
            ]

            # -- an edit while the network runs: a hot swap on its runner, nothing lost
            started = await call("network", "start", graph="g")
            assert started["started"] is True
            n = 400

            async def feed() -> None:
                for i in range(0, n, 20):
                    await api(
                        "POST",
                        "/flows/g/modules/Src/inputs/in",
                        json={"msgs": list(range(i, i + 20))},
                    )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                await call("graph", "addnode", graph="g", id="Out", component="core/Repeat")
                await call(
                    "graph", "addedge", graph="g",
                    src={"node": "Tally", "port": "out"}, tgt={"node": "Out", "port": "in"},
                )  # fmt: skip
            await trio.to_thread.run_sync(
                lambda: wait_until(
                    "every message counted",
                    lambda: (
                        dispatcher.api("GET", "/flows/g/modules/Tally/state")["state"] == {"n": n}
                    ),
                    60,
                )
            )
            record = await api("GET", "/flows/g")
            assert [m["id"] for m in record["flow"]["modules"]] == ["Src", "Tally", "Out"]
            assert record["status"] == "placed"
            # -- a renamed node keeps its module's state (the new module id is seeded),
            # and so does the rename back
            await call("graph", "renamenode", graph="g", **{"from": "Tally", "to": "Tally 2"})
            state = await api("GET", "/flows/g/modules/Tally_2/state")
            assert state["state"] == {"n": n}
            await call("graph", "renamenode", graph="g", **{"from": "Tally 2", "to": "Tally"})
            state = await api("GET", "/flows/g/modules/Tally/state")
            assert state["state"] == {"n": n}
            status = await call("network", "getstatus", graph="g")
            assert status == {"graph": "g", "running": False, "started": True}
            await call("network", "stop", graph="g")
            status = await call("network", "getstatus", graph="g")
            assert status == {"graph": "g", "running": False, "started": False}

            # -- an edit no runner can take is refused, and the deployed flow stays
            await client.send(
                "graph", "addnode", secret=secret, graph="g", id="Huge",
                component="core/Repeat", metadata={"placement": {"cpus": 100_000}},
            )  # fmt: skip
            refused = await client.expect("graph", "error")
            assert "could not place" in refused["message"], refused
            record = await api("GET", "/flows/g")
            assert [m["id"] for m in record["flow"]["modules"]] == ["Src", "Tally", "Out"]
            assert record["status"] == "placed"
            state = await api("GET", "/flows/g/modules/Tally/state")
            assert state["state"] == {"n": n}  # the module state survived the refusal
            # -- the dispatcher's token is not the secret here (the file names another)
            token = (tmp_path / "dispatcher" / "token").read_text().strip()
            await client.send("runtime", "getruntime", secret=token)
            assert (await client.expect("runtime", "runtime"))["capabilities"] == []

            # -- a graph whose nodes cannot share a runner: its wire crosses runners, and
            # its messages still come back as network:data
            cpus = min(r["hardware"]["capacity"]["cpus"] for r in runners)
            place = {"placement": {"cpus": cpus * 0.6}}
            await call("graph", "clear", id="x")
            await call(
                "graph", "addnode", graph="x", id="A", component="core/Repeat", metadata=place
            )
            await call(
                "graph", "addnode", graph="x", id="B", component="core/Output", metadata=place
            )
            await call(
                "graph", "addedge", graph="x",
                src={"node": "A", "port": "out"}, tgt={"node": "B", "port": "in"},
            )  # fmt: skip
            placement = (await api("GET", "/flows/x"))["placement"]
            assert placement["A"] != placement["B"], placement
            await call("graph", "addinitial", graph="x", src={"data": "across"},
                       tgt={"node": "A", "port": "in"})  # fmt: skip
            await call("network", "start", graph="x")
            data = await client.expect("network", "data", seconds=30, id="A() OUT -> IN B()")
            assert data["data"] == "across"
            assert data["src"] == {"node": "A", "port": "out"}
            output = await client.expect("network", "output", seconds=30)
            assert "across" in output["message"]
            await call("network", "stop", graph="x")

            # -- a watched flow moved by a drain goes on reporting from its new runner
            await call("graph", "removenode", graph="x", id="B")  # x fits on one runner now
            await call("network", "start", graph="g")
            before = (await api("GET", "/flows/g"))["placement"]["Src"]
            moved = await api("POST", f"/runners/{before}/drain")
            assert "g" in moved["moved"], moved
            after = await api("GET", "/flows/g")
            assert after["status"] == "placed"
            assert before not in after["placement"].values(), after
            await api("POST", "/flows/g/modules/Src/inputs/in", json={"msgs": ["moved"]})
            data = await client.expect(
                "network", "data", seconds=30, id="Src() OUT -> IN Tally()", data="moved"
            )
            assert data["graph"] == "g"
            await call("network", "stop", graph="g")
    finally:
        code = await trio.to_thread.run_sync(dispatcher.stop)
        assert code == 0, dispatcher.output()


async def test_a_wire_between_linked_runners_is_network_data_once(tmp_path: Path) -> None:
    """Runners linked to the dispatcher send cross-runner wires to each other directly
    (runner-to-runner relay): the dispatcher never sees those messages; the sending
    runner reports them while the flow is watched, once."""
    dispatcher = _dispatcher(tmp_path, 0)
    await trio.to_thread.run_sync(dispatcher.start)
    runners = []
    try:
        host, port = await trio.to_thread.run_sync(fbp_url, dispatcher)
        for zone in "ab":
            runners.append(
                await trio.to_thread.run_sync(start_zoned, tmp_path, f"r{zone}", zone, dispatcher)
            )
        await trio.to_thread.run_sync(_ready, dispatcher, 2)
        token = (tmp_path / "dispatcher" / "token").read_text().strip()
        async with trio_websocket.open_websocket_url(
            f"ws://{host}:{port}/", subprotocols=["noflo"]
        ) as ws:
            client = Client(ws)

            async def call(command: str, answer: str, **payload: Any) -> dict[str, Any]:
                protocol = "network" if command in ("start", "stop", "getstatus") else "graph"
                await client.send(protocol, command, secret=token, **payload)
                return await client.expect(protocol, answer, seconds=30)

            await call("clear", "clear", id="z")
            for node, component, zone in (("A", "core/Repeat", "a"), ("B", "core/Output", "b")):
                place = {"placement": {"labels": {"zone": zone}}}
                await call("addnode", "addnode", graph="z", id=node, component=component,
                           metadata=place)  # fmt: skip
            await call("addedge", "addedge", graph="z",
                       src={"node": "A", "port": "out"}, tgt={"node": "B", "port": "in"})  # fmt: skip
            await call("addinitial", "addinitial", graph="z", src={"data": "direct"},
                       tgt={"node": "A", "port": "in"})  # fmt: skip
            record = await trio.to_thread.run_sync(dispatcher.api, "GET", "/flows/z")
            placement = record["placement"]
            assert placement["A"] != placement["B"], placement
            await call("start", "started", graph="z")
            output = await client.expect("network", "output", seconds=30)
            assert "direct" in output["message"]
            await call("getstatus", "status", graph="z")
            wires = [
                m["payload"]
                for m in client.seen
                if m["command"] == "data" and m["payload"]["id"] == "A() OUT -> IN B()"
            ]
            assert [w["data"] for w in wires] == ["direct"]
            wire = (await trio.to_thread.run_sync(cross_wires, dispatcher, "z"))["A.out->B.in"]
            assert (wire["dispatcher"], wire["direct"]) == (0, 1), wire  # runner to runner
            await call("stop", "stopped", graph="z")
    finally:
        for runner in runners:
            assert await trio.to_thread.run_sync(runner.stop) == 0, runner.output()
        code = await trio.to_thread.run_sync(dispatcher.stop)
        assert code == 0, dispatcher.output()
