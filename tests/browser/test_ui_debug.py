"""Debugging on the /ui/ page (issue 18 item 5) in real headless Chromium against a real
``fifoflow runner serve``: a click on a module's breakpoint dot sets a breakpoint (seen
through the API), the flow pauses on the next injected message (the page says where),
Step shows what every module consumed and emitted, a waiting message edited in the page
reaches the module it waited for, Continue resumes, the dot clears the breakpoint, and a
message injected from the page goes through. No request leaves the server. Its screenshot is
the README's docs/ui/step.png with FIFOFLOW_UPDATE_PICTURES=1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..api.helpers import ServerProcess
from ..dispatcher.test_dispatcher import DispatcherProcess, wait_until
from .conftest import picture_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: add one, then keep the last message in the state (what the test reads back)
FLOW: dict[str, Any] = {
    "fifoflow": 1,
    "id": "dbg",
    "modules": [
        {
            "id": "add",
            "runtime": "python",
            "code": "def handle(msg, ctx):\n    return {'n': msg['n'] + 1}\n",
        },
        {
            "id": "keep",
            "runtime": "python",
            "code": "def handle(msg, ctx):\n    ctx.state['last'] = msg\n    return msg\n",
        },
    ],
    "wires": ["add.out -> keep.in"],
}


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("ui-debug") / "state")
    server.start()
    try:
        token = (server.state_dir / "token").read_text().strip()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as h:
            assert h.put("/flows/dbg", json=FLOW).status_code == 201
            assert h.post("/flows/dbg/start").status_code == 200
        yield server, token
    finally:
        server.stop()


def until(check: Callable[[], Any], page: Any, what: str, seconds: float = 20) -> Any:
    """``check()`` until it is truthy; between tries the page's own clock runs."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(100)


def test_breakpoint_pause_step_edit_continue_inject(
    live_runner: tuple[ServerProcess, str], page: Any, tmp_path: Path
) -> None:
    server, token = live_runner
    foreign: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(server.url + "/") else foreign.append(r.url)
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{server.url}/ui/?token={token}")
    page.click('#flow-table tr[data-flow="dbg"]', timeout=15_000)
    page.wait_for_selector('#graph-view g[data-module="add"] .ff-bp-dot', timeout=15_000)
    page.wait_for_selector("#debug:not([hidden])")

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        state = lambda m: http.get(f"/flows/dbg/modules/{m}/state").json()["state"]  # noqa: E731

        # a click on the dot: a breakpoint, seen through the API and marked on the graph
        page.click('g[data-module="add"] .ff-bp-dot')
        until(
            lambda: (
                [b["module"] for b in http.get("/flows/dbg/debug").json()["breakpoints"]] == ["add"]
            ),
            page,
            "the click set no breakpoint",
        )
        page.wait_for_selector('g[data-module="add"].breakpoint', timeout=5_000)

        # the next message pauses the flow at add; the page says where and what
        assert (
            http.post("/flows/dbg/modules/add/inputs/in", json={"msg": {"n": 1}}).status_code == 200
        )
        page.wait_for_selector('#dbg-status[data-paused="true"]', timeout=15_000)
        status = page.inner_text("#dbg-status")
        assert "add" in status
        assert "breakpoint" in status
        assert '{"n":1}' in status
        page.wait_for_selector('g[data-module="add"].paused-here')
        assert http.get("/flows/dbg/debug").json()["paused"] is True

        # Step: add consumed {"n": 1} and emitted {"n": 2}, on the graph and in the list
        page.click("#dbg-step")
        item = page.wait_for_selector('#dbg-steps li[data-module="add"]', timeout=15_000)
        text = item.inner_text()
        assert 'consumed in: {"n":1}' in text
        assert 'emitted out: {"n":2}' in text
        classes = page.eval_on_selector('g[data-module="add"]', "g => [...g.classList]")
        assert "consumed" in classes
        assert "emitted" in classes
        assert page.locator('g[data-output="add.out"].emitted').count() == 1

        # what waits at keep, listed while paused; screenshot of the paused step
        area = page.wait_for_selector('#dbg-queues li[data-module="keep"] textarea', timeout=15_000)
        assert '{"n":2}' in area.input_value()
        shot = picture_path("step.png", tmp_path)
        page.locator("#graph").screenshot(path=str(shot))
        assert shot.stat().st_size > 1000

        # edited in the page: the queue holds the new message
        area.fill('{"n": 41}')
        page.click('#dbg-queues li[data-module="keep"] button[data-action="save"]')
        until(
            lambda: (
                http.get("/flows/dbg/queues").json().get("keep", [{}])[0].get("msg") == {"n": 41}
            ),
            page,
            "the edit did not reach the queue",
        )

        # Continue: the flow runs, keep handles the edited message
        page.click("#dbg-continue")
        until(
            lambda: state("keep") == {"last": {"n": 41}}, page, "the edited message never arrived"
        )
        page.wait_for_selector('#dbg-status[data-paused="false"]', timeout=15_000)
        assert http.get("/flows/dbg/debug").json()["paused"] is False

        # the dot again: the breakpoint is gone
        page.click('g[data-module="add"] .ff-bp-dot')
        until(
            lambda: http.get("/flows/dbg/debug").json()["breakpoints"] == [],
            page,
            "the second click did not clear the breakpoint",
        )

        # inject from the page into add.in
        page.select_option("#dbg-port", "add.in")
        page.fill("#dbg-msg", '{"n": 10}')
        page.click("#dbg-inject")
        until(
            lambda: state("keep") == {"last": {"n": 11}}, page, "the injected message never arrived"
        )
        # the page says so once its call has answered (the message may arrive first)
        until(
            lambda: "injected into add.in" in page.inner_text("#dbg-message"),
            page,
            "the page did not say where it injected",
        )

    assert foreign == []
    assert errors == []


def test_selected_module_and_conditional_breakpoint(
    live_runner: tuple[ServerProcess, str], page: Any
) -> None:
    """The panel's ff-module event selects the module; "breakpoint here" sets a
    breakpoint with the condition typed; a message that does not match passes."""
    server, token = live_runner
    page.goto(f"{server.url}/ui/?token={token}")
    page.click('#flow-table tr[data-flow="dbg"]', timeout=15_000)
    page.wait_for_selector('#graph-view g[data-module="keep"] .ff-bp-dot', timeout=15_000)
    page.evaluate(
        """() => document.dispatchEvent(new CustomEvent("ff-module",
               {detail: {flow: "dbg", module: "keep"}}))"""
    )
    assert page.input_value("#dbg-module") == "keep"
    assert page.input_value("#dbg-port") == "keep.in"
    page.fill("#dbg-condition", "msg.n == 100")
    page.click("#dbg-break")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        until(
            lambda: (
                http.get("/flows/dbg/debug").json()["breakpoints"]
                == [{"module": "keep", "condition": "msg.n == 100", "hits": 0}]
            ),
            page,
            "no conditional breakpoint",
        )
        page.wait_for_selector('g[data-module="keep"].breakpoint', timeout=5_000)
        assert page.get_attribute('g[data-module="keep"]', "data-breakpoint") == "msg.n == 100"
        assert (
            http.post("/flows/dbg/modules/add/inputs/in", json={"msg": {"n": 5}}).status_code == 200
        )
        until(
            lambda: http.get("/flows/dbg/modules/keep/state").json()["state"] == {"last": {"n": 6}},
            page,
            "a message not matching the condition was held",
        )
        assert (
            http.post("/flows/dbg/modules/add/inputs/in", json={"msg": {"n": 99}}).status_code
            == 200
        )
        page.wait_for_selector('#dbg-status[data-paused="true"]', timeout=15_000)
        assert "keep" in page.inner_text("#dbg-status")
        page.click("#dbg-unbreak")
        page.click("#dbg-continue")
        until(
            lambda: (
                http.get("/flows/dbg/modules/keep/state").json()["state"] == {"last": {"n": 100}}
            ),
            page,
            "continue did not let the message pass",
        )
        assert http.get("/flows/dbg/debug").json() == {
            "paused": False,
            "pause": None,
            "breakpoints": [],
        }


#: python -> node on one runner: the wire between them goes through the runner (counted)
CROSS: dict[str, Any] = {
    "fifoflow": 1,
    "id": "cross",
    "modules": [
        {"id": "add", "runtime": "python", "code": FLOW["modules"][0]["code"]},
        {"id": "keep", "runtime": "node", "code": "exports.handle = (msg, ctx) => msg;\n"},
    ],
    "wires": ["add.out -> keep.in"],
}


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatcherProcess]:
    dispatcher = DispatcherProcess(tmp_path_factory.mktemp("ui-dispatcher") / "d", heartbeat=0.5)
    dispatcher.command = lambda: [  # type: ignore[method-assign]
        *DispatcherProcess.command(dispatcher), "--local-runners", "1",
    ]  # fmt: skip
    dispatcher.start()
    try:
        wait_until(
            "the local runner",
            lambda: [r for r in dispatcher.api("GET", "/runners") if r["status"] == "ready"],
        )
        yield dispatcher
    finally:
        dispatcher.stop()


def test_dispatcher_graph_shows_holders_and_rates(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    d.api("PUT", "/flows/cross", json=CROSS)
    placed = wait_until(
        "the flow placed",
        lambda: (f := d.api("GET", "/flows/cross"))["status"] == "placed" and f,
    )
    runner = placed["placement"]["add"]
    stats = d.api("GET", "/flows/cross/stats")
    assert {m: s["runner"] for m, s in stats["modules"].items()} == {"add": runner, "keep": runner}
    assert stats["modules"]["keep"]["reachable"] is True
    assert stats["wires"][0]["wire"] == "add.out->keep.in"
    assert stats["wires"][0]["via"] == "runner"

    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(d.url + "/") else foreign.append(r.url))
    token = (d.state_dir / "token").read_text().strip()
    page.goto(f"{d.url}/ui/?token={token}")
    page.click('#flow-table tr[data-flow="cross"]', timeout=15_000)
    page.wait_for_selector(f'g[data-module="add"][data-holder="{runner}"]', timeout=15_000)
    assert page.text_content('g[data-module="keep"] .ff-holder') == f"on {runner}"
    rate = """() => Number(document.querySelector('[data-wire="add.out->keep.in"]').dataset.rate || 0)"""
    deadline = time.monotonic() + 30
    while page.evaluate(rate) <= 0:
        d.api("POST", "/flows/cross/modules/add/inputs/in", json={"msgs": [{"n": 1}] * 20})
        assert time.monotonic() < deadline, "no rate on the wire"
        page.wait_for_timeout(100)
    assert page.text_content('[data-wire="add.out->keep.in"] .ff-rate').endswith("/s")
    assert d.api("GET", "/flows/cross/stats")["wires"][0]["messages"] >= 20
    assert foreign == []
