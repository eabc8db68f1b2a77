"""The page's static files at /ui/ (api/common/ui.py): served without the token, with
the right content types and cache headers; traversal, hidden names and unknown files
refused; start-up prints the page's URL; /health says which server answers; the flow
stats route counts messages on the wires the runner routes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx
import pytest

from fifoflow.api.common.errors import ApiError
from fifoflow.api.common.ui import STATIC_DIR, resolve
from fifoflow.api.ui import vendor

from ..dispatcher.test_dispatcher import wait_until
from .helpers import ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def test_codemirror_bundle_is_committed_pinned_and_csp_safe() -> None:
    """The committed bundle is what the page runs: its README names the pinned versions,
    it exports what panel.js imports, and it needs no eval (script-src 'self')."""
    folder = STATIC_DIR / "vendor" / "codemirror"
    readme = (folder / "README.md").read_text()
    for name, version in vendor.CODEMIRROR_PINS.items():
        assert f"`{name}@{version}`" in readme
    bundle = (folder / "codemirror.mjs").read_text()
    exports = bundle[bundle.rindex("export{") :]
    for name in (
        "EditorView",
        "EditorState",
        "basicSetup",
        "python",
        "javascript",
        "json",
        "keymap",
    ):
        assert f" as {name}" in exports, name
    assert "eval(" not in bundle
    assert "new Function" not in bundle
    licences = (folder / "LICENSE").read_text()
    packages = [
        line for line in readme.split("Packages in the bundle:")[1].splitlines() if line[:2] == "- "
    ]
    assert len(packages) >= 10
    assert licences.count("(MIT) ==") == len(packages)
    with pytest.raises(SystemExit, match="unknown step nope"):
        vendor.main(["nope"])


# first: the module's live server is not running yet (the leftover guard)
def test_resolve_refuses_dot_segments_and_links_out(tmp_path: Path) -> None:
    root = tmp_path / "static"
    root.mkdir()
    (root / "ok.js").write_text("ok")
    (tmp_path / "secret.js").write_text("secret")
    os.symlink(tmp_path / "secret.js", root / "link.js")
    assert resolve("ok.js", root) == (root / "ok.js").resolve()
    for bad in ["../secret.js", "./ok.js", "a/../../secret.js", "", ".env", "a\\b.js", "x\0.js"]:
        with pytest.raises(ApiError) as caught:
            resolve(bad, root)
        assert caught.value.status == 400, bad
    with pytest.raises(ApiError) as caught:
        resolve("link.js", root)
    assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        resolve("ok.py", root)  # a suffix the page does not serve
    assert caught.value.status == 404


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("ui") / "state")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_start_up_prints_the_page_url(live_server: ServerProcess) -> None:
    # printed right after "listening on", which is where start() returned
    line = f"UI: {live_server.url}/ui/"
    wait_until("the page's address", lambda: line in live_server.lines, timeout=10)


def test_page_and_files_need_no_token_and_have_their_types(live_server: ServerProcess) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        page = http.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert b'src="app.js"' in page.content
        for name, media in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("vendor/elk/elk.bundled.js", "text/javascript; charset=utf-8"),
            ("panel.js", "text/javascript; charset=utf-8"),
            ("vendor/codemirror/codemirror.mjs", "text/javascript; charset=utf-8"),
            ("vendor/codemirror/LICENSE", "text/plain; charset=utf-8"),
        ]:
            answer = http.get(f"/ui/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"] == media
            assert answer.content == (STATIC_DIR / name).read_bytes()
        etag = http.get("/ui/app.js").headers["etag"]
        assert http.get("/ui/app.js", headers={"If-None-Match": etag}).status_code == 304
        # the API itself still needs the token
        assert http.get("/flows").status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/ui/%2e%2e/%2e%2e/runner/service.py",
        "/ui/..%2f..%2frunner%2fservice.py",
        "/ui/vendor/%2e%2e/%2e%2e/common/ui.py",
        "/ui/.hidden",
        "/ui/vendor//elk/elk.bundled.js",
    ],
)
def test_traversal_is_refused(live_server: ServerProcess, path: str) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        answer = http.get(path)
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"]["code"] in ("bad_path", "not_found")


def test_unknown_file_is_404(live_server: ServerProcess) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        answer = http.get("/ui/no-such.js")
    assert answer.status_code == 404
    assert answer.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": "ui: no file 'no-such.js'",
        "field": "file",
    }


def test_health_says_runner(live_server: ServerProcess) -> None:
    token = (live_server.state_dir / "token").read_text().strip()
    with httpx.Client(base_url=live_server.url) as http:
        health = http.get("/health", headers={"Authorization": f"Bearer {token}"}).json()
    assert health["server"] == "runner"
