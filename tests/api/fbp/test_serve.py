"""``runner serve --fbp-port``: the endpoint a live runner serves, and its secret."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import httpx
import orjson
import trio
import trio_websocket

from tests.api.helpers import ServerProcess

from .test_conformance import fbp_url

if TYPE_CHECKING:
    from pathlib import Path


async def ask(url: str, secret: str) -> list[dict]:
    """getruntime, then a graph clear, with ``secret``: the two answers."""
    answers = []
    async with trio_websocket.open_websocket_url(url, subprotocols=["noflo"]) as ws:
        assert ws.subprotocol == "noflo"
        for protocol, command, payload in (
            ("runtime", "getruntime", {}),
            ("graph", "clear", {"id": "s"}),
        ):
            message = {
                "protocol": protocol,
                "command": command,
                "payload": payload,
                "secret": secret,
            }
            await ws.send_message(orjson.dumps(message).decode())
            with trio.fail_after(20):
                answers.append(orjson.loads(await ws.get_message()))
    return answers


async def test_the_secret_file_replaces_the_token(tmp_path: Path) -> None:
    secret_file = tmp_path / "fbp-secret"
    secret_file.write_text("ide-secret-42\n")
    server = ServerProcess(
        tmp_path / "state", "--fbp-port", "0", "--fbp-secret-file", str(secret_file)
    )
    server.start()
    try:
        host, port = await trio.to_thread.run_sync(fbp_url, server)
        url = f"ws://{host}:{port}/"
        token = (tmp_path / "state" / "token").read_text().strip()
        runtime, cleared = await ask(url, "ide-secret-42")
        assert "protocol:graph" in runtime["payload"]["capabilities"]
        assert cleared["command"] == "clear"
        about = await trio.to_thread.run_sync(
            lambda: httpx.get(f"http://{host}:{port}/", timeout=10)
        )
        assert about.status_code == 200
        assert "subprotocol 'noflo'" in about.text
        runtime, refused = await ask(url, token)
        assert runtime["payload"]["capabilities"] == []
        assert refused["command"] == "error"
        assert "access denied" in refused["payload"]["message"]
        assert "ide-secret-42" not in str([runtime, refused])
    finally:
        assert server.stop() == 0, server.output()
    assert (tmp_path / "state" / "fbp-graphs" / "s.json").exists()


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "empty"
    secret_file.write_text("\n")
    command = ServerProcess(
        tmp_path / "state", "--fbp-port", "0", "--fbp-secret-file", str(secret_file)
    ).command()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--fbp-secret-file" in done.stderr
    assert "empty" in done.stderr
    assert "listening" not in done.stdout
