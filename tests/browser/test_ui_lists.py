"""The lists on the /ui/ page (issue 18 item 2) and a relayed wire's rate (item 3) in
real headless Chromium against real processes:

- ``fifoflow runner serve``: a flow file dropped on the flows list (a ``drop`` event with
  a DataTransfer holding a File made in the page) is added, listed and there through the
  API; a dropped flow the server refuses shows the server's message, naming the file.
- ``fifoflow dispatcher serve`` with two runners labelled ``zone=a`` and ``zone=b``: the
  runners table shows each runner's status, labels and what it holds; a run submitted
  through the API is listed with its state, attempt and duration, and a click shows its
  events; a flow placed across the two runners shows the rate of its relayed wire on
  the graph, and ``/stats`` counts the messages relayed.

No request leaves the server the page came from."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from ..api.helpers import ServerProcess
from ..dispatcher.test_dispatcher import DispatcherProcess, linked_id, wait_until
from .test_ui_debug import until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

#: a DataTransfer holding one File, made in the page (what a drag from the desktop gives)
DATA_TRANSFER = """([name, text]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, {type: "application/json"}));
  return dt;
}"""

DROPPED: dict[str, Any] = {
    "fifoflow": 1,
    "id": "dropped",
    "modules": [
        {"id": "up", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"}
    ],
    "wires": [],
}
#: a wire to a module the flow does not have: the server refuses it (422)
REFUSED: dict[str, Any] = {**DROPPED, "id": "refused", "wires": ["up.out -> nowhere.in"]}


def _foreign(page: Any, origin: str) -> list[str]:
    foreign: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(origin + "/") else foreign.append(r.url))
    return foreign


def _drop(page: Any, name: str, text: str) -> None:
    dt = page.evaluate_handle(DATA_TRANSFER, [name, text])
    try:
        page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
    finally:
        dt.dispose()


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("ui-lists") / "state")
    server.start()
    try:
        yield server, (server.state_dir / "token").read_text().strip()
    finally:
        server.stop()


def test_a_dropped_flow_file_is_added_and_a_refused_one_says_why(
    live_runner: tuple[ServerProcess, str], page: Any
) -> None:
    server, token = live_runner
    foreign = _foreign(page, server.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/ui/?token={token}")
    page.wait_for_selector("#flows:not([hidden])", timeout=15_000)

    _drop(page, "flow.json", orjson.dumps(DROPPED).decode())
    page.wait_for_selector('#flow-table tr[data-flow="dropped"]', timeout=15_000)
    assert page.inner_text("#flows-message") == "added dropped"
    assert page.get_attribute("#flows-message", "data-kind") == "ok"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        answer = http.get("/flows/dropped")
        assert answer.status_code == 200, answer.text
        assert [m["id"] for m in answer.json()["flow"]["modules"]] == ["up"]

        # the server's refusal, shown with the file's name; nothing added
        _drop(page, "bad.json", orjson.dumps(REFUSED).decode())
        message = until(
            lambda: "bad.json" in (t := page.inner_text("#flows-message")) and t,
            page,
            "the refusal was not shown",
        )
        refused = http.put("/flows/refused", json=REFUSED)
        assert refused.status_code == 422
        assert refused.json()["error"]["message"] in message
        assert "nowhere" in message
        assert page.get_attribute("#flows-message", "data-kind") == "error"
        assert http.get("/flows/refused").status_code == 404

        # a file that is not JSON: said so by the page, with the file's name
        _drop(page, "notes.json", "{not json")
        until(
            lambda: "notes.json is not JSON" in page.inner_text("#flows-message"),
            page,
            "a file that is not JSON was not refused",
        )
    assert page.locator('#flow-table tr[data-flow="refused"]').count() == 0
    assert foreign == []
    assert errors == []


#: a -> b -> c with b on the runner labelled zone=b: two wires through the relay
SPAN: dict[str, Any] = {
    "fifoflow": 1,
    "id": "span",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n",
         "placement": {"labels": {"zone": "a"}}},
        {"id": "b", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n",
         "placement": {"labels": {"zone": "b"}}},
        {"id": "c", "runtime": "python",
         "code": "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n",
         "placement": {"labels": {"zone": "a"}}},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}  # fmt: skip
RELAYED = ["a.out->b.in", "b.out->c.in"]

#: a run: one python module doubling what it is given
RUN_FLOW: dict[str, Any] = {
    "fifoflow": 1,
    "id": "double",
    "modules": [
        {"id": "x2", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg * 2\n"}
    ],
    "wires": [],
}


@pytest.fixture(scope="module")
def live_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DispatcherProcess, dict[str, str]]]:
    """A dispatcher and two runners linked to it, labelled zone=a and zone=b; with the
    runner id of each zone."""
    root = tmp_path_factory.mktemp("ui-cluster")
    dispatcher = DispatcherProcess(root / "d", heartbeat=0.5)
    dispatcher.start()
    runners: list[ServerProcess] = []
    try:
        for zone in ("a", "b"):
            runner = ServerProcess(
                root / zone, "--dispatcher", dispatcher.url,
                "--registration-token", dispatcher.token(), "--label", f"zone={zone}",
            )  # fmt: skip
            runners.append(runner)
            runner.start()
        ids = {zone: linked_id(r) for zone, r in zip("ab", runners, strict=True)}
        wait_until(
            "both runners ready",
            lambda: (
                sorted(r["id"] for r in dispatcher.api("GET", "/runners") if r["status"] == "ready")
                == sorted(ids.values())
            ),
        )
        yield dispatcher, ids
    finally:
        for runner in runners:
            runner.stop()
        dispatcher.stop()


def test_dispatcher_lists_runners_and_runs_with_events(
    live_cluster: tuple[DispatcherProcess, dict[str, str]], page: Any
) -> None:
    d, ids = live_cluster
    placed = d.api("PUT", "/flows/span", json=SPAN)
    assert placed["placement"] == {"a": ids["a"], "b": ids["b"], "c": ids["a"]}
    foreign = _foreign(page, d.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{d.url}/ui/?token={(d.state_dir / 'token').read_text().strip()}")
    page.wait_for_selector("#runners:not([hidden])", timeout=15_000)

    # the runners: status, labels, and which modules of which flows each holds
    for zone, runner in ids.items():
        row = page.wait_for_selector(f'#runner-table tr[data-runner="{runner}"]', timeout=15_000)
        until(lambda r=row: "span:" in r.inner_text(), page, f"runner {zone} holds nothing")
        cells = row.eval_on_selector_all("td", "tds => tds.map(td => td.textContent)")
        assert cells[1] == "ready"
        assert cells[2].endswith(" s ago")
        assert f"zone={zone}" in cells[4].split()
        assert cells[5] == ("span: a, c" if zone == "a" else "span: b")

    # a run: listed with its state, attempt and duration; a click shows its events
    run = d.api("POST", "/runs", json={"document": RUN_FLOW, "inputs": [{"msg": 21}]})
    ended = wait_until(
        "the run to succeed",
        lambda: (v := d.api("GET", f"/runs/{run['id']}"))["state"] == "succeeded" and v,
    )
    row = page.wait_for_selector(f'#run-table tr[data-run="{run["id"]}"]', timeout=15_000)
    until(lambda: "succeeded" in row.inner_text(), page, "the run's state is not shown")
    cells = row.eval_on_selector_all("td", "tds => tds.map(td => td.textContent)")
    assert cells[:4] == [run["id"], "double", "succeeded", "1"]
    duration = float(cells[4].removesuffix(" s"))
    assert duration == pytest.approx(ended["endedAt"] - ended["startedAt"], abs=0.051)
    page.click(f'#run-table tr[data-run="{run["id"]}"]')
    shown = until(
        lambda: "succeeded" in (t := page.inner_text("#run-events")) and t,
        page,
        "the run's events were not shown",
    )
    assert page.get_attribute("#run-events", "data-run") == run["id"]
    lines = shown.splitlines()
    assert len(lines) == len(ended["events"])
    assert [e["state"] for e in ended["events"]] == [line.split("  ")[1] for line in lines]
    assert ids["a"] in shown or ids["b"] in shown  # the worker that ran it
    assert foreign == []
    assert errors == []


def test_a_relayed_wire_shows_its_rate_on_the_dispatchers_graph(
    live_cluster: tuple[DispatcherProcess, dict[str, str]], page: Any
) -> None:
    d, ids = live_cluster
    d.api("PUT", "/flows/span", json=SPAN)
    stats = d.api("GET", "/flows/span/stats")
    assert {w["wire"]: w["via"] for w in stats["wires"]} == dict.fromkeys(RELAYED, "relay")
    before = {w["wire"]: w["messages"] for w in stats["wires"]}
    foreign = _foreign(page, d.url)
    page.goto(f"{d.url}/ui/?token={(d.state_dir / 'token').read_text().strip()}")
    page.click('#flow-table tr[data-flow="span"]', timeout=15_000)
    page.wait_for_selector(f'g[data-module="b"][data-holder="{ids["b"]}"]', timeout=15_000)
    assert page.text_content('g[data-module="a"] .ff-holder') == f"on {ids['a']}"

    rate = """w => Number(document.querySelector(`[data-wire="${w}"]`).dataset.rate || 0)"""
    injected = 0
    deadline = time.monotonic() + 30
    while not all(page.evaluate(rate, w) > 0 for w in RELAYED):
        d.api("POST", "/flows/span/modules/a/inputs/in", json={"msgs": list(range(20))})
        injected += 20
        assert time.monotonic() < deadline, "no rate on the relayed wires"
        page.wait_for_timeout(100)  # the page's own clock: it polls once a second
    for w in RELAYED:
        assert page.eval_on_selector(f'[data-wire="{w}"]', "g => g.dataset.via") == "relay"
        assert page.text_content(f'[data-wire="{w}"] .ff-rate').endswith("/s")
    # /stats counts every message relayed on each wire
    wait_until(
        "every injected message relayed twice",
        lambda: all(
            w["messages"] - before[w["wire"]] == injected
            for w in d.api("GET", "/flows/span/stats")["wires"]
        ),
    )
    assert foreign == []
