"""Where each runner's peer endpoint is, and the credentials runners use on each other
(the dispatcher's side of the runner-to-runner relay: ``runner/peers.py``; the design is
in dispatcher/README.md, "Runner-to-runner relay").

A runner says its endpoint in ``hello`` (``peer``); the answer gives it its peer key,
``HMAC-SHA256(master, runner id)``, where ``master`` is 32 random bytes kept in
``<state dir>/peer.key`` (0600), so keys survive a dispatcher restart. A part's
``deploy`` carries its ``routes``: for each wire leaving it, the target module's runner,
that runner's endpoint and the credential ``HMAC-SHA256(target's key, sender \\n flow)``,
which the target checks with its own key: a runner reaches another only for the flows
the dispatcher placed across both, and never learns another runner's key.

Owns: the endpoints of linked runners (in memory: said again at every hello).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

from ..flows import Wire
from ..runner.peers import credential
from ..runner.store import atomic_write

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["PeerDirectory"]


class PeerDirectory:
    def __init__(self, state_dir: Path) -> None:
        path = state_dir / "peer.key"
        try:
            master = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            master = b""
        if len(master) != 32:
            master = secrets.token_bytes(32)
            atomic_write(path, master.hex().encode() + b"\n", mode=0o600)
        self._master = master
        #: runner id -> its peer endpoint (``ws://host:port/peer``), while linked
        self.endpoints: dict[str, str] = {}
        #: False: routes carry no endpoints (every wire through the dispatcher)
        self.enabled = True

    def key_for(self, runner_id: str) -> bytes:
        return hmac.new(self._master, runner_id.encode(), hashlib.sha256).digest()

    def routes(
        self, flow_id: str, doc: dict[str, Any], placement: dict[str, str], runner_id: str
    ) -> list[dict[str, Any]]:
        """The wires leaving ``runner_id``'s part, each with where its target is."""
        routes = []
        for text in doc.get("wires", ()):
            w = Wire.parse(text)
            target = placement.get(w.dst)
            if placement.get(w.src) != runner_id or target is None or target == runner_id:
                continue
            url = self.endpoints.get(target) if self.enabled else None
            routes.append(
                {
                    "from": w.src,
                    "fromPort": w.src_port,
                    "to": w.dst,
                    "toPort": w.dst_port,
                    "runner": target,
                    "peer": url,
                    "credential": (
                        credential(self.key_for(target), runner_id, flow_id) if url else None
                    ),
                }
            )
        return routes
