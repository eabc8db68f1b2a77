"""The browser client runner in real Chromium: a page runs a flow's browser module
between two python modules on a runner process, through the dispatcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..dispatcher.test_dispatcher import DispatcherProcess, events, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

COUNT_IN_ORDER = (
    "def handle(msg, ctx):\n"
    "    s = ctx.state\n"
    "    s['ok'] = s.get('ok', True) and msg['seen'] == 'browser' and msg['i'] == s.get('n', 0)\n"
    "    s['n'] = s.get('n', 0) + 1\n"
)
FLOW = {
    "fifoflow": 1,
    "id": "trip",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return {'i': msg}\n"},
        {"id": "b", "runtime": "browser",
         "code": "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; return { ...msg, seen: 'browser' }; };\n"},
        {"id": "c", "runtime": "python", "code": COUNT_IN_ORDER},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}  # fmt: skip

CONNECT = """async ([token, page]) => {
  const { connect } = await import("/client/fifoflow.js");
  window.seen = 0;
  window.statuses = [];
  window.runner = await connect(location.origin, { token, page, onstatus: (s) => window.statuses.push(s) });
  window.runner.on("trip/b", "out", () => { window.seen += 1; });
  return window.runner.runnerId;
}"""


@pytest.fixture
def live_dispatcher(tmp_path: Path) -> Iterator[DispatcherProcess]:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher", heartbeat=0.5)
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "1",
    ]  # fmt: skip
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()


def client_token(dispatcher: DispatcherProcess) -> str:
    return dispatcher.api("GET", "/client-token")["token"]


def state_of(dispatcher: DispatcherProcess, module: str) -> Any:
    try:
        return dispatcher.api("GET", f"/flows/trip/modules/{module}/state")["state"]
    except httpx.HTTPStatusError:
        return None


def test_python_browser_python_round_trips_10000_messages_in_order(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    wait_until(
        "the local runner", lambda: [r for r in d.api("GET", "/runners") if r["status"] == "ready"]
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(d.url + "/client/")
    runner_id = page.evaluate(CONNECT, [client_token(d), "page-1"])
    browser_runner = next(r for r in d.api("GET", "/runners") if r["id"] == runner_id)
    assert browser_runner["hardware"]["runtimes"] == ["browser"]
    assert browser_runner["hardware"]["labels"] == {"client": "page-1"}

    placed = d.api("POST", "/flows", json=FLOW)
    assert placed["status"] == "placed", placed
    assert placed["placement"]["b"] == runner_id
    assert placed["placement"]["a"] == placed["placement"]["c"] != runner_id
    for start in range(0, 10_000, 1000):
        d.api(
            "POST",
            "/flows/trip/modules/a/inputs/in",
            json={"msgs": list(range(start, start + 1000))},
        )
    wait_until(
        "10,000 messages through the browser, in order",
        lambda: state_of(d, "c") == {"ok": True, "n": 10_000},
        timeout=120,
    )
    assert state_of(d, "b") == {"n": 10_000}
    assert page.evaluate("window.seen") == 10_000
    assert not errors, errors


def test_a_wrong_token_is_refused(live_dispatcher: DispatcherProcess, page: Any) -> None:
    page.goto(live_dispatcher.url + "/client/")
    message = page.evaluate(
        """async () => {
          const { connect } = await import("/client/fifoflow.js");
          try { await connect(location.origin, { token: "not-the-token", page: "p2" }); return "connected"; }
          catch (err) { return String(err.message); }
        }"""
    )
    assert message.startswith("fifoflow: refused: wrong or missing client token"), message
    assert not [r for r in live_dispatcher.api("GET", "/runners") if "p2" in r["name"]]


def _deploy(d: DispatcherProcess, page: Any, flow: dict[str, Any], page_id: str) -> str:
    wait_until(
        "the local runner", lambda: [r for r in d.api("GET", "/runners") if r["status"] == "ready"]
    )
    page.goto(d.url + "/client/")
    runner_id = page.evaluate(CONNECT, [client_token(d), page_id])
    placed = d.api("POST", "/flows", json=flow)
    assert placed["placement"]["b"] == runner_id, placed
    return str(runner_id)


def test_a_breakpoint_on_the_browser_module_pauses_the_flow_and_steps(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    runner_id = _deploy(d, page, FLOW, "page-bp")
    d.api("PUT", "/flows/trip/modules/b/breakpoint")
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": [0, 1, 2]})
    paused = wait_until(
        "the pause", lambda: [e for e in d.api("GET", "/events") if e["kind"] == "paused"]
    )
    assert (paused[0]["runner"], paused[0]["module"], paused[0]["msg"]) == (
        runner_id,
        "b",
        {"i": 0},
    )
    wait_until(
        "every part paused",
        lambda: all(p["paused"] for p in d.api("GET", "/flows/trip/debug").values()),
    )
    step = d.api("POST", "/flows/trip/step")
    assert step["trip/b"]["inputStates"]["consumed"] == {"port": "in", "msg": {"i": 0}}
    assert step["trip/b"]["outputStates"] == {"out": [{"i": 0, "seen": "browser"}]}
    # One tick per part: what b emitted in this tick may reach c's part in the same
    # step (when c's runner is stepped after b's), never more than that one message.
    assert (state_of(d, "c") or {}).get("n", 0) <= 1
    d.api("DELETE", "/flows/trip/modules/b/breakpoint")
    d.api("POST", "/flows/trip/continue")
    wait_until("the rest", lambda: state_of(d, "c") == {"ok": True, "n": 3})


def test_a_hot_swap_of_the_browser_module_keeps_its_state(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    _deploy(d, page, FLOW, "page-swap")
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": list(range(100))})
    wait_until("100 through", lambda: state_of(d, "c") == {"ok": True, "n": 100})
    new = {**FLOW, "modules": [
        {**m, "code": "exports.handle = (msg, ctx) => { ctx.state.n += 1; ctx.state.v = 2; return { ...msg, seen: 'browser' }; };\n"}
        if m["id"] == "b" else m
        for m in FLOW["modules"]
    ]}  # fmt: skip
    assert d.api("PUT", "/flows/trip", json=new)["status"] == "placed"
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": list(range(100, 200))})
    wait_until("100 more", lambda: state_of(d, "c") == {"ok": True, "n": 200})
    assert state_of(d, "b") == {"n": 200, "v": 2}  # the count went on: state kept


GOT_ALL = "def handle(msg, ctx):\n    ctx.state.setdefault('got', {})[str(msg['i'])] = 1\n"


def test_a_dropped_socket_reconnects_and_no_message_is_lost(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    flow = {**FLOW, "modules": [
        {**m, "code": GOT_ALL} if m["id"] == "c" else m for m in FLOW["modules"]
    ]}  # fmt: skip
    _deploy(d, page, flow, "page-drop")
    total = 3000
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": list(range(total))})
    page.evaluate("window.runner.drop()")
    wait_until(
        "the page to reconnect", lambda: page.evaluate("window.statuses").count("connected") >= 2
    )
    assert "reconnecting" in page.evaluate("window.statuses")
    wait_until(
        "every message past the browser module",
        lambda: len((state_of(d, "c") or {}).get("got", {})) == total,
        timeout=120,
    )
    # The module's state came back with the page: its count covers every message
    # (redelivered ones may count twice: at least once).
    assert state_of(d, "b")["n"] >= total


def test_closing_the_page_signs_its_runner_off(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    runner_id = _deploy(d, page, FLOW, "page-close")
    page.close()
    wait_until(
        "the page's runner to sign off",
        lambda: (
            next(r for r in d.api("GET", "/runners") if r["id"] == runner_id)["status"]
            == "signed-off"
        ),
    )
    flow = wait_until("the flow to wait for a page", lambda: (
        (f := d.api("GET", "/flows/trip"))["status"] == "pending" and f
    ))  # fmt: skip
    assert "runtime browser" in flow["reason"]


def test_the_demo_page_draws_what_python_and_node_compute(
    live_dispatcher: DispatcherProcess, page: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from ..conftest import REPO

    d = live_dispatcher
    wait_until(
        "the local runner", lambda: [r for r in d.api("GET", "/runners") if r["status"] == "ready"]
    )
    env = {
        **os.environ,
        "FIFOFLOW_DISPATCHER_URL": d.url,
        "FIFOFLOW_DISPATCHER_TOKEN_FILE": str(d.state_dir / "token"),
    }
    cli = [sys.executable, "-m", "fifoflow.api", "dispatcher"]
    deployed = subprocess.run(
        [*cli, "deploy", str(REPO / "flows/examples/browser-demo/flow.json")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    assert "pending" in deployed.stdout  # no page yet has the browser runtime
    token = subprocess.run(
        [*cli, "client-token"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    page.goto(f"{d.url}/client/demo.html?token={token}")
    wait_until("points drawn", lambda: int(page.inner_text("#points")) >= 40, timeout=60)
    assert d.api("GET", "/flows/browser-demo")["status"] == "placed"
    inked = page.evaluate(
        """() => {
          const c = document.getElementById("chart");
          const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let blue = 0;
          for (let i = 0; i < data.length; i += 4) if (data[i + 2] > 200 && data[i] < 100) blue++;
          return blue;
        }"""
    )
    assert inked >= 40 * 16 * 0.5, inked  # 4x4 points, allowing overlaps
    shot = tmp_path / "demo.png"
    page.locator("#chart").screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"demo screenshot: {shot} ({shot.stat().st_size} bytes, {inked} blue pixels)")


def test_a_page_carries_on_after_a_dispatcher_restart(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    runner_id = _deploy(d, page, FLOW, "page-restart")
    # the page waits at most a third of the TTL (3 heartbeats of 0.5 s) between tries:
    # the restarted dispatcher gives its runner one TTL to come back before it is lost
    assert page.evaluate("window.runner.maxDelay") == 500
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": list(range(50))})
    wait_until("50 through", lambda: state_of(d, "c") == {"ok": True, "n": 50})
    wait_until("b's snapshot", lambda: d.api("GET", "/flows/trip")["states"].get("b") == {"n": 50})
    # Same address: the page and the local runner reconnect by themselves.
    d.port = int(d.url.rsplit(":", 1)[1])
    assert d.stop() == 0
    d.start()
    wait_until(
        "the page's runner back, with the same identity",
        lambda: (
            next((r for r in d.api("GET", "/runners") if r["id"] == runner_id), {}).get("status")
            == "ready"
        ),
        timeout=60,
    )
    wait_until(
        "the flow placed", lambda: d.api("GET", "/flows/trip")["status"] == "placed", timeout=60
    )
    d.api("POST", "/flows/trip/modules/a/inputs/in", json={"msgs": list(range(50, 100))})
    wait_until("50 more, in order", lambda: state_of(d, "c") == {"ok": True, "n": 100}, timeout=60)
    assert state_of(d, "b") == {"n": 100}  # the browser module's state came back
    assert not events(d, "lost", runner_id), "the page's runner was lost meanwhile"
