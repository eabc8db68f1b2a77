"""The web page at /ui/ in real headless Chromium against a real ``fifoflow runner
serve``: the token is taken from the URL once and removed from the address bar, a wrong
one is refused with a clear message, the flows list shows a deployed flow, the graph of
flows/examples/fan-out-fan-in shows every module and wire, messages injected through the
API appear as rates on the wires the runner routes (and "/s in host" on same-runtime ones),
and no request leaves the server. Its screenshot is the README's docs/ui/graph.png with FIFOFLOW_UPDATE_PICTURES=1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from fifoflow.flows.codec import dump_flow, load_flow

from ..api.helpers import ServerProcess
from .conftest import picture_path

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "flows" / "examples" / "fan-out-fan-in" / "flow.json"
CROSS_HOST = [
    "split.letters->letters.in",
    "split.reverse->reverse.in",
    "letters.out->join.in",
    "reverse.out->join.in",
]
IN_HOST = ["split.words->words.in", "words.out->join.in"]


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("ui-page") / "state")
    server.start()
    try:
        token = (server.state_dir / "token").read_text().strip()
        document = orjson.loads(
            dump_flow(load_flow(EXAMPLE, runtimes=["python", "node"]), inline=True)
        )
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            assert http.put("/flows/fan-out-fan-in", json=document).status_code == 201
            assert http.post("/flows/fan-out-fan-in/start").status_code == 200
        yield server, token
    finally:
        server.stop()


def _watch(page: Any, origin: str) -> list[str]:
    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(origin + "/") else foreign.append(r.url))
    return foreign


def test_token_in_url_is_taken_and_removed(
    live_runner: tuple[ServerProcess, str], page: Any
) -> None:
    server, token = live_runner
    foreign = _watch(page, server.url)
    page.goto(f"{server.url}/ui/?token={token}")
    page.wait_for_selector('#flow-table tr[data-flow="fan-out-fan-in"]', timeout=15_000)
    assert "token" not in page.url
    assert page.url == f"{server.url}/ui/"
    assert page.evaluate("document.body.dataset.server") == "runner"
    row = page.locator('#flow-table tr[data-flow="fan-out-fan-in"]')
    assert "running" in row.inner_text()
    assert page.evaluate("sessionStorage.getItem('fifoflow-token')") == token
    assert foreign == []


def test_wrong_token_is_refused_clearly(live_runner: tuple[ServerProcess, str], page: Any) -> None:
    server, _ = live_runner
    page.goto(f"{server.url}/ui/?token=not-the-token")
    page.wait_for_selector("#login:not([hidden])", timeout=15_000)
    message = page.locator("#login-message")
    assert "token was refused" in message.inner_text()
    assert "wrong token" in message.inner_text()
    assert page.evaluate("sessionStorage.getItem('fifoflow-token')") is None


def test_graph_shows_every_module_and_wire_and_live_rates(
    live_runner: tuple[ServerProcess, str], page: Any, tmp_path: Path
) -> None:
    server, token = live_runner
    foreign = _watch(page, server.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{server.url}/ui/?token={token}")
    page.click('#flow-table tr[data-flow="fan-out-fan-in"]', timeout=15_000)
    page.wait_for_selector("#graph-view svg [data-module]", timeout=15_000)
    modules = page.eval_on_selector_all(
        "#graph-view [data-module]", "els => els.map(e => e.dataset.module)"
    )
    wires = page.eval_on_selector_all(
        "#graph-view [data-wire]", "els => els.map(e => e.dataset.wire)"
    )
    assert sorted(modules) == ["join", "letters", "reverse", "split", "words"]
    assert sorted(wires) == sorted(CROSS_HOST + IN_HOST)

    rate = """w => { const g = document.querySelector(`[data-wire="${w}"]`);
                     return g && g.dataset.rate ? Number(g.dataset.rate) : 0; }"""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        deadline = time.monotonic() + 30
        while True:
            answer = http.post(
                "/flows/fan-out-fan-in/modules/split/inputs/in", json={"msgs": ["a b c"] * 20}
            )
            assert answer.status_code == 200, answer.text
            if all(page.evaluate(rate, w) > 0 for w in CROSS_HOST + IN_HOST):
                break
            assert time.monotonic() < deadline, "no rates on the wires"
            page.wait_for_timeout(100)  # the page's own clock: it polls once a second
    for w in IN_HOST:
        assert page.eval_on_selector(f'[data-wire="{w}"]', "g => g.dataset.via") == "host"
        # the hosts count what they deliver inside themselves: a rate, marked in host
        label = page.eval_on_selector(f'[data-wire="{w}"] .ff-rate', "t => t.textContent")
        assert label.endswith("/s in host"), label
    assert page.eval_on_selector(
        '[data-wire="split.letters->letters.in"] .ff-rate', "t => t.textContent"
    ).endswith("/s")
    shot = picture_path("graph.png", tmp_path)
    page.locator("#graph").screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    assert foreign == []
    assert errors == []
