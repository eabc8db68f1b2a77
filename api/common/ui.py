"""The web page's static files at ``/ui/``, served the same way by the runner and the
dispatcher.

The files live in the package (``api/ui/static/``: ``index.html``, ``app.js`` and its ES
modules, ``style.css``, ``graph.mjs``, ``vendor/``); there is no build step. They are
public: the page holds no secret, it asks its user for the token and sends it as
``Authorization: Bearer`` on every API call (and ``?access_token=`` on ``/ws``).

What the route promises:

- only regular files under the static folder, with a known suffix, are served; a path
  with an empty, ``.`` or ``..`` segment, a hidden name, a backslash or a NUL is refused
  (400 ``bad_path``) before the file system is asked, and the resolved file must still
  be inside the folder (a symlink pointing out is refused as well); anything else is 404;
- ``Content-Type`` from the suffix (``.mjs`` and ``.js`` as ``text/javascript``), with
  ``X-Content-Type-Options: nosniff``;
- ``Cache-Control: no-cache`` with an ``ETag`` (size and modification time): the files
  have no versioned names, so the browser asks again each time and gets a 304 when
  nothing changed;
- the page's HTML carries a Content-Security-Policy that lets it load and connect to its
  own server only (``'self'``): no CDN, no fonts or scripts from elsewhere.

:func:`ui_blueprint` gives the routes (endpoints ``ui.index`` and ``ui.file``, public:
:func:`is_public`); :data:`UI_PATHS` is their OpenAPI description for both documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quart import Blueprint, Response, request

from .errors import ApiError, BadRequest
from .openapi import json_content
from .schema import ref

__all__ = ["STATIC_DIR", "UI_PATHS", "is_public", "resolve", "ui_blueprint", "ui_file", "ui_url"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui" / "static"

MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE files
}

#: the page may load and connect to its own server only (ws: same origin is 'self')
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

ENDPOINTS = frozenset({"ui.index", "ui.file"})


def is_public(endpoint: str | None) -> bool:
    """Whether ``endpoint`` is one of the page's files (served without the token)."""
    return endpoint in ENDPOINTS


def ui_url(base: str) -> str:
    """The page's address on a server listening at ``base`` (``http://127.0.0.1:8470``)."""
    return base.rstrip("/") + "/ui/"


def resolve(name: str, root: Path = STATIC_DIR) -> Path:
    """The file ``name`` (a relative URL path) names under ``root``.

    Raises :class:`BadRequest` (``bad_path``) for a path that tries to leave the folder or
    names a hidden file, :class:`ApiError` 404 for anything that is not a file we serve."""
    parts = name.split("/")
    if (
        "\\" in name
        or "\0" in name
        or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
    ):
        raise BadRequest(
            f"ui: {name!r} is not a file name of the page (no empty, '.', '..' or hidden parts)",
            field="file",
            code="bad_path",
        )
    path = root.joinpath(*parts)
    missing = ApiError(f"ui: no file {name!r}", status=404, code="not_found", field="file")
    if path.suffix not in MEDIA:
        raise missing
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise missing from None
    if not real.is_relative_to(root.resolve()) or not real.is_file():
        raise missing
    return real


def ui_file(name: str, root: Path = STATIC_DIR) -> Response:
    """The answer for ``GET /ui/<name>``: the file, or 304 if the browser has it."""
    path = resolve(name, root)
    stat = path.stat()
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    media = MEDIA[path.suffix]
    if media.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "no-referrer"
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        return Response(b"", 304, headers)
    headers["Content-Type"] = media
    return Response(path.read_bytes(), 200, headers)


def ui_blueprint(root: Path = STATIC_DIR) -> Blueprint:
    """``GET /ui/`` (the page) and ``GET /ui/<path:file>`` (its other files)."""
    bp = Blueprint("ui", __name__)

    @bp.get("/ui/", defaults={"file": "index.html"}, endpoint="index")
    async def index(file: str) -> Response:
        return ui_file(file, root)

    @bp.get("/ui/<path:file>", endpoint="file")
    async def file(file: str) -> Response:
        return ui_file(file, root)

    return bp


_FILE_CONTENT = {
    media.split(";")[0]: {"schema": {"type": "string"}}
    for media in ("text/html", "text/javascript", "text/css", "image/svg+xml", "text/plain")
}

#: the OpenAPI path items of the page's files (both servers' documents)
UI_PATHS: dict[str, Any] = {
    "/ui/": {
        "get": {
            "operationId": "uiPage",
            "summary": "The web page (public: it asks for the token and sends it to the API)",
            "security": [],
            "responses": {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                "304": {"description": "not modified (If-None-Match matched the ETag)"},
            },
        }
    },
    "/ui/{file}": {
        "get": {
            "operationId": "uiFile",
            "summary": "A file of the web page: app.js, style.css, graph.mjs, vendor/... (public)",
            "security": [],
            "parameters": [
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "description": "a path under the page's folder",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "the file", "content": _FILE_CONTENT},
                "304": {"description": "not modified (If-None-Match matched the ETag)"},
                "400": json_content(ref("Error"), "a path with an empty, '.', '..' or hidden part"),
                "404": json_content(ref("Error"), "no such file"),
            },
        }
    },
}
