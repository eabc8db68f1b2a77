"""How a runner (and the Python clients) trust a server over TLS: a CA file, or a pinned
certificate fingerprint.

- :func:`client_context` builds the ``ssl.SSLContext`` a client connects with: the
  system's CAs by default, ``ca`` (a CA, or the self-signed certificate itself) instead,
  or, with ``fingerprint``, no CA at all and a check after the handshake that the peer's
  certificate has that SHA-256 (:class:`FingerprintMismatch` names both fingerprints).
- :func:`certificate_fingerprint` is what a server prints at start so that its operator
  can pin it (``TLS certificate sha256: AB:CD:...``).
- :func:`untrusted` finds the certificate refusal behind an error that trio or
  trio_websocket wrapped, so that a caller can stop retrying and say why.

Nothing here does I/O except reading the files named.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "FingerprintMismatch",
    "TlsSettingsError",
    "certificate_fingerprint",
    "client_context",
    "format_fingerprint",
    "normalize_fingerprint",
    "untrusted",
]


class TlsSettingsError(ValueError):
    """A CA file that cannot be loaded or a fingerprint that is not one."""


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""


def format_fingerprint(der: bytes) -> str:
    """``AB:CD:...``: the SHA-256 of a DER certificate, as ``openssl x509 -fingerprint`` shows it."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:..``, ``abcd..`` or ``sha256:...``; raise ``ValueError`` otherwise."""
    raw = text.strip().lower().removeprefix("sha256:").removeprefix("sha256=")
    raw = raw.replace(":", "").replace(" ", "")
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise TlsSettingsError(
            f"a SHA-256 fingerprint is 64 hex digits (colons allowed), got {text.strip()!r}"
        )
    return ":".join(raw[i : i + 2].upper() for i in range(0, len(raw), 2))


def certificate_fingerprint(certfile: Path) -> str:
    """The fingerprint of the first certificate in a PEM file."""
    text = certfile.read_text(encoding="ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError(f"{certfile}: no PEM certificate in it")
    return format_fingerprint(ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)]))


def client_context(*, ca: Path | None = None, fingerprint: str | None = None) -> ssl.SSLContext:
    """The context a client verifies its server with (see the module docstring)."""
    if ca is not None and fingerprint is not None:
        raise TlsSettingsError("give a CA file or a fingerprint, not both")
    if fingerprint is None:
        context = ssl.create_default_context()
        if ca is not None:
            try:
                context.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise TlsSettingsError(f"CA file {ca}: cannot load it: {exc}") from None
        return context
    expected = normalize_fingerprint(fingerprint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint below is the verification

    class _Pinned(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            got = format_fingerprint(der) if der else "no certificate"
            if got != expected:
                raise FingerprintMismatch(
                    f"the server's certificate has sha256 {got}, not the pinned {expected}"
                )

    context.sslobject_class = _Pinned
    return context


def untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate refusal that caused ``exc`` (following ``__cause__``/``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
