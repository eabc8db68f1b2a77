"""Runner-to-runner relay (runner/peers.py, dispatcher/peers.py), with real processes: a
dispatcher and runner processes on 127.0.0.1. A flow split across runners sends its
cross-runner wires straight from runner to runner (the dispatcher relays none), in
order; a receiving runner SIGKILLed mid-stream has its module placed again and the
sender re-sends what it held there; a runner whose peer endpoint cannot be reached is
still delivered to, through the dispatcher; the peer endpoint refuses bad input."""

from __future__ import annotations

import hashlib
import hmac
import re
import signal
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import trio
import trio_websocket

from fifoflow.runner.peers import credential

from ..api.helpers import ServerProcess
from .test_dispatcher import DispatcherProcess, linked_id, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: c checks the order of what reaches it: a message may come again (at least once), but
#: never before one emitted earlier on its wire; ``n`` counts distinct messages, ``top``
#: is the highest seen
CHECK = (
    "def handle(msg, ctx):\n"
    "    s = ctx.state\n"
    "    top = s.get('top', -1)\n"
    "    if msg > top:\n"
    "        s['ok'] = s.get('ok', True) and msg == top + 1\n"
    "        s['gaps'] = s.get('gaps', 0) + (msg - top - 1)\n"
    "        s['top'] = msg\n"
    "        s['n'] = s.get('n', 0) + 1\n"
    "    else:\n"
    "        s['again'] = s.get('again', 0) + 1\n"
)


def span_flow(flow_id: str) -> dict[str, Any]:
    """a (zone a) -> b (zone b, node) -> c (zone a): two wires between runners."""
    return {
        "fifoflow": 1,
        "id": flow_id,
        "modules": [
            {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n",
             "placement": {"labels": {"zone": "a"}}},
            {"id": "b", "runtime": "node", "code": "exports.handle = (msg) => msg;\n",
             "placement": {"labels": {"zone": "b"}}},
            {"id": "c", "runtime": "python", "code": CHECK, "placement": {"labels": {"zone": "a"}}},
        ],
        "wires": ["a.out -> b.in", "b.out -> c.in"],
    }  # fmt: skip


def start_zoned(
    tmp_path: Path, name: str, zone: str, dispatcher: DispatcherProcess, *extra: str
) -> ServerProcess:
    runner = ServerProcess(
        tmp_path / name, "--dispatcher", dispatcher.url,
        "--registration-token", dispatcher.token(), "--label", f"zone={zone}", *extra,
    )  # fmt: skip
    runner.start()
    return runner


@contextmanager
def linked(
    tmp_path: Path, *specs: tuple[str, ...]
) -> Iterator[tuple[DispatcherProcess, list[ServerProcess]]]:
    """A dispatcher and one linked runner per spec ``(name, zone, *extra args)``, in
    that order; all stopped after."""
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    runners: list[ServerProcess] = []
    try:
        for name, zone, *extra in specs:
            runners.append(start_zoned(tmp_path, name, zone, dispatcher, *extra))
        yield dispatcher, runners
    finally:
        for runner in runners:
            runner.stop()
        dispatcher.stop()


def cross_wires(dispatcher: DispatcherProcess, flow_id: str) -> dict[str, dict[str, Any]]:
    stats = dispatcher.api("GET", f"/flows/{flow_id}/stats")
    return {w["wire"]: w for w in stats["wires"] if w["via"] == "relay"}


def c_state(dispatcher: DispatcherProcess, flow_id: str) -> dict[str, Any]:
    return dispatcher.api("GET", f"/flows/{flow_id}/modules/c/state")["state"] or {}


def stream(
    dispatcher: DispatcherProcess, flow_id: str, total: int, batch: int, failures: list[Any]
) -> None:
    """Inject 0..total-1 into a, in batches; a batch answered 409 (the flow is moving
    between runners: send again) is sent again. Runs in a thread; failures are kept."""
    retries = [0]
    try:
        for start in range(0, total, batch):
            while True:
                try:
                    dispatcher.api(
                        "POST", f"/flows/{flow_id}/modules/a/inputs/in",
                        json={"msgs": list(range(start, start + batch))},
                    )  # fmt: skip
                    break
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != 409:
                        raise
                    retries[0] += 1
                    time.sleep(0.05)  # a retry's backoff, not a synchronization
    except BaseException as exc:
        failures.append(exc)


def test_a_flow_across_two_runners_goes_from_runner_to_runner_in_order(tmp_path: Path) -> None:
    with linked(tmp_path, ("a", "a"), ("b", "b")) as (dispatcher, runners):
        ids = {z: linked_id(r) for z, r in zip("ab", runners, strict=True)}
        placed = dispatcher.api("POST", "/flows", json=span_flow("span"))
        assert placed["placement"] == {"a": ids["a"], "b": ids["b"], "c": ids["a"]}
        for start in range(0, 12_000, 1000):
            dispatcher.api(
                "POST", "/flows/span/modules/a/inputs/in",
                json={"msgs": list(range(start, start + 1000))},
            )  # fmt: skip
        state = wait_until(
            "12,000 messages through both runners",
            lambda: (s := c_state(dispatcher, "span")).get("n") == 12_000 and s,
            timeout=60,
        )
        assert state == {"ok": True, "gaps": 0, "top": 11_999, "n": 12_000}
        wires = cross_wires(dispatcher, "span")
        # Both wires between the runners went directly: the dispatcher relayed nothing.
        for wire in ("a.out->b.in", "b.out->c.in"):
            assert wires[wire]["dispatcher"] == 0, wires
            assert wires[wire]["direct"] == 12_000, wires


def test_an_unreachable_peer_endpoint_falls_back_to_the_dispatcher(tmp_path: Path) -> None:
    # Runner b says an endpoint nobody listens on (port 1): a's sends to it fail.
    with linked(tmp_path, ("a", "a"), ("b", "b", "--peer-url", "ws://127.0.0.1:1/peer")) as (
        dispatcher,
        runners,
    ):
        for r in runners:
            linked_id(r)
        dispatcher.api("POST", "/flows", json=span_flow("fall"))
        for start in range(0, 10_000, 1000):
            dispatcher.api(
                "POST", "/flows/fall/modules/a/inputs/in",
                json={"msgs": list(range(start, start + 1000))},
            )  # fmt: skip
        state = wait_until(
            "10,000 messages, a -> b through the dispatcher",
            lambda: (s := c_state(dispatcher, "fall")).get("n") == 10_000 and s,
            timeout=60,
        )
        assert (state["ok"], state["gaps"], state["top"]) == (True, 0, 9_999)
        wires = cross_wires(dispatcher, "fall")
        # a -> b: every message through the dispatcher (at least once: a batch may
        # also have gone before the fallback); b -> c (a is reachable): directly
        assert wires["a.out->b.in"]["direct"] == 0, wires
        assert wires["a.out->b.in"]["dispatcher"] >= 10_000, wires
        assert wires["b.out->c.in"]["direct"] == 10_000, wires
        assert wires["b.out->c.in"]["dispatcher"] == 0, wires


def test_sigkill_of_the_receiving_runner_mid_stream(tmp_path: Path) -> None:
    """b's runner is killed while messages stream; b is placed on the other zone-b
    runner, and the sender (a's runner) re-sends what it still held for the dead one
    there. Order holds on every wire (no message before an earlier one); the stream
    goes on to its end. What the killed runner had accepted and not passed on is lost
    with it (at least once holds per runner, as with the dispatcher relay)."""
    total, batch = 30_000, 500
    with linked(tmp_path, ("a", "a"), ("b1", "b"), ("b2", "b")) as (dispatcher, runners):
        ids = [linked_id(r) for r in runners]
        placed = dispatcher.api("POST", "/flows", json=span_flow("kill"))
        holder = placed["placement"]["b"]
        victim = runners[ids.index(holder)]
        survivor = next(i for i in ids[1:] if i != holder)
        failures: list[BaseException] = []

        sender = threading.Thread(target=stream, args=(dispatcher, "kill", total, batch, failures))
        sender.start()
        wait_until("some messages through", lambda: c_state(dispatcher, "kill").get("n", 0) >= 3000)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        moved = wait_until(
            "b placed on the other zone-b runner",
            lambda: (
                (f := dispatcher.api("GET", "/flows/kill"))["status"] == "placed"
                and f["placement"]["b"] == survivor
                and f
            ),
            timeout=30,
        )
        assert moved["placement"]["b"] == survivor
        sender.join(timeout=120)
        assert not sender.is_alive(), runners[0].output()[-3000:]
        assert not failures, failures
        state = wait_until(
            "the stream's last message",
            lambda: (s := c_state(dispatcher, "kill")).get("top") == total - 1 and s,
            timeout=60,
        )
        # Order per wire: no message came before one emitted earlier on its wire.
        assert state["n"] + state["gaps"] == total
        print(f"lost with the killed runner: {state['gaps']}, came again: {state.get('again', 0)}")
        # at most what b's runner held: b's queue and window, and its sends to c
        assert state["gaps"] <= 10_000 + 10_000 + 20_000
        # the new placement is used directly
        wires = cross_wires(dispatcher, "kill")
        assert wires["a.out->b.in"]["direct"] > 0, wires
        assert wires["b.out->c.in"]["direct"] > 0, wires


def _peer_url(runner: ServerProcess) -> str:
    found = wait_until(
        "the runner's peer endpoint",
        lambda: re.search(r"runner-to-runner relay: (ws://\S+)", runner.output()),
    )
    return found.group(1)


@pytest.mark.trio
async def test_the_peer_endpoint_refuses_bad_input(tmp_path: Path) -> None:
    with linked(tmp_path, ("a", "a"), ("b", "b")) as (dispatcher, runners):
        ids = {z: linked_id(r) for z, r in zip("ab", runners, strict=True)}
        dispatcher.api("POST", "/flows", json=span_flow("bad"))
        url = _peer_url(runners[0])  # runner a holds c

        async def refusal(frame: dict[str, Any]) -> dict[str, Any]:
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message(
                    orjson.dumps({"t": "hello", "from": ids["b"], "session": "s"})
                )
                hello = orjson.loads(await ws.get_message())
                assert hello["t"] == "hello"
                assert hello["credit"] > 0
                await ws.send_message(orjson.dumps({"seq": 1, **frame}))
                answer = orjson.loads(await ws.get_message())
                # nothing more is taken on this connection
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await ws.get_message()
                return answer

        with trio.fail_after(20):
            base = {"flow": "bad", "dst": "c", "port": "in", "msgs": [1]}
            wrong = await refusal({**base, "cred": "0" * 64})
            assert wrong["t"] == "refused"
            assert "bad credential" in wrong["why"], wrong
            not_json = None
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message("{not json")
                with pytest.raises(trio_websocket.ConnectionClosed):
                    not_json = await ws.get_message()
            assert not_json is None
            no_flow = await refusal({**base, "flow": "nope", "cred": "0" * 64})
            assert no_flow["t"] == "refused", no_flow
            # A right credential (made here as the dispatcher makes it), for a module
            # this runner does not hold: refused, naming it.
            master = bytes.fromhex((tmp_path / "dispatcher" / "peer.key").read_text())
            key = hmac.new(master, ids["a"].encode(), hashlib.sha256).digest()
            cred = credential(key, ids["b"], "bad")
            elsewhere = await refusal({**base, "dst": "b", "cred": cred})
            assert elsewhere["t"] == "refused"
            assert "'b'" in elsewhere["why"], elsewhere
        # Nothing reached c.
        assert c_state(dispatcher, "bad") == {}


def test_draining_the_receiving_runner_under_load_loses_nothing(tmp_path: Path) -> None:
    """b's runner is drained while messages stream: what waited in it is handed over,
    what the sender held goes to the new place; every message arrives, in order."""
    total, batch = 20_000, 500
    with linked(tmp_path, ("a", "a"), ("b1", "b"), ("b2", "b")) as (dispatcher, runners):
        ids = [linked_id(r) for r in runners]
        placed = dispatcher.api("POST", "/flows", json=span_flow("drain"))
        holder = placed["placement"]["b"]
        other = next(i for i in ids[1:] if i != holder)
        failures: list[BaseException] = []

        sender = threading.Thread(target=stream, args=(dispatcher, "drain", total, batch, failures))
        sender.start()
        wait_until(
            "some messages through", lambda: c_state(dispatcher, "drain").get("n", 0) >= 3000
        )
        dispatcher.api("POST", f"/runners/{holder}/drain")
        sender.join(timeout=120)
        assert not sender.is_alive(), runners[0].output()[-3000:]
        assert not failures, failures
        assert dispatcher.api("GET", "/flows/drain")["placement"]["b"] == other
        state = wait_until(
            "every message",
            lambda: (s := c_state(dispatcher, "drain")).get("top") == total - 1 and s,
            timeout=60,
        )
        assert (state["ok"], state["gaps"], state["n"]) == (True, 0, total)
