"""Bearer tokens: where the runner's token lives, making one, checking one.

The token is 32 random bytes (URL-safe base64) in a file of mode 0600; by default
``<state dir>/token``, created on the runner's first start. Clients send it as
``Authorization: Bearer <token>``; browsers, which cannot set headers on a WebSocket,
may pass ``?access_token=<token>`` on ``/ws`` only. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["TokenError", "check_token", "load_or_create_token", "read_token"]


class TokenError(Exception):
    """The token file cannot be used; the message says why and where."""


def read_token(path: Path, server: str = "runner") -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise TokenError(
            f"no token file at {path} (a {server} creates one on first start; "
            "pass --token-file to point at another)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file {path}: {exc}") from None
    if not text or any(c.isspace() for c in text):
        raise TokenError(f"the token file {path} must hold one token on one line")
    return text


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in ``path``, creating the file (mode 0600) if it does not exist.
    Returns ``(token, created)``. Refuses a token file others can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise TokenError(
                f"the token file {path} can be read by others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            ) from None
        return read_token(path), False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    return token, True


def check_token(provided: str | None, expected: str) -> bool:
    if provided is None:
        return False
    return hmac.compare_digest(provided.encode("utf-8", "replace"), expected.encode("ascii"))
