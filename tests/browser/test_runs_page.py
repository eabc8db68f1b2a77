"""Runs with a browser module in real Chromium (issue 17, "central and edge"): the
server part runs on a runner process, the browser part in a page connected to the
dispatcher; the dispatcher relays between the two sides and ends the attempt when both
are idle (``dispatcher/sides.py``). One dispatcher (with one local runner) for the
module; each test connects its own page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..dispatcher.test_dispatcher import DispatcherProcess, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

BROWSER = (
    "exports.handle = (msg, ctx) => {\n"
    "  if (msg.i === 'boom') throw new Error('boom in the page');\n"
    "  if (msg.i === 'hold' && !globalThis.held) { globalThis.held = true; return new Promise(() => {}); }\n"
    "  ctx.state.n = (ctx.state.n || 0) + 1;\n"
    "  return { ...msg, seen: 'browser', n: ctx.state.n };\n"
    "};\n"
)
FLOW = {
    "fifoflow": 1,
    "id": "edge",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return {'i': msg}\n"},
        {"id": "b", "runtime": "browser", "code": BROWSER},
        {"id": "c", "runtime": "python",
         "code": "def handle(msg, ctx):\n    return {**msg, 'back': 'server'}\n"},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}  # fmt: skip

CONNECT = """async ([token, page, runs]) => {
  const { connect } = await import("/client/fifoflow.js");
  window.runEvents = [];
  window.runner = await connect(location.origin, { token, page, runs });
  window.runner.on("run", (event) => window.runEvents.push(event));
  return window.runner.runnerId;
}"""

TERMINAL = {"succeeded", "failed", "timed_out", "canceled"}


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DispatcherProcess]:
    dispatcher = DispatcherProcess(tmp_path_factory.mktemp("runs-page") / "d", heartbeat=0.5)
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


def server_runner(d: DispatcherProcess) -> str:
    return str(
        next(
            r["id"]
            for r in d.api("GET", "/runners")
            if r["status"] == "ready" and "client" not in r["hardware"].get("labels", {})
        )
    )


def connect_page(d: DispatcherProcess, page: Any, page_id: str, *, runs: bool = True) -> str:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(d.url + "/client/")
    token = d.api("GET", "/client-token")["token"]
    runner_id = str(page.evaluate(CONNECT, [token, page_id, runs]))
    wait_until(
        f"page {page_id}'s runner to take runs",
        lambda: any(
            r["id"] == runner_id and r["status"] == "ready" for r in d.api("GET", "/runners")
        ),
    )
    assert not errors, errors
    return runner_id


def submit(d: DispatcherProcess, msgs: list[Any], **options: Any) -> dict[str, Any]:
    body = {"document": FLOW, "inputs": [{"msg": m} for m in msgs], **options}
    return d.api("POST", "/runs", json=body)  # type: ignore[no-any-return]


def wait_ended(d: DispatcherProcess, run_id: str, timeout: float = 20) -> dict[str, Any]:
    try:
        return wait_until(  # type: ignore[no-any-return]
            f"run {run_id} to end",
            lambda: (v := d.api("GET", f"/runs/{run_id}"))["state"] in TERMINAL and v,
            timeout,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {d.api('GET', f'/runs/{run_id}')}") from None


def test_no_page_the_run_waits_queued_with_the_reason_then_runs_when_one_connects(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    run = submit(d, [1])
    waited = wait_until(
        "the refusal's reason in the run's events",
        lambda: [
            e
            for e in d.api("GET", f"/runs/{run['id']}")["events"]
            if e["state"] == "queued" and "no page is connected" in (e["reason"] or "")
        ],
    )
    assert "module(s) b" in waited[0]["reason"], waited
    assert d.api("GET", f"/runs/{run['id']}")["state"] == "queued"
    connect_page(d, page, "late-page")
    view = wait_ended(d, run["id"])
    assert view["state"] == "succeeded", view
    result = d.api("GET", f"/runs/{run['id']}/result")
    assert [o["msg"] for o in result["outputs"]] == [
        {"i": 1, "seen": "browser", "n": 1, "back": "server"}
    ]


def test_python_browser_python_run_succeeds_with_each_sides_progress(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    page_runner = connect_page(d, page, "page-ok")
    server = server_runner(d)
    run = submit(d, [1, 2, 3])
    view = wait_ended(d, run["id"])
    assert view["state"] == "succeeded", view
    assert view["worker"] == server
    result = d.api("GET", f"/runs/{run['id']}/result")
    assert [o["msg"] for o in result["outputs"]] == [
        {"i": i, "seen": "browser", "n": i, "back": "server"} for i in (1, 2, 3)
    ]
    assert {o["side"] for o in result["outputs"]} == {f"server:{server}"}
    assert result["handled"] == {"a": 3, "b": 3, "c": 3}
    sides = result["sides"]
    assert set(sides) == {f"server:{server}", "page:page-ok"}
    assert sides["page:page-ok"]["runner"] == page_runner
    assert sides["page:page-ok"]["state"] == "succeeded"
    assert (sides["page:page-ok"]["received"], sides["page:page-ok"]["sent"]) == (3, 3)
    assert (sides[f"server:{server}"]["received"], sides[f"server:{server}"]["sent"]) == (3, 3)
    # the run's view: each side's progress
    progress = view["progress"]["sides"]
    assert set(progress) == {f"server:{server}", "page:page-ok"}, view["progress"]
    assert progress["page:page-ok"]["handled"] == {"b": 3}
    assert progress[f"server:{server}"]["handled"] == {"a": 3, "c": 3}
    assert {p["state"] for p in progress.values()} == {"succeeded"}, progress
    # the page heard of its part
    events = wait_until(
        "the page told its part ended",
        lambda: (ev := page.evaluate("window.runEvents")) and ev[-1]["event"] == "ended" and ev,
    )
    assert [(e["event"], e["run"], e["side"]) for e in events] == [
        ("started", run["id"], "page:page-ok"),
        ("ended", run["id"], "page:page-ok"),
    ]
    assert events[0]["modules"] == ["b"]
    assert events[1]["state"] == "succeeded"


def test_an_error_raised_on_the_page_fails_the_run_as_the_pages(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    connect_page(d, page, "page-boom")
    run = submit(d, ["boom"])
    view = wait_ended(d, run["id"])
    assert view["state"] == "failed", view
    assert view["attempt"] == 1
    assert view["reason"].startswith("page:page-boom: module b raised Error: boom in the page")
    result = d.api("GET", f"/runs/{run['id']}/result")
    assert [(e["module"], e["side"]) for e in result["errors"]] == [("b", "page:page-boom")]
    assert "boom in the page" in result["errors"][0]["error"]["message"]
    assert result["sides"]["page:page-boom"]["state"] == "failed"
    assert result["outputs"] == []


def test_with_fail_on_never_the_pages_error_is_in_the_result_and_the_run_succeeds(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    d = live_dispatcher
    connect_page(d, page, "page-never")
    run = submit(d, [1, "boom", 2], failOn="never")
    view = wait_ended(d, run["id"])
    assert view["state"] == "succeeded", view
    result = d.api("GET", f"/runs/{run['id']}/result")
    assert [(e["module"], e["side"], e["msg"]) for e in result["errors"]] == [
        ("b", "page:page-never", {"i": "boom"})
    ]
    assert [o["msg"]["i"] for o in result["outputs"]] == [1, 2]
    assert result["errorsTotal"] == 1


def test_a_page_that_takes_no_runs_refuses_and_one_that_goes_away_gives_the_attempt_back(
    live_dispatcher: DispatcherProcess, page: Any, live_browser: Any
) -> None:
    d = live_dispatcher
    connect_page(d, page, "page-none", runs=False)
    run = submit(d, ["hold"])
    wait_until(
        "the page's refusal in the run's events",
        lambda: [
            e
            for e in d.api("GET", f"/runs/{run['id']}")["events"]
            if "page page-none takes no runs" in (e["reason"] or "")
        ],
    )
    # a second page takes it; its module holds the message; the page drops its socket
    other = live_browser.new_context().new_page()
    try:
        connect_page(d, other, "page-away")
        # its part starts before the message reaches it: wait for the module to hold it
        # (else attempt 2 holds it, as the first to see it, and never ends)
        wait_until(
            "the page's module to hold the message", lambda: other.evaluate("globalThis.held")
        )
        assert [e["event"] for e in other.evaluate("window.runEvents")] == ["started"]
        assert d.api("GET", f"/runs/{run['id']}")["attempt"] == 1
        other.evaluate("window.runner.drop()")  # it reconnects by itself
        view = wait_ended(d, run["id"])
    finally:
        other.context.close()
    assert view["state"] == "succeeded", view
    assert view["attempt"] == 2
    assert "went away" in (view["attempts"][0]["reason"] or ""), view["attempts"]
    result = d.api("GET", f"/runs/{run['id']}/result")
    assert [o["msg"]["i"] for o in result["outputs"]] == ["hold"]
    assert "page:page-away" in result["sides"]


def test_a_port_wired_within_the_server_side_and_to_the_page_feeds_both(
    live_dispatcher: DispatcherProcess, page: Any
) -> None:
    # a.out feeds t on the server side and b on the page: every message goes both ways
    d = live_dispatcher
    connect_page(d, page, "page-fork")
    fork = {
        **FLOW,
        "id": "fork",
        "modules": [
            *FLOW["modules"],
            {"id": "t", "runtime": "python", "code": "def handle(msg, ctx):\n    return {**msg, 'tap': True}\n"},
        ],
        "wires": [*FLOW["wires"], "a.out -> t.in"],
    }  # fmt: skip
    run = d.api("POST", "/runs", json={"document": fork, "inputs": [{"msg": i} for i in (1, 2)]})
    view = wait_ended(d, run["id"])
    assert view["state"] == "succeeded", view
    result = d.api("GET", f"/runs/{run['id']}/result")
    got = sorted((o["from"], o["msg"]["i"]) for o in result["outputs"])
    assert got == [("c.out", 1), ("c.out", 2), ("t.out", 1), ("t.out", 2)], result["outputs"]
    # (a -> t is a wire inside one host: its host counts it, PROTOCOL.md section 12)
    assert result["handled"] == {"a": 2, "b": 2, "c": 2, "t": 2}
