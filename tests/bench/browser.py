"""Messages between server modules and a browser module (``--only browser``): a python
module on a runner process sends to a module in a page in headless Chromium (one way),
and python -> browser -> python (round trip), through the dispatcher's relay. Needs
/usr/bin/chromium (``make test`` installs it); skipped without."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ..browser.conftest import ARGS, CHROMIUM
from ..dispatcher.test_dispatcher import DispatcherProcess

ONE_WAY = {
    "fifoflow": 1,
    "id": "oneway",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
        {"id": "b", "runtime": "browser", "outputs": [],
         "code": "exports.handle = (msg, ctx) => { ctx.state.n = (ctx.state.n || 0) + 1; };\n"},
    ],
    "wires": ["a.out -> b.in"],
}  # fmt: skip
ROUND_TRIP = {
    "fifoflow": 1,
    "id": "trip",
    "modules": [
        {"id": "a", "runtime": "python", "code": "def handle(msg, ctx):\n    return msg\n"},
        {"id": "b", "runtime": "browser", "code": "exports.handle = (msg) => msg;\n"},
        {"id": "c", "runtime": "python",
         "code": "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"},
    ],
    "wires": ["a.out -> b.in", "b.out -> c.in"],
}  # fmt: skip


def _measure(client: httpx.Client, flow: dict[str, Any], counter: str, n: int) -> float:
    client.post("/flows", json=flow).raise_for_status()
    fid = flow["id"]
    batch = list(range(1000))
    start = time.perf_counter()
    for _ in range(n // 1000):
        client.post(f"/flows/{fid}/modules/a/inputs/in", json={"msgs": batch}).raise_for_status()
    while client.get(f"/flows/{fid}/modules/{counter}/state").json()["state"].get("n") != n:
        time.sleep(0.01)
    return n / (time.perf_counter() - start)


def run(messages: int = 50_000) -> dict[str, float] | None:
    if not os.path.exists(CHROMIUM):
        print(f"  skipped: no {CHROMIUM} (make test installs it)")
        return None
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ffbench-browser-") as tmp:
        dispatcher = DispatcherProcess(Path(tmp) / "dispatcher", heartbeat=1.0)
        dispatcher.command = lambda: [  # type: ignore[method-assign]
            *DispatcherProcess.command(dispatcher),  # type: ignore[arg-type]
            "--local-runners", "1",
        ]  # fmt: skip
        dispatcher.start()
        try:
            token = (dispatcher.state_dir / "token").read_text().strip()
            with (
                httpx.Client(
                    base_url=dispatcher.url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                ) as client,
                sync_playwright() as pw,
            ):
                deadline = time.monotonic() + 60
                while not [r for r in client.get("/runners").json() if r["status"] == "ready"]:
                    assert time.monotonic() < deadline, "no local runner"
                    time.sleep(0.05)
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                try:
                    page = browser.new_page()
                    page.goto(dispatcher.url + "/client/")
                    page.evaluate(
                        """async (token) => {
                          const { connect } = await import("/client/fifoflow.js");
                          window.runner = await connect(location.origin, { token, page: "bench" });
                        }""",
                        client.get("/client-token").json()["token"],
                    )
                    one_way = _measure(client, ONE_WAY, "b", messages)
                    round_trip = _measure(client, ROUND_TRIP, "c", messages)
                finally:
                    browser.close()
        finally:
            dispatcher.stop()
    return {"server_to_browser_msg_s": one_way, "python_browser_python_msg_s": round_trip}


def print_report(result: dict[str, float] | None) -> None:
    if result is None:
        return
    print(f"  python module -> browser module: {result['server_to_browser_msg_s']:,.0f} msg/s")
    print(f"  python -> browser -> python:     {result['python_browser_python_msg_s']:,.0f} msg/s")
