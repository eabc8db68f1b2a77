"""Runs over the Runner API of a runner live_runner alone (a real ``fifoflow runner serve``):
REST and JSON-RPC round trips, run events on ``/ws``, bad bodies named by field, 404,
409, the token; and the ``fifoflow runs`` commands with their exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio

from fifoflow.api.client import ApiError, RunnerClient

from ..dispatcher.test_dispatcher import wait_until
from .helpers import CHAIN, ServerProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


RAISES: dict[str, Any] = {
    "fifoflow": 1,
    "id": "raises",
    "modules": [
        {
            "id": "boom",
            "runtime": "python",
            "code": "def handle(msg, ctx):\n    raise ValueError('no')\n",
        }
    ],
    "wires": [],
}
SLOW: dict[str, Any] = {
    "fifoflow": 1,
    "id": "slow",
    "modules": [
        {
            "id": "wait",
            "runtime": "python",
            "code": "import time\ndef handle(msg, ctx):\n    time.sleep(30)\n    return msg\n",
        }
    ],
    "wires": [],
}


#: the live runner's process by its URL (its output: the run log lines)
SERVERS: dict[str, ServerProcess] = {}


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    state = tmp_path_factory.mktemp("runs") / "state"
    server = ServerProcess(state, "--log-format", "json")
    url = server.start()
    SERVERS[url] = server
    try:
        yield url, (state / "token").read_text().strip(), state
    finally:
        assert server.stop() == 0


@pytest.fixture
async def client(live_runner: tuple[str, str, Path]) -> AsyncIterator[RunnerClient]:
    url, token, _ = live_runner
    async with RunnerClient(url, token) as c:
        yield c


def inline(document: dict[str, Any], *msgs: Any, **options: Any) -> dict[str, Any]:
    return {"document": document, "inputs": [{"msg": m} for m in msgs], **options}


# ---------------------------------------------------------------------- REST


async def test_submit_get_list_cancel_and_the_result_over_rest(client: RunnerClient) -> None:
    # held back by its label (no worker carries it), so it stays queued until canceled
    view = await client.submit_run(inline(CHAIN, {"n": 1}, labels={"gpu": "none"}, priority=5))
    run_id = view["id"]
    assert view["state"] == "queued"
    assert view["flow"] == "chain"
    assert view["priority"] == 5
    assert view["events"][0]["state"] == "queued"
    assert (await client.get_run(run_id))["id"] == run_id
    assert run_id in [r["id"] for r in await client.list_runs(state="queued")]
    assert run_id in [r["id"] for r in await client.list_runs(flow="chain")]
    assert run_id not in [r["id"] for r in await client.list_runs(flow="other")]
    assert run_id not in [r["id"] for r in await client.list_runs(state="succeeded")]
    assert len(await client.list_runs(limit=1)) == 1

    with pytest.raises(ApiError) as early:
        await client.run_result(run_id)
    assert (early.value.status, early.value.code) == (409, "run_state")

    canceled = await client.cancel_run(run_id, "changed my mind")
    assert canceled["state"] == "canceled"
    assert canceled["reason"] == "changed my mind"
    result = await client.run_result(run_id)
    assert result["state"] == "canceled"
    assert result["runId"] == run_id
    assert [o async for o in client.run_outputs(run_id)] == []
    assert await client.run_logs(run_id) == []
    with pytest.raises(ApiError) as again:
        await client.cancel_run(run_id)
    assert again.value.status == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [{"msg": 1}]}, "flow"),
        (inline(CHAIN, 1) | {"inputs": [{"msg": 1, "to": "nowhere.in"}]}, "inputs[0].to"),
        (inline(CHAIN, 1, maxAttempts=0), "maxAttempts"),
        (inline(CHAIN, 1, failOn="sometimes"), "failOn"),
        (inline(CHAIN, 1, lease=0.5), "lease"),
        (inline(CHAIN, 1, colour="red"), "colour"),
        (inline({**CHAIN, "modules": [{**CHAIN["modules"][0], "runtime": "cobol"}]}, 1), None),
    ],
)
async def test_a_bad_submission_is_a_422_naming_the_field(
    client: RunnerClient, body: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(ApiError) as refused:
        await client.submit_run(body)
    assert refused.value.status == 422
    if field is not None:
        assert refused.value.field == field
    else:  # an invalid inline document: the path is under document.
        assert (refused.value.field or "").startswith("document.modules[0].runtime")


async def test_unknown_runs_and_flows_are_404(client: RunnerClient) -> None:
    for call in (client.get_run, client.run_result, client.cancel_run, client.run_logs):
        with pytest.raises(ApiError) as missing:
            await call("r0000000000000000")
        assert (missing.value.status, missing.value.field) == (404, "runId")
    with pytest.raises(ApiError) as no_flow:
        await client.submit_run({"flow": "never-stored"})
    assert no_flow.value.status == 404


async def test_runs_need_the_token(live_runner: tuple[str, str, Path]) -> None:
    url, _, _ = live_runner
    async with RunnerClient(url, "wrong-token") as c:
        for call in (c.list_runs(), c.submit_run(inline(CHAIN, 1))):
            with pytest.raises(ApiError) as denied:
                await call
            assert denied.value.status == 401


# ---------------------------------------------------------------------- JSON-RPC and events


async def test_run_methods_and_events_over_json_rpc(client: RunnerClient) -> None:
    async with client.rpc() as rpc:
        await rpc.subscribe(kinds=["run", "run-progress"])
        view = await rpc.call("submitRun", **inline(CHAIN, {"n": 1}, labels={"gpu": "none"}))
        run_id = view["id"]
        assert (await rpc.call("getRun", runId=run_id))["state"] == "queued"
        listed = await rpc.call("listRuns", state="queued", flow="chain")
        assert run_id in [r["id"] for r in listed]
        with pytest.raises(ApiError) as early:
            await rpc.call("getRunResult", run_id)
        assert (early.value.status, early.value.code) == (409, "run_state")
        assert (await rpc.call("cancelRun", runId=run_id))["state"] == "canceled"
        assert (await rpc.call("getRunResult", runId=run_id))["state"] == "canceled"
        with pytest.raises(ApiError) as bad:
            await rpc.call("submitRun", **inline(CHAIN, 1, maxAttempts=0))
        assert bad.value.field == "maxAttempts"
        states = []
        with trio.fail_after(10):
            while "canceled" not in states:
                event = (await rpc.next_event())["event"]
                if event.get("run") == run_id and event["kind"] == "run":
                    assert event["flow"] == "chain"
                    states.append(event["state"])
        assert states == ["queued", "canceled"]


# ---------------------------------------------------------------------- runs that execute


async def test_a_python_node_run_succeeds_with_its_outputs(client: RunnerClient) -> None:
    view = await client.submit_run(inline(CHAIN, {"n": 1}, {"n": 2}))
    done = await client.wait_run(view["id"], timeout=60)
    assert done["state"] == "succeeded", done
    result = await client.run_result(view["id"])
    assert [o["msg"]["n"] for o in result["outputs"]] == [4, 6]
    assert [o["msg"] for o in [o async for o in client.run_outputs(view["id"])]] == [
        o["msg"] for o in result["outputs"]
    ]
    assert result["handled"] == {"add": 2, "double": 2, "label": 2}


async def test_each_run_logs_its_lifecycle_as_json_lines(
    client: RunnerClient, live_runner: tuple[str, str, Path]
) -> None:
    view = await client.submit_run(inline(CHAIN, {"n": 1}))
    assert (await client.wait_run(view["id"], timeout=60))["state"] == "succeeded"
    server = SERVERS[live_runner[0]]

    def events() -> list[str]:
        found = []
        for line in list(server.lines):
            if line.startswith("{") and view["id"] in line:
                record = json.loads(line)
                assert record["logger"] == "fifoflow.runs"
                assert record["run"] == view["id"]
                found.append(record["event"])
        return found

    # the server's output is read by a thread as it comes: wait for the last line
    await trio.to_thread.run_sync(
        lambda: wait_until("the finished line", lambda: "finished" in events(), timeout=10)
    )
    seen = events()
    for event in ("queued", "running", "claimed", "started", "finished", "succeeded"):
        assert event in seen, seen


# ---------------------------------------------------------------------- the CLI


def ff(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fifoflow.api", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli_env(live_runner: tuple[str, str, Path], tmp_path: Path) -> dict[str, str]:
    url, _, state = live_runner
    for document in (CHAIN, RAISES, SLOW):
        (tmp_path / f"{document['id']}.json").write_text(json.dumps(document))
    return {
        **os.environ,
        "FIFOFLOW_URL": url,
        "FIFOFLOW_TOKEN_FILE": str(state / "token"),
        "FLOWS": str(tmp_path),
    }


def test_runs_commands_submit_list_show_cancel_result_logs(cli_env: dict[str, str]) -> None:
    env = cli_env
    flow = f"{env['FLOWS']}/chain.json"
    done = ff(env, "runs", "submit", flow, "--input", '{"n": 1}', "--label", "gpu=none")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    assert run_id.startswith("r")
    listed = ff(env, "runs", "list", "--state", "queued")
    assert run_id in listed.stdout
    assert "chain" in listed.stdout
    shown = ff(env, "runs", "show", run_id)
    assert json.loads(shown.stdout)["state"] == "queued"
    early = ff(env, "runs", "result", run_id)
    assert early.returncode == 1
    assert "run_state" in early.stderr
    canceled = ff(env, "runs", "cancel", run_id)
    assert canceled.returncode == 0, canceled.stderr
    assert f"run {run_id} canceled" in canceled.stdout
    result = ff(env, "runs", "result", run_id)
    assert json.loads(result.stdout)["state"] == "canceled"
    assert ff(env, "runs", "result", run_id, "--outputs").stdout == ""
    assert ff(env, "runs", "logs", run_id).returncode == 0
    refused = ff(env, "runs", "submit", flow, "--input", "1", "--to", "nowhere.in")
    assert refused.returncode == 2
    assert "inputs[0].to" in refused.stderr
    usage = ff(env, "runs", "submit", flow, "--max-attempts", "0")
    assert usage.returncode == 2


def test_runs_submit_wait_exits_4_when_canceled_from_another_call(
    cli_env: dict[str, str],
) -> None:
    env = cli_env
    flow = f"{env['FLOWS']}/chain.json"
    waiting = subprocess.Popen(
        [sys.executable, "-m", "fifoflow.api", "runs", "submit", flow, "--input", "1",
         "--label", "gpu=none", "--key", "to-cancel", "--wait"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        run_id = None
        while run_id is None and time.monotonic() < deadline:
            listed = json.loads(ff(env, "runs", "list", "--json").stdout)
            run_id = next((r["id"] for r in listed if r.get("key") == "to-cancel"), None)
        assert run_id is not None, "the run was never submitted"
        assert ff(env, "runs", "cancel", run_id).returncode == 0
        _, stderr = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 4, stderr
    assert "canceled" in stderr


@pytest.mark.parametrize(
    ("flow", "extra", "status", "state"),
    [
        ("chain", ["--input", '{"n": 1}'], 0, "succeeded"),
        ("raises", ["--input", "1", "--max-attempts", "1"], 1, "failed"),
        ("slow", ["--input", "1", "--timeout", "1"], 3, "timed_out"),
    ],
)
def test_runs_submit_wait_exit_status(
    cli_env: dict[str, str], flow: str, extra: list[str], status: int, state: str
) -> None:
    done = ff(cli_env, "runs", "submit", f"{cli_env['FLOWS']}/{flow}.json", *extra, "--wait")
    assert done.returncode == status, done.stderr
    assert state in done.stderr
    if state == "succeeded":
        assert json.loads(done.stdout.splitlines()[0])["msg"]["n"] == 4
