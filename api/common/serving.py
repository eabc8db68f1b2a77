"""What both servers (``runner serve``, ``dispatcher serve``) say and set about TLS.

:func:`configure_tls` gives hypercorn the certificate and key (checked first, so that a
missing file is one clear error naming the flag) and returns the certificate's SHA-256
fingerprint for the start-up message (runners can pin it with
``--dispatcher-fingerprint``). :func:`exposure_warning` is the loud line a server prints
when it is bound beyond loopback, louder without TLS.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from fifoflow.runner.tls import certificate_fingerprint

if TYPE_CHECKING:
    from pathlib import Path

    import hypercorn.config

__all__ = ["LOOPBACK", "TlsConfigError", "configure_tls", "exposure_warning"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TlsConfigError(ValueError):
    """A certificate or key the server cannot use (the message names the flag)."""


def configure_tls(hc: hypercorn.config.Config, certfile: Path, keyfile: Path) -> str:
    """Serve TLS with these files; the certificate's fingerprint (``AB:CD:...``)."""
    try:
        fingerprint = certificate_fingerprint(certfile)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            str(certfile), str(keyfile)
        )
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"--certfile {certfile} / --keyfile {keyfile}: cannot use them: {exc}"
        ) from None
    hc.certfile = str(certfile)
    hc.keyfile = str(keyfile)
    return fingerprint


def exposure_warning(host: str, *, tls: bool, what: str) -> str | None:
    """The warning for serving ``what`` on ``host`` (None on loopback)."""
    if host in LOOPBACK:
        return None
    if tls:
        return f"warning: serving on {host}: anyone who can reach it and has the token can run code"
    return (
        f"WARNING: the {what} serves on {host} WITHOUT TLS: its tokens, runner secrets and"
        " flow code cross the network in clear text and clients cannot tell it from an"
        " impostor. Pass --certfile and --keyfile."
    )
