"""The dispatcher serves the client runner's page and the module core to browsers; the
core (the node host's own core.mjs) runs a module in real Chromium."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from ..dispatcher.test_dispatcher import DispatcherProcess

if TYPE_CHECKING:
    from pathlib import Path


def test_the_module_core_runs_in_chromium(tmp_path: Path, page: Any) -> None:
    dispatcher = DispatcherProcess(tmp_path / "dispatcher")
    dispatcher.start()
    try:
        # Public files need no token; everything else still does.
        assert (
            httpx.get(dispatcher.url + "/client/core.mjs")
            .headers["content-type"]
            .startswith("text/javascript")
        )
        assert httpx.get(dispatcher.url + "/flows").status_code == 401
        missing = httpx.get(dispatcher.url + "/client/nope.js")
        assert missing.status_code == 404
        assert "core.mjs" in missing.json()["error"]["message"]

        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(dispatcher.url + "/client/")
        page.wait_for_function("window.fifoflowSelfCheck !== undefined", timeout=20_000)
        frames = page.evaluate("window.fifoflowSelfCheck")
        assert not errors, errors
        assert isinstance(frames, list), frames
        emit = next(f for f in frames if f["op"] == "emit")
        assert emit == {
            "op": "emit",
            "module": "demo/greet",
            "port": "out",
            "n": 1,  # the count the raw layout carries (PROTOCOL.md section 10)
            "msgs": [{"hello": "world", "from": "browser"}],
        }
        assert {"op": "done", "seq": 1} in frames
        assert page.locator("#check").get_attribute("class") == "ok"
        shot = page.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(shot) > 5000
    finally:
        dispatcher.stop()
