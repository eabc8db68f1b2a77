"""A small client of the dispatcher's operator API, for the CLI and scripts::

    with DispatcherClient("http://127.0.0.1:8480", token) as client:
        token = client.create_token()["token"]        # for: fifoflow runner serve --dispatcher
        placed = client.deploy_flow(document)         # {id, status, runner, placement, reason}

It is synchronous, like the ``fifoflow dispatcher`` commands that use it: one request,
one answer. Failures raise :class:`~fifoflow.api.common.errors.ApiError` with the
server's ``status``, ``code`` and ``message``; an unreachable dispatcher raises
:class:`~fifoflow.api.client.errors.ConnectError` (as :class:`RunnerClient` does).

Resource handling: the client owns one ``httpx.Client`` (closed by :meth:`close` or
leaving ``with``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson

from fifoflow.api.client.errors import ConnectError, api_error
from fifoflow.runner.tls import client_context

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DispatcherClient"]

#: seconds a call may take unless it says otherwise (:meth:`DispatcherClient.update_image`
#: waits as long as the dispatcher takes)
TIMEOUT = 30.0


class DispatcherClient:
    def __init__(self, url: str, token: str, *, ca: Path | None = None) -> None:
        """``ca``: verify an ``https://`` dispatcher with this CA file (or its self-signed
        certificate) instead of the system's CAs."""
        self.url = url
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=client_context(ca=ca),
        )

    def __enter__(self) -> DispatcherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = TIMEOUT,
    ) -> Any:
        """One call; ``timeout=None`` waits as long as the dispatcher takes."""
        content = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(
                method, path, content=content, params=params, headers=headers, timeout=timeout
            )
        except httpx.TransportError as exc:
            raise ConnectError(f"cannot reach the dispatcher at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise api_error(response)
        return orjson.loads(response.content)

    def create_token(self, ttl: float | None = None) -> dict[str, Any]:
        """A one-time registration token for a new runner: ``{token, expires}``."""
        return self.request("POST", "/tokens", json={"ttl": ttl} if ttl else None)

    def client_token(self) -> str:
        """The token web pages connect their client runner with."""
        return self.request("GET", "/client-token")["token"]

    def list_runners(self) -> list[dict[str, Any]]:
        return self.request("GET", "/runners")

    def drain_runner(self, runner_id: str) -> list[str]:
        """Move every flow off a runner; the ids of the flows moved."""
        return self.request("POST", f"/runners/{runner_id}/drain")["moved"]

    def list_events(self, since: int = 0) -> list[dict[str, Any]]:
        """What happened after event ``since``, oldest first."""
        return self.request("GET", "/events", params={"since": since})

    def list_flows(self) -> list[dict[str, Any]]:
        return self.request("GET", "/flows")

    def deploy_flow(self, flow: dict[str, Any]) -> dict[str, Any]:
        """Deploy a standalone flow document: placed on a runner, or pending with a reason."""
        return self.request("POST", "/flows", json=flow)

    def backend(self) -> dict[str, Any]:
        """The container backend: its image, pull policy and containers (``backend: null``
        when the dispatcher has none)."""
        return self.request("GET", "/backend")

    def update_image(self, image: str, pull: str | None = None) -> dict[str, Any]:
        """Move every runner container to ``image``; waits until they all moved."""
        body = {"image": image, **({"pull": pull} if pull else {})}
        return self.request("POST", "/backend/image", json=body, timeout=None)
