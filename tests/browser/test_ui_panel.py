"""The module panel of the page (api/ui/static/panel.js) in real headless Chromium against
a real ``fifoflow runner serve``: clicking a module opens its panel; its state is shown and
refreshed (messages injected through the API change the count on the page); editing its
code in the CodeMirror editor and Apply hot-swaps it (the outputs change, the state is
kept, both checked through the API); a syntax error is refused, shown in the panel, and the
old code keeps running; a module that raised shows its error with traceback and input, and
its log lines. No request leaves the server. Its screenshot is docs/ui/editor.png with
FIFOFLOW_UPDATE_PICTURES=1.

The flow: ``count`` (the counter example's code) -> ``sink`` (keeps what it received in its
state, so the outputs are read through GET .../modules/sink/state), and ``boom`` (prints,
then raises)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..api.helpers import ServerProcess
from .conftest import picture_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COUNT = (ROOT / "flows" / "examples" / "counter" / "count.py").read_text()
SINK = """\
def handle(msg, ctx):
    seen = ctx.state.setdefault("seen", [])
    seen.append(msg)
    del seen[:-20]
"""
BOOM = """\
def handle(msg, ctx):
    print("boom handles", msg)
    raise ValueError("cannot take " + repr(msg))
"""
FLOW = {
    "fifoflow": 1,
    "id": "panel",
    "modules": [
        {"id": "count", "runtime": "python", "code": COUNT},
        {"id": "sink", "runtime": "python", "code": SINK},
        {"id": "boom", "runtime": "python", "code": BOOM, "config": {"limit": 3}},
    ],
    "wires": ["count.out -> sink.in"],
}


@pytest.fixture(scope="module")
def live_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    server = ServerProcess(tmp_path_factory.mktemp("ui-panel") / "state")
    server.start()
    try:
        token = (server.state_dir / "token").read_text().strip()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as h:
            assert h.put("/flows/panel", json=FLOW).status_code == 201
            assert h.post("/flows/panel/start").status_code == 200
        yield server, token
    finally:
        server.stop()


@pytest.fixture
def http(live_runner: tuple[ServerProcess, str]) -> Iterator[httpx.Client]:
    server, token = live_runner
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as h:
        yield h


def _until(page: Any, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll ``check`` (an API read) on the page's clock until it is truthy."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)
    return value


def _inject(http: httpx.Client, module: str, msgs: list[Any]) -> None:
    answer = http.post(f"/flows/panel/modules/{module}/inputs/in", json={"msgs": msgs})
    assert answer.status_code == 200, answer.text


def _state(http: httpx.Client, module: str) -> Any:
    answer = http.get(f"/flows/panel/modules/{module}/state")
    assert answer.status_code == 200, answer.text
    return answer.json()["state"]


def _open_panel(page: Any, server: ServerProcess, token: str, module: str) -> list[str]:
    """Open the page, the flow's graph and ``module``'s panel; the requests that left."""
    foreign: list[str] = []
    origin = server.url + "/"
    page.on("request", lambda r: None if r.url.startswith(origin) else foreign.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{server.url}/ui/?token={token}")
    page.click('#flow-table tr[data-flow="panel"]', timeout=15_000)
    page.click(f'#graph-view [data-module="{module}"]', timeout=15_000)
    page.wait_for_selector(f'#panel[data-module="{module}"]:not([hidden])', timeout=15_000)
    page.wait_for_selector("#panel-config .cm-content", timeout=15_000)
    foreign.extend(errors)  # a page error fails the same check
    return foreign


def _set_code(page: Any, code: str) -> None:
    """Replace the editor's text the way a user would: select all, type."""
    page.click("#panel-code .cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(code)


def _editor_text(page: Any, host: str) -> str:
    return page.eval_on_selector(host, "e => e.cmView.state.doc.toString()")


def test_panel_shows_state_and_refreshes(
    live_runner: tuple[ServerProcess, str], page: Any, http: httpx.Client
) -> None:
    server, token = live_runner
    foreign = _open_panel(page, server, token, "count")
    assert page.inner_text("#panel-runtime") == "python"
    assert (
        _editor_text(page, "#panel-code")
        == http.get("/flows/panel").json()["flow"]["modules"][0]["code"]
    )
    assert page.locator("#panel-code .cm-line span").count() > 0
    before = _state(http, "count")["counts"].get("state-key", 0)
    _inject(http, "count", ["state-key"] * 3)
    _until(page, lambda: _state(http, "count")["counts"].get("state-key") == before + 3, "count")
    page.wait_for_function(
        "n => document.getElementById('panel-state').textContent.includes(`\"state-key\": ${n}`)",
        arg=before + 3,
        timeout=10_000,
    )
    refreshed = int(page.get_attribute("#panel-state", "data-refreshed"))
    _inject(http, "count", ["state-key"] * 2)
    page.wait_for_function(
        "n => document.getElementById('panel-state').textContent.includes(`\"state-key\": ${n}`)",
        arg=before + 5,
        timeout=10_000,
    )
    assert int(page.get_attribute("#panel-state", "data-refreshed")) > refreshed
    assert foreign == []


def test_apply_hot_swaps_code_and_keeps_state(
    live_runner: tuple[ServerProcess, str], page: Any, http: httpx.Client, tmp_path: Path
) -> None:
    server, token = live_runner
    _inject(http, "count", ["swap"] * 2)
    _until(page, lambda: _state(http, "count")["counts"].get("swap") == 2, "two counted")
    revision = http.get("/flows/panel").json()["revision"]
    foreign = _open_panel(page, server, token, "count")
    edited = COUNT.replace(
        'return {"key": key, "count": counts[key]}',
        'return {"key": key, "count": counts[key], "edited": "in the page"}',
    )
    assert edited != COUNT
    _set_code(page, edited)
    assert _editor_text(page, "#panel-code") == edited
    shot = picture_path("editor.png", tmp_path)
    page.screenshot(path=str(shot))  # the graph, the selected module, its panel
    assert shot.stat().st_size > 1000
    page.click("#panel-apply")
    page.wait_for_selector('#panel[data-result="applied"]', timeout=15_000)
    report = page.inner_text("#panel-report")
    assert "hot-swapped" in report
    assert "code: count" in report
    detail = http.get("/flows/panel").json()
    assert detail["revision"] == revision + 1
    assert detail["flow"]["modules"][0]["code"] == edited
    # the state was kept (the count goes on from 2) and the new code makes the outputs
    _inject(http, "count", ["swap"])
    seen = _until(
        page,
        lambda: (
            [m for m in _state(http, "sink").get("seen", []) if m.get("key") == "swap"][-1:]
            if any(
                m.get("key") == "swap" and m.get("count") == 3
                for m in _state(http, "sink").get("seen", [])
            )
            else None
        ),
        "the swapped module's output",
    )
    assert seen == [{"key": "swap", "count": 3, "edited": "in the page"}]
    assert foreign == []


def test_syntax_error_is_refused_and_old_code_keeps_running(
    live_runner: tuple[ServerProcess, str], page: Any, http: httpx.Client
) -> None:
    server, token = live_runner
    running = http.get("/flows/panel").json()
    old_code = running["flow"]["modules"][0]["code"]
    foreign = _open_panel(page, server, token, "count")
    _set_code(page, "def handle(msg, ctx)\n    return msg\n")
    page.click("#panel-apply")
    page.wait_for_selector('#panel[data-result="refused"]', timeout=15_000)
    message = page.inner_text("#panel-message")
    assert "SyntaxError" in message
    assert "'count'" in message
    assert "previous code keeps running" in message
    after = http.get("/flows/panel").json()
    assert after["revision"] == running["revision"]
    assert after["flow"]["modules"][0]["code"] == old_code
    # the old code answers
    count = _state(http, "count")["counts"].get("after-refusal", 0)
    _inject(http, "count", ["after-refusal"])
    _until(
        page,
        lambda: any(
            m.get("key") == "after-refusal" and m.get("count") == count + 1
            for m in _state(http, "sink").get("seen", [])
        ),
        "an output of the old code",
    )
    assert foreign == []


def test_errors_show_with_traceback_input_and_logs(
    live_runner: tuple[ServerProcess, str], page: Any, http: httpx.Client
) -> None:
    server, token = live_runner
    foreign = _open_panel(page, server, token, "boom")
    assert '"limit": 3' in _editor_text(page, "#panel-config")
    _inject(http, "boom", [{"n": 41}])
    page.wait_for_selector("#panel-errors li.ff-error", timeout=15_000)
    item = page.locator("#panel-errors li.ff-error").first
    assert "ValueError: cannot take {'n': 41}" in item.locator(".ff-error-head").inner_text()
    assert '{"n":41}' in item.locator(".ff-error-input").inner_text()
    trace = item.locator(".ff-traceback").inner_text()
    assert trace.startswith("Traceback (most recent call last):")
    assert "line 3, in handle" in trace
    page.wait_for_function(
        "() => document.getElementById('panel-logs').textContent.includes('boom handles')",
        timeout=10_000,
    )
    assert foreign == []


def test_apply_config_and_refuse_config_that_is_not_json(
    live_runner: tuple[ServerProcess, str], page: Any, http: httpx.Client
) -> None:
    server, token = live_runner
    foreign = _open_panel(page, server, token, "boom")
    page.click("#panel-config .cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.insert_text('{"limit": ')
    page.click("#panel-apply")
    page.wait_for_selector('#panel[data-result="refused"]', timeout=15_000)
    assert "config: not JSON" in page.inner_text("#panel-message")
    assert _module(http, "boom")["config"] == {"limit": 3}
    page.click("#panel-config .cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.insert_text('{"limit": 5}')
    page.click("#panel-apply")
    page.wait_for_selector('#panel[data-result="applied"]', timeout=15_000)
    assert "config: boom" in page.inner_text("#panel-report")
    assert page.inner_text("#panel-message") == ""
    assert _module(http, "boom")["config"] == {"limit": 5}
    assert foreign == []


def _module(http: httpx.Client, module: str) -> dict[str, Any]:
    modules = http.get("/flows/panel").json()["flow"]["modules"]
    return next(m for m in modules if m["id"] == module)
