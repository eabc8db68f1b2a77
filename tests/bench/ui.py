"""The page under load (``--only ui``, issue 18): a flow moving messages as fast as a
runner moves them (python ``gen`` emits 1,000 per trigger to a node ``sink``: every one
crosses the runner, the counted path), a real ``fifoflow runner serve``, and the /ui/
page with that flow's graph open in headless Chromium for ``seconds``.

Figures: the flow's msg/s (from the runner's own wire counter), what the page asks and
receives while it shows the graph (requests/s and bytes/s: it polls aggregated counters,
never one event per message), and the CPU of Chromium's renderer (and of all its
processes), from psutil. Needs /usr/bin/chromium; skipped without.

Resources: a temp dir (the runner's state), the runner process, Chromium, one feeder
thread; all closed on the way out.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..api.helpers import ServerProcess
from ..browser.conftest import ARGS, CHROMIUM

BATCH = 1000
FLOW = {
    "fifoflow": 1,
    "id": "load",
    "modules": [
        {"id": "gen", "runtime": "python",
         "code": "def handle(msg, ctx):\n    for i in range(msg['n']):\n        ctx.emit('out', i)\n"},
        {"id": "sink", "runtime": "node", "outputs": [], "code": "exports.handle = () => {};\n"},
    ],
    "wires": ["gen.out -> sink.in"],
}  # fmt: skip


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for p in procs:
        try:
            t = p.cpu_times()
            seconds[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return seconds


def _chromium() -> tuple[list[psutil.Process], list[psutil.Process]]:
    """Chromium's processes under this one: all of them, and the renderers."""
    every = [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]
    renderers = []
    for p in every:
        try:
            if "--type=renderer" in p.cmdline():
                renderers.append(p)
        except psutil.Error:
            pass
    return every, renderers


def run(seconds: float = 10.0) -> dict[str, float] | None:
    if not os.path.exists(CHROMIUM):
        print(f"  skipped: no {CHROMIUM} (make test installs it)")
        return None
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ffbench-ui-") as tmp:
        server = ServerProcess(Path(tmp) / "state")
        server.start()
        stop = threading.Event()
        feeders: list[threading.Thread] = []
        try:
            token = (server.state_dir / "token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
                http.put("/flows/load", json=FLOW).raise_for_status()
                http.post("/flows/load/start").raise_for_status()

            def feed() -> None:  # triggers as fast as the flow takes them (inject waits)
                with httpx.Client(base_url=server.url, headers=headers, timeout=60) as h:
                    while not stop.is_set():
                        try:
                            h.post(
                                "/flows/load/modules/gen/inputs/in",
                                json={"msgs": [{"n": BATCH}] * 20},
                            )
                        except httpx.HTTPError:
                            return

            feeders += [threading.Thread(target=feed, daemon=True) for _ in range(2)]
            for f in feeders:
                f.start()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                try:
                    page = browser.new_page()
                    page.goto(f"{server.url}/ui/?token={token}")
                    page.click('#flow-table tr[data-flow="load"]', timeout=15_000)
                    page.wait_for_selector(
                        '[data-wire="gen.out->sink.in"][data-rate]', timeout=15_000
                    )
                    seen: list[tuple[str, int]] = []

                    def finished(request: Any) -> None:
                        sizes = request.sizes()
                        seen.append(
                            (request.url, sizes["responseBodySize"] + sizes["responseHeadersSize"])
                        )

                    page.on("requestfinished", finished)
                    every, renderers = _chromium()
                    cpu0, cpu_r0 = _cpu(every), _cpu(renderers)
                    with httpx.Client(base_url=server.url, headers=headers) as h:
                        s0 = h.get("/flows/load/stats").json()
                        t0 = time.perf_counter()
                        page.wait_for_timeout(seconds * 1000)  # the page runs on its own
                        elapsed = time.perf_counter() - t0
                        s1 = h.get("/flows/load/stats").json()
                    cpu1, cpu_r1 = _cpu(every), _cpu(renderers)
                    shown = page.eval_on_selector(
                        '[data-wire="gen.out->sink.in"]', "g => Number(g.dataset.rate)"
                    )
                finally:
                    browser.close()
        finally:
            stop.set()
            for f in feeders:
                f.join(timeout=30)
            server.stop()
    spent = lambda a, b: sum(b[p] - a[p] for p in b if p in a)  # noqa: E731
    routed = s1["wires"][0]["messages"] - s0["wires"][0]["messages"]
    return {
        "flow_msg_s": routed / (s1["time"] - s0["time"]),
        # cross-check: triggers taken by gen, times what each makes
        "triggered_msg_s": BATCH
        * (s1["injected"]["gen.in"] - s0["injected"]["gen.in"])
        / (s1["time"] - s0["time"]),
        "page_shown_msg_s": shown,
        "page_requests_s": len(seen) / elapsed,
        "page_bytes_s": sum(n for _, n in seen) / elapsed,
        "renderer_cpu_pct": 100 * spent(cpu_r0, cpu_r1) / elapsed,
        "chromium_cpu_pct": 100 * spent(cpu0, cpu1) / elapsed,
        "seconds": elapsed,
    }


def print_report(result: dict[str, float] | None) -> None:
    if result is None:
        return
    print(f"  flow (python -> node, via the runner): {result['flow_msg_s']:,.0f} msg/s "
          f"(triggered {result['triggered_msg_s']:,.0f}/s; the page showed {result['page_shown_msg_s']:,.0f}/s)")  # fmt: skip
    print(f"  page with the graph open {result['seconds']:.1f} s: "
          f"{result['page_requests_s']:.1f} requests/s, {result['page_bytes_s'] / 1024:.1f} KiB/s received")  # fmt: skip
    print(f"  Chromium CPU: renderer {result['renderer_cpu_pct']:.1f} %, all processes "
          f"{result['chromium_cpu_pct']:.1f} % (of one core)")  # fmt: skip


if __name__ == "__main__":
    print_report(run())
