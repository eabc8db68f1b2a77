"""Environment ids name folders: an id that is not one (``..``, an absolute path, a
path with ``/``, empty, over-long) is refused over REST and JSON-RPC, naming
``environmentId``, and nothing outside the environments' folder is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import trio

from fifoflow.api.client import open_websocket
from fifoflow.runner.environments import check_env_id
from fifoflow.runner.errors import NotFound

from .helpers import serve_runner

if TYPE_CHECKING:
    from pathlib import Path

#: a folder that looks like an environment, outside the environments' folder
SENTINEL_ENV = {"id": "python-0123456789abcdef", "runtime": "python", "requirements": []}


def bad_ids(tmp_path: Path) -> list[str]:
    outside = tmp_path / "outside"
    return [
        "../../outside",  # from <state>/envs up to tmp_path/outside
        "..",
        str(outside),  # absolute
        "python-0123456789abcdef/../../../outside",
        "a/b",
        "",
        "python-" + "0" * 5000,  # over-long
        "python-0123456789abcdeg",  # not hex
        "python-0123456789abcdef\n",
    ]


def test_the_core_refuses_what_is_not_an_id(tmp_path: Path) -> None:
    assert check_env_id("python-0123456789abcdef") == "python-0123456789abcdef"
    assert check_env_id("my.rt_2-0123456789abcdef")
    for bad in bad_ids(tmp_path):
        with pytest.raises(NotFound) as caught:
            check_env_id(bad)
        assert caught.value.field == "environmentId"
        assert len(str(caught.value)) < 300  # an over-long id is not echoed whole


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "env.json").write_bytes(orjson.dumps(SENTINEL_ENV))
    (folder / "keep").write_text("still here")
    return folder


def survives(folder: Path) -> None:
    assert (folder / "keep").read_text() == "still here"
    assert sorted(p.name for p in folder.iterdir()) == ["env.json", "keep"]


async def test_rest_and_json_rpc_refuse_ids_that_are_paths(tmp_path: Path, outside: Path) -> None:
    async with serve_runner(tmp_path / "state") as served:
        headers = {"Authorization": f"Bearer {served.token}"}
        async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=30) as http:
            for bad in bad_ids(tmp_path):
                for path, body in (
                    (f"/environments/{_quote(bad)}/rebuild", None),
                    (f"/environments/{_quote(bad)}/packages", {"install": ["x"]}),
                ):
                    response = await http.post(path, json=body)
                    # 404: no such environment (or no such route: an id with '/', or one
                    # the URL drops: '..', empty)
                    assert response.status_code == 404, (bad, response.text)
                    error = response.json().get("error", {})
                    if "/" not in bad and bad not in ("", ".."):
                        assert error.get("field") == "environmentId", (bad, response.text)
            survives(outside)

        url = served.url.replace("http", "ws") + "/ws"
        auth = [(b"Authorization", f"Bearer {served.token}".encode())]
        async with open_websocket(url, headers=auth) as ws:

            async def call(method: str, **params: Any) -> dict[str, Any]:
                await ws.send_message(
                    orjson.dumps(
                        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                    ).decode()
                )
                with trio.fail_after(20):
                    return orjson.loads(await ws.get_message())

            for bad in bad_ids(tmp_path):
                for method, extra in (
                    ("rebuildEnvironment", {}),
                    ("changeEnvironment", {"install": ["x"]}),
                ):
                    reply = await call(method, environmentId=bad, **extra)
                    error = reply["error"]
                    # -32602 from the params model's pattern; a trailing newline passes
                    # a JSON Schema "$" and is the core's refusal (-32000, not_found)
                    assert error["code"] in (-32602, -32000), (bad, error)
                    assert error["data"]["field"] == "environmentId", (bad, error)
            # the door still serves
            assert (await call("listEnvironments"))["result"] == []
        survives(outside)
        assert served.runner.environments.list() == []


def _quote(text: str) -> str:
    """``text`` as one path segment (a '/' in it encoded)."""
    from urllib.parse import quote

    return quote(text, safe="")
