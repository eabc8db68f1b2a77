"""Ids and the state dir from the outside: the id limit at every door, ids of every kind
across a restart of the runner process, and what a state dir that cannot be written
answers (507, nothing registered, the other flows still checkpointed, SIGTERM exits 0)."""

from __future__ import annotations

import contextlib
import subprocess
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from fifoflow.api.client import RunnerClient
from fifoflow.api.common.errors import ApiError
from fifoflow.flows.limits import MAX_ID

from .cli.test_cli import fifoflow
from .helpers import ServerProcess, serve_runner, wait_event

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

COUNT = (
    "def handle(msg, ctx):\n"
    "    ctx.state['seen'] = ctx.state.get('seen', 0) + 1\n"
    "    return ctx.state['seen']\n"
)


def counter(
    flow_id: str, module_id: str = "count", inputs: str = "in", outputs: str = "out"
) -> dict[str, Any]:
    """A flow of two counting modules, ``<module_id>`` then ``tail``."""
    return {
        "fifoflow": 1,
        "id": flow_id,
        "modules": [
            {
                "id": module_id,
                "runtime": "python",
                "code": COUNT.replace(
                    "return ctx.state['seen']", f"ctx.emit({outputs!r}, ctx.state['seen'])"
                ),
                "inputs": [inputs],
                "outputs": [outputs],
            },
            {"id": "tail", "runtime": "python", "code": COUNT},
        ],
        "wires": [f"{module_id}.{outputs} -> tail.in"],
    }


TOO_LONG = "a" * (MAX_ID + 1)
#: where a 129-character id can be, and the path the error names
OVER_THE_LIMIT = [
    (counter(TOO_LONG), "id"),
    (counter("f", module_id=TOO_LONG), "modules[0].id"),
    (counter("f", inputs=TOO_LONG), "modules[0].inputs[0]"),
    (counter("f", outputs=TOO_LONG), "modules[0].outputs[0]"),
]


@pytest.mark.parametrize(("document", "path"), OVER_THE_LIMIT)
async def test_an_id_over_the_limit_is_refused_at_every_door(
    tmp_path: Path, document: dict[str, Any], path: str
) -> None:
    message = f"{path}: {MAX_ID + 1} characters, at most {MAX_ID}"
    async with serve_runner(tmp_path / "state") as served, served.client() as client:
        with pytest.raises(ApiError) as rest:
            await client.apply_flow(document)
        assert (rest.value.status, rest.value.code) == (422, "invalid_flow")
        assert rest.value.field == f"flow.{path}"
        assert message in rest.value.message
        async with client.rpc() as rpc:
            with pytest.raises(ApiError) as rpc_error:
                await rpc.call("applyFlow", flow=document)
        assert (rpc_error.value.status, rpc_error.value.code) == (422, "invalid_flow")
        assert message in rpc_error.value.message
        assert await client.list_flows() == []
    assert list((tmp_path / "state" / "flows").iterdir()) == []
    flow_file = tmp_path / "flow.json"
    flow_file.write_bytes(orjson.dumps(document))
    result = fifoflow("validate", str(flow_file))
    assert result.returncode == 2
    assert message in result.stderr


def _ids() -> list[str]:
    """Flow ids of MAX_ID characters, each starting with a character kind ids may start
    with and holding every kind (upper, lower, digit, '_', '-')."""
    body = "aZ0_-"
    return [(first + body * MAX_ID)[:MAX_ID] for first in ("A", "z", "_")]


async def test_ids_of_every_kind_and_the_longest_length_survive_a_restart(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    longest = "m" + "-" * (MAX_ID - 1)
    ids = _ids()
    server = ServerProcess(state_dir)
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        async with RunnerClient(url, token) as client, client.rpc() as rpc:
            await rpc.subscribe(kinds=["output"])
            for n, flow_id in enumerate(ids):
                doc = counter(flow_id, module_id=longest, inputs="i" * MAX_ID, outputs="o" * MAX_ID)
                assert await client.add_or_update_flow(doc) is True
                await client.start_flow(flow_id)
                await client.inject(flow_id, longest, "i" * MAX_ID, list(range(n + 1)))
                seen = 0
                while seen < n + 1:
                    seen += len((await wait_event(rpc, "output", flow=flow_id))["msgs"])
        assert server.stop() == 0
        assert sorted(p.name for p in (state_dir / "flows").iterdir()) == sorted(
            f"{i}.json" for i in ids
        )

        url = server.start()
        async with RunnerClient(url, token) as client:
            flows = {f["id"]: f["status"] for f in await client.list_flows()}
            assert flows == dict.fromkeys(ids, "running")
            for n, flow_id in enumerate(ids):
                assert await client.module_state(flow_id, longest) == {"seen": n + 1}
                assert await client.module_state(flow_id, "tail") == {"seen": n + 1}
                await client.remove_flow(flow_id)
            assert await client.list_flows() == []
        assert list((state_dir / "flows").iterdir()) == []
    finally:
        server.stop()


async def test_a_flow_that_cannot_be_stored_is_refused_with_507_and_the_others_run_on(
    tmp_path: Path,
) -> None:
    """Real failures: a directory where a flow's file or a state file goes (EISDIR)."""
    state_dir = tmp_path / "state"
    server = ServerProcess(state_dir)
    try:
        url = server.start()
        token = (state_dir / "token").read_text().strip()
        (state_dir / "flows" / "blocked.json").mkdir()
        (state_dir / "states" / "stuck.json").mkdir()
        async with RunnerClient(url, token) as client, client.rpc() as rpc:
            with pytest.raises(ApiError) as caught:
                await client.add_or_update_flow(counter("blocked"))
            assert (caught.value.status, caught.value.code) == (507, "storage_error")
            assert "could not store flow 'blocked': Is a directory" in caught.value.message
            assert str(state_dir / "flows" / "blocked.json") in caught.value.message
            with pytest.raises(ApiError) as gone:
                await client.remove_flow("blocked")
            assert gone.value.status == 404
            assert await client.list_flows() == []

            await rpc.subscribe(kinds=["checkpoint"])
            for flow_id in ("stuck", "good"):
                await client.add_or_update_flow(counter(flow_id))
                await client.start_flow(flow_id)
                await client.inject(flow_id, "count", "in", [1, 2])
            failed = await wait_event(rpc, "checkpoint", flow="stuck")
            assert failed["error"]["code"] == "storage_error"
            with trio.fail_after(20):
                while await client.module_state("good", "tail") != {"seen": 2}:
                    await wait_event(rpc, "checkpoint", flow="good")
                while _stored(state_dir, "good") != {"count": {"seen": 2}, "tail": {"seen": 2}}:
                    await wait_event(rpc, "checkpoint", flow="good")
            await rpc.subscribe(flows=["good"], kinds=["output"])
            await client.inject("good", "count", "in", [3])
            await wait_event(rpc, "output", flow="good", msgs=[3])
        assert server.stop() == 0
        assert any(
            "could not store the module state of flow 'stuck'" in line for line in server.lines
        )

        url = server.start()
        async with RunnerClient(url, token) as client:
            assert await client.module_state("good", "tail") == {"seen": 3}
            assert {f["id"] for f in await client.list_flows()} == {"stuck", "good"}
    finally:
        server.stop()


def _stored(state_dir: Path, flow_id: str) -> Any:
    try:
        return orjson.loads((state_dir / "states" / f"{flow_id}.json").read_bytes())["modules"]
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


async def test_a_full_disk_answers_507_storage_full_and_keeps_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        async with serve_runner(disk / "state") as served, served.client() as client:
            assert await client.add_or_update_flow(counter("first")) is True
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as out:  # noqa: ASYNC230 (filling a disk)
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0" * 65536)
                with contextlib.suppress(OSError):
                    while True:
                        out.write(b"\0")
            with pytest.raises(ApiError) as caught:
                await client.add_or_update_flow(counter("second"))
            assert (caught.value.status, caught.value.code) == (507, "storage_full")
            assert "No space left on device" in caught.value.message
            assert [f["id"] for f in await client.list_flows()] == ["first"]
            assert sorted(p.name for p in (disk / "state" / "flows").iterdir()) == ["first.json"]
            filler.unlink()
            assert await client.add_or_update_flow(counter("second")) is True
