"""A page's client token reaches only its own page (issue 16): raw websockets to a
real dispatcher process, as a page (or someone holding the page's token) would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio
import trio_websocket

from .test_dispatcher import (
    COUNTER,
    DispatcherProcess,
    events,
    linked_id,
    start_runner,
    wait_until,
)

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def dispatcher(tmp_path: Path) -> Any:
    proc = DispatcherProcess(tmp_path / "dispatcher")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print("\n".join(proc.lines))  # shown when a test fails


def _ws(dispatcher: DispatcherProcess) -> str:
    return dispatcher.url.replace("http", "ws")


async def _welcome(ws: Any) -> dict[str, Any]:
    welcome = orjson.loads(await ws.get_message())
    assert welcome["op"] == "welcome", welcome
    assert welcome["ttl"] == pytest.approx(0.6), welcome  # 3 heartbeats: the page waits <= 1/3
    return welcome


async def test_a_page_injects_only_into_flows_it_runs(
    tmp_path: Path, dispatcher: DispatcherProcess
) -> None:
    runner = start_runner(tmp_path, "r1", dispatcher, dispatcher.token())
    try:
        linked_id(runner)
        assert dispatcher.api("POST", "/flows", json=COUNTER)["status"] == "placed"
        token = dispatcher.api("GET", "/client-token")["token"]
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(
                f"{_ws(dispatcher)}/client/ws?token={token}&page=p1"
            ) as ws:
                welcome = await _welcome(ws)
                # a deployed flow of a server runner, and a flow that does not exist:
                # the same refusal, naming the field (nothing learnt about other flows)
                for n, flow in enumerate(("counter", "nope")):
                    await ws.send_message(
                        orjson.dumps(
                            {
                                "op": "inject",
                                "id": n,
                                "flow": flow,
                                "module": "count",
                                "msgs": ["x"],
                            }
                        ).decode()
                    )
                    reply = orjson.loads(await ws.get_message())
                    assert (reply["op"], reply["id"], reply["field"]) == ("error", n, "flow")
                    assert f"no flow {flow!r} has modules on this page" in reply["message"]
                await ws.send_message('{"op": "bye"}')
        refused = events(dispatcher, "refused-inject", welcome["runner"])
        assert [(e["page"], e["flow"]) for e in refused] == [("p1", "counter"), ("p1", "nope")]
        # nothing reached the flow's module
        state = dispatcher.api("GET", "/flows/counter/modules/count/state")
        assert "x" not in orjson.dumps(state).decode()
    finally:
        runner.stop()


class PagesDispatcher(DispatcherProcess):
    """A dispatcher with its page settings given."""

    def __init__(self, state_dir: Path, *options: str) -> None:
        super().__init__(state_dir)
        self.options = options

    def command(self) -> list[str]:
        return [*super().command(), *self.options]


async def _refused(ws: Any, why: str) -> None:
    answer = orjson.loads(await ws.get_message())
    assert answer["op"] == "refused", answer
    assert why in answer["message"]
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 4401
    assert why[:60] in closed.value.reason.reason


async def test_a_page_id_is_bound_to_the_secret_of_its_first_welcome(
    dispatcher: DispatcherProcess,
) -> None:
    token = dispatcher.api("GET", "/client-token")["token"]
    base = f"{_ws(dispatcher)}/client"
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(f"{base}/ws?token={token}&page=p1") as ws:
            welcome = await _welcome(ws)
            secret = welcome["secret"]
            assert len(secret) >= 32
            # while the page is connected, its id cannot be taken: no secret, a wrong
            # one, on the control socket or a host socket
            for query in ("", "&secret=guess", f"&secret={secret[:-1]}"):
                for path in ("ws", "host"):
                    async with trio_websocket.open_websocket_url(
                        f"{base}/{path}?token={token}&page=p1&host=browser{query}"
                    ) as thief:
                        await _refused(thief, "secret")
            # the page itself reconnects with its secret (a reload overlapping the old
            # socket); no new secret is issued
            async with trio_websocket.open_websocket_url(
                f"{base}/ws?token={token}&page=p1&secret={secret}"
            ) as again:
                assert "secret" not in await _welcome(again)
        # gone (the sockets closed, within the grace period): still bound
        async with trio_websocket.open_websocket_url(f"{base}/ws?token={token}&page=p1") as thief:
            await _refused(thief, "page 'p1' is bound to another secret")
        # another page id gets its own secret
        async with trio_websocket.open_websocket_url(f"{base}/ws?token={token}&page=p2") as ws:
            assert (await _welcome(ws))["secret"] != secret
    # the binding survives a dispatcher restart (only its digest is kept)
    # (on the same port: a page runner's registration names the dispatcher's URL)
    dispatcher.port = int(dispatcher.url.rsplit(":", 1)[1])
    dispatcher.stop()
    dispatcher.start()
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(
            f"{_ws(dispatcher)}/client/ws?token={token}&page=p1"
        ) as thief:
            await _refused(thief, "bound to another secret")
        async with trio_websocket.open_websocket_url(
            f"{_ws(dispatcher)}/client/ws?token={token}&page=p1&secret={secret}"
        ) as ws:
            assert (await _welcome(ws))["runner"] == welcome["runner"]
            await ws.send_message('{"op": "bye"}')
    kept = [p.read_bytes() for p in (dispatcher.state_dir / "clients").rglob("*") if p.is_file()]
    assert kept
    assert not any(secret.encode() in data for data in kept)


async def test_pages_are_bounded_and_pruned_when_gone(tmp_path: Path) -> None:
    dispatcher = PagesDispatcher(
        tmp_path / "dispatcher", "--max-pages", "2", "--page-grace", "0.5",
        "--page-prune-after", "0.5",
    )  # fmt: skip
    dispatcher.start()
    try:
        token = dispatcher.api("GET", "/client-token")["token"]
        base = f"{_ws(dispatcher)}/client/ws?token={token}"
        clients = dispatcher.state_dir / "clients"
        with trio.fail_after(60):
            async with (
                trio_websocket.open_websocket_url(f"{base}&page=p1") as p1,
                trio_websocket.open_websocket_url(f"{base}&page=p2") as p2,
            ):
                w1, w2 = await _welcome(p1), await _welcome(p2)
                # a third page is over the bound: refused, with the reason
                async with trio_websocket.open_websocket_url(f"{base}&page=p3") as p3:
                    await _refused(p3, "this dispatcher serves 2 pages already")
                assert not (clients / "p3.secret").exists()
                # p1 says bye (signed off), p2 just goes (past its grace period)
                await p1.send_message('{"op": "bye"}')
            ids = {w1["runner"], w2["runner"]}
            # both are pruned: runner rows, state dirs and secrets
            wait_until(
                "the gone pages' runners pruned",
                lambda: not ids & {r["id"] for r in dispatcher.api("GET", "/runners")},
            )
            assert {e["runner"] for e in events(dispatcher, "pruned")} == ids
            wait_until("their state gone", lambda: not any(clients.iterdir()))
            # the ids are free again: a new page gets p1 with a new secret, and room
            # for a new one is back
            async with (
                trio_websocket.open_websocket_url(f"{base}&page=p1") as p1,
                trio_websocket.open_websocket_url(f"{base}&page=p3") as p3,
            ):
                assert (await _welcome(p1))["secret"] != w1["secret"]
                await _welcome(p3)
                await p1.send_message('{"op": "bye"}')
                await p3.send_message('{"op": "bye"}')
    finally:
        dispatcher.stop()
        print("\n".join(dispatcher.lines))


async def test_pages_from_before_a_restart_come_back_or_are_pruned(tmp_path: Path) -> None:
    dispatcher = PagesDispatcher(tmp_path / "dispatcher", "--page-prune-after", "1")
    dispatcher.start()
    try:
        token = dispatcher.api("GET", "/client-token")["token"]
        with trio.fail_after(60):
            welcomes = {}
            for page in ("p1", "p2"):
                async with trio_websocket.open_websocket_url(
                    f"{_ws(dispatcher)}/client/ws?token={token}&page={page}"
                ) as ws:
                    welcomes[page] = await _welcome(ws)
            # restarted on another port (so its URL changed): p1 comes back with its
            # secret and is welcomed; p2 never does and is pruned
            dispatcher.stop()
            dispatcher.start()
            async with trio_websocket.open_websocket_url(
                f"{_ws(dispatcher)}/client/ws?token={token}&page=p1&secret={welcomes['p1']['secret']}"
            ) as ws:
                back = await _welcome(ws)
                old = welcomes["p2"]["runner"]
                wait_until(
                    "p2's runner pruned",
                    lambda: old not in {r["id"] for r in dispatcher.api("GET", "/runners")},
                )
                assert not (dispatcher.state_dir / "clients" / "p2").exists()
                assert (dispatcher.state_dir / "clients" / "p1.secret").exists()
                assert back["runner"] in {r["id"] for r in dispatcher.api("GET", "/runners")}
                await ws.send_message('{"op": "bye"}')
    finally:
        dispatcher.stop()
        print("\n".join(dispatcher.lines))
