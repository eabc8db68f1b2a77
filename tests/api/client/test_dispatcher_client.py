"""DispatcherClient against a real dispatcher process: its answers, and the same errors
as RunnerClient (ApiError with the server's status/code/message, ConnectError)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest

from fifoflow.api.client import ApiError, ConnectError, DispatcherClient
from fifoflow.flows import dump_flow, load_flow

from ...conftest import REPO
from ...dispatcher.test_dispatcher import DispatcherProcess

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatcherProcess]:
    proc = DispatcherProcess(tmp_path_factory.mktemp("client") / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


@pytest.fixture
def client(live_dispatcher: DispatcherProcess) -> Iterator[DispatcherClient]:
    token = (live_dispatcher.state_dir / "token").read_text().strip()
    with DispatcherClient(live_dispatcher.url + "/", token) as client:
        yield client


def test_answers(client: DispatcherClient, live_dispatcher: DispatcherProcess) -> None:
    issued = client.create_token(ttl=60)
    assert issued["token"].startswith("ffreg_")
    assert client.client_token() == (live_dispatcher.state_dir / "client-token").read_text().strip()
    assert client.list_runners() == []
    assert client.backend() == {"backend": None}
    flow = load_flow(REPO / "flows/examples/hello/flow.json", runtimes=["python", "node"])
    placed = client.deploy_flow(orjson.loads(dump_flow(flow, inline=True)))
    assert (placed["id"], placed["status"]) == ("hello", "pending")
    assert [f["id"] for f in client.list_flows()] == ["hello"]
    events = client.list_events()
    assert [e["kind"] for e in events][:1] == ["token"]
    assert client.list_events(since=events[0]["id"]) == events[1:]


def test_refusals_are_api_errors(
    client: DispatcherClient, live_dispatcher: DispatcherProcess
) -> None:
    with pytest.raises(ApiError) as refused:
        client.drain_runner("r-nope")
    assert refused.value.status == 404
    assert refused.value.message == "no runner 'r-nope'"
    assert refused.value.code
    with pytest.raises(ApiError) as conflict:
        client.update_image("foo:1")
    assert conflict.value.status == 409
    with (
        DispatcherClient(live_dispatcher.url, "wrong") as stranger,
        pytest.raises(ApiError) as denied,
    ):
        stranger.list_runners()
    assert denied.value.status == 401


def test_nothing_listening_is_a_connect_error(live_dispatcher: DispatcherProcess) -> None:
    # (live_dispatcher: the module's server runs meanwhile; the leftover guard knows it)
    with DispatcherClient("http://127.0.0.1:1", "t") as client, pytest.raises(ConnectError) as exc:
        client.list_runners()
    assert str(exc.value).startswith("cannot reach the dispatcher at http://127.0.0.1:1: ")
