"""Every example flow gives the same outputs every way it can run here: locally
(``fifoflow run``), on a served runner (``fifoflow flow add`` + ``fifoflow inject``) and
through a dispatcher with a local runner (``fifoflow dispatcher deploy`` + the dispatcher's
inject). A flow sent over an API has no folder: the exec example's ``wrap.sh`` travels in
its module's ``files`` and runs in the module's private working directory, removed with
the flow. (``browser-demo`` needs a web page: tests/browser runs it.)"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from fifoflow.api.client import RunnerClient
from fifoflow.flows import load_flow

from ...conftest import REPO
from ...dispatcher.test_dispatcher import DispatcherProcess, wait_until
from ..helpers import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLES = REPO / "flows" / "examples"
RUNTIMES = {"python", "node", "exec", "browser", "go"}
#: example -> the messages its README sends to the entry port
INPUTS: dict[str, list[Any]] = {
    "hello": [{"name": "world"}],
    "fan-out-fan-in": ["the quick brown fox", "hello world"],
    "counter": ["apple", "pear", "apple"],
    "exec": ["fifo"],
    "go": ["the cat and the hat"],
}
CLI = [sys.executable, "-m", "fifoflow.api"]


def test_every_runnable_example_is_listed() -> None:
    examples = {p.parent.name for p in EXAMPLES.glob("*/flow.json")}
    assert examples - set(INPUTS) == {"browser-demo"}


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("served") / "state")
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0


class LocalRunnersDispatcher(DispatcherProcess):
    def command(self) -> list[str]:
        return [*super().command(), "--local-runners", "1"]


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatcherProcess]:
    proc = LocalRunnersDispatcher(tmp_path_factory.mktemp("dispatched") / "dispatcher")
    proc.start()
    try:
        wait_until(
            "the local runner",
            lambda: [r["status"] for r in proc.api("GET", "/runners")] == ["ready"],
            timeout=60,
        )
        yield proc
    finally:
        assert proc.stop() == 0


def entry(example: str) -> tuple[str, str]:
    flow = load_flow(EXAMPLES / example / "flow.json", runtimes=RUNTIMES)
    [(module, port)] = flow.entry_ports()
    return module, port


def canonical(msgs: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in msgs)


async def cli(*args: str, env: dict[str, str] | None = None) -> str:
    with trio.fail_after(120):
        done = await trio.run_process(
            [*CLI, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **(env or {})},
        )
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    return done.stdout.decode()


async def run_locally(example: str) -> list[Any]:
    inputs = [a for m in INPUTS[example] for a in ("--input", orjson.dumps(m).decode())]
    text = await cli("run", str(EXAMPLES / example / "flow.json"), "--raw", "--quiet", *inputs)
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def outputs_while(url: str, token: str, flow_id: str, count: int, send: Any) -> list[Any]:
    """Subscribe to the flow's outputs on the runner at ``url``, ``await send()``, and
    collect ``count`` output messages."""
    got: list[Any] = []
    async with RunnerClient(url, token) as client, client.rpc() as rpc:
        await rpc.subscribe(flows=[flow_id], kinds=["output", "error"])
        await send()
        with trio.fail_after(60):
            while len(got) < count:
                event = (await rpc.next_event())["event"]
                assert event["kind"] == "output", event
                got.extend(event["msgs"])
    return got


@pytest.mark.parametrize("example", sorted(INPUTS))
async def test_served_runner_gives_what_run_gives(live_runner: ServerProcess, example: str) -> None:
    expected = await run_locally(example)
    assert expected, f"{example} printed nothing locally"
    env = {
        "FIFOFLOW_URL": live_runner.url,
        "FIFOFLOW_TOKEN_FILE": str(live_runner.state_dir / "token"),
    }
    flow_id = orjson.loads((EXAMPLES / example / "flow.json").read_bytes())["id"]
    module, port = entry(example)
    await cli("flow", "add", str(EXAMPLES / example / "flow.json"), "--start", env=env)
    try:

        async def inject() -> None:
            msgs = [orjson.dumps(m).decode() for m in INPUTS[example]]
            await cli("inject", flow_id, f"{module}.{port}", *msgs, env=env)

        token = (live_runner.state_dir / "token").read_text().strip()
        got = await outputs_while(live_runner.url, token, flow_id, len(expected), inject)
        assert canonical(got) == canonical(expected)
    finally:
        await cli("flow", "remove", flow_id, env=env)
    # what the flow's modules carried is gone with it
    assert not (live_runner.state_dir / "work" / flow_id).exists()


@pytest.mark.parametrize("example", sorted(INPUTS))
async def test_dispatcher_with_a_local_runner_gives_what_run_gives(
    live_dispatcher: DispatcherProcess, example: str
) -> None:
    expected = await run_locally(example)
    d = live_dispatcher
    env = {
        "FIFOFLOW_DISPATCHER_URL": d.url,
        "FIFOFLOW_DISPATCHER_TOKEN_FILE": str(d.state_dir / "token"),
    }
    flow_id = orjson.loads((EXAMPLES / example / "flow.json").read_bytes())["id"]
    module, port = entry(example)
    [runner_dir] = (d.state_dir / "local-runners").iterdir()
    url = (runner_dir / "url").read_text().strip()
    token = (runner_dir / "token").read_text().strip()
    placed = await cli("dispatcher", "deploy", str(EXAMPLES / example / "flow.json"), env=env)
    assert placed.startswith(f"flow {flow_id!r} placed"), placed
    try:

        async def inject() -> None:
            await trio.to_thread.run_sync(
                lambda: d.api(
                    "POST",
                    f"/flows/{flow_id}/modules/{module}/inputs/{port}",
                    json={"msgs": INPUTS[example]},
                )
            )

        got = await outputs_while(url, token, flow_id, len(expected), inject)
        assert canonical(got) == canonical(expected)
    finally:
        await trio.to_thread.run_sync(lambda: d.api("DELETE", f"/flows/{flow_id}"))
    assert not (runner_dir / "work" / flow_id).exists()
