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

import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from fifoflow.api.client.errors import ConnectError, api_error
from fifoflow.runner.tls import client_context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["DispatcherClient"]

#: the states a run ends in
ENDED = frozenset({"succeeded", "failed", "timed_out", "canceled"})

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

    # ------------------------------------------------------------------ runs

    def submit_run(self, submission: dict[str, Any]) -> dict[str, Any]:
        """Submit a run (``RunSubmission``'s fields); the run's view, queued."""
        return self.request("POST", "/runs", json=submission)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/runs/{run_id}")

    def list_runs(
        self, *, state: str | None = None, flow: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = {"state": state, "flow": flow, "limit": limit}
        return self.request(
            "GET", "/runs", params={k: v for k, v in query.items() if v is not None}
        )

    def cancel_run(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        return self.request(
            "POST", f"/runs/{run_id}/cancel", json={"reason": reason} if reason else None
        )

    def run_result(self, run_id: str) -> dict[str, Any]:
        """How the run ended (an ApiError 409 ``run_state`` until it has)."""
        return self.request("GET", f"/runs/{run_id}/result")

    def run_outputs(self, run_id: str) -> Iterator[dict[str, Any]]:
        """Every output of an ended run, ``{from, msg}``, as the dispatcher streams them."""
        try:
            with self._http.stream("GET", f"/runs/{run_id}/outputs", timeout=TIMEOUT) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield orjson.loads(line)
        except httpx.TransportError as exc:
            raise ConnectError(f"cannot reach the dispatcher at {self.url}: {exc}") from None

    def run_logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit is not None else None
        return self.request("GET", f"/runs/{run_id}/logs", params=params)

    def wait_run(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The run's view once it ended (looked at every ``poll`` seconds; ``on_update``
        gets each view); ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get_run(run_id)
            if on_update is not None:
                on_update(view)
            if view["state"] in ENDED:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} did not end within {timeout} s")
            time.sleep(poll)
