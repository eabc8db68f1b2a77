"""The dispatcher service: runner registration, identity, hardware, liveness.

Runner lifecycle, as the dispatcher sees it (``status``)::

    registered --hello--> starting --ready--> ready --(no heartbeat for ttl)--> lost
                                               |                                  |
                                               +--signoff--> signed-off    hello (back)

- An operator asks for a one-time registration token (``issue_token``); a runner trades
  it for an id and a secret (``register``); the token then never works again, and
  expires after its TTL if unused.
- On each (re)connection the runner proves who it is (``hello``), reports hardware —
  everything the first time, then only what changed (``report_hardware``) — and says
  ``ready``. Heartbeats keep it ``ready``; :meth:`Dispatcher.run` marks a runner ``lost``
  when its last heartbeat is older than ``ttl`` (3 intervals by default).

Placement, relay and the ``local`` backend build on this (next steps, see README.md).

Error handling: every refusal is a :class:`DispatcherError` whose message says what to
do; nothing a runner sends can stop the service.
"""

from __future__ import annotations

import secrets
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import trio

from .store import DispatcherStore

__all__ = ["Dispatcher", "DispatcherConfig", "DispatcherError"]

SECONDS = 1.0


class DispatcherError(Exception):
    code = "dispatcher_error"
    field: str | None = None


class RegistrationRefused(DispatcherError):
    code = "registration_refused"
    field = "token"


class UnknownRunner(DispatcherError):
    code = "unknown_runner"
    field = "runnerId"


@attrs.frozen
class DispatcherConfig:
    state_dir: Path
    #: how often runners send a heartbeat
    heartbeat: float = 5 * SECONDS
    #: a runner silent this long is lost (default: 3 heartbeats)
    ttl: float | None = None
    #: how long an unused registration token stays valid
    token_ttl: float = 3600 * SECONDS

    @property
    def runner_ttl(self) -> float:
        return self.ttl if self.ttl is not None else 3 * self.heartbeat


class Dispatcher:
    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.store = DispatcherStore.open(config.state_dir)
        self.started_at = time.time()
        self._changed = trio.Event()
        try:
            self.version = metadata.version("fifoflow")
        except metadata.PackageNotFoundError:
            self.version = "0+unknown"

    async def run(
        self, *, task_status: trio.TaskStatus[Dispatcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch heartbeats until cancelled."""
        try:
            task_status.started(self)
            while True:
                await trio.sleep(min(self.config.heartbeat, self.config.runner_ttl) / 2)
                self.check_liveness()
        finally:
            self.store.close()

    # ------------------------------------------------------------------ operators

    def issue_token(self, ttl: float | None = None) -> dict[str, Any]:
        token = "ffreg_" + secrets.token_urlsafe(24)
        expires = self.store.add_token(token, ttl if ttl is not None else self.config.token_ttl)
        self.store.add_event(None, "token", {"expires": expires})
        return {"token": token, "expires": expires}

    def runners(self) -> list[dict[str, Any]]:
        return self.store.runners()

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self.store.events(since)

    def health(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for runner in self.store.runners():
            counts[runner["status"]] = counts.get(runner["status"], 0) + 1
        return {
            "status": "ok",
            "version": self.version,
            "uptime": round(time.time() - self.started_at, 3),
            "runners": counts,
            "heartbeat": self.config.heartbeat,
            "ttl": self.config.runner_ttl,
        }

    # ------------------------------------------------------------------ runners

    def register(self, token: str, name: str) -> dict[str, str]:
        runner_id = "r-" + uuid.uuid4().hex[:12]
        why = self.store.use_token(token, runner_id)
        if why is not None:
            raise RegistrationRefused(
                f"{why}; ask the operator for a new one: fifoflow dispatcher token"
            )
        secret = secrets.token_urlsafe(32)
        self.store.add_runner(runner_id, secret, name)
        self.store.add_event(runner_id, "registered", {"name": name})
        return {"runnerId": runner_id, "secret": secret}

    def hello(self, runner_id: str, secret: str, version: str | None) -> dict[str, Any]:
        if not self.store.check_secret(runner_id, secret):
            raise UnknownRunner(
                f"runner {runner_id!r} is not known here or its secret is wrong; "
                "register it again with a new token (remove its dispatcher.json)"
            )
        previous = self.store.runner(runner_id)
        assert previous is not None
        self.store.update_runner(runner_id, status="starting", last_seen=time.time())
        self.store.add_event(
            runner_id, "connected", {"version": version, "was": previous["status"]}
        )
        return {"heartbeat": self.config.heartbeat, "ttl": self.config.runner_ttl}

    def report_hardware(
        self, runner_id: str, full: dict[str, Any] | None, changes: dict[str, Any] | None
    ) -> dict[str, Any]:
        runner = self._runner(runner_id)
        hardware = dict(full) if full is not None else {**runner["hardware"], **(changes or {})}
        self.store.update_runner(runner_id, hardware=hardware)
        detail = {"full": full is not None, "changed": sorted((full or changes or {}).keys())}
        if changes:
            detail["changes"] = changes
        self.store.add_event(runner_id, "hardware", detail)
        return hardware

    def ready(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status="ready", last_seen=time.time())
        self.store.add_event(runner_id, "ready", {})

    def heartbeat(self, runner_id: str) -> None:
        runner = self._runner(runner_id)
        fields: dict[str, Any] = {"last_seen": time.time()}
        if runner["status"] == "lost":
            fields["status"] = "ready"
            self.store.add_event(runner_id, "back", {})
        self.store.update_runner(runner_id, **fields)

    def sign_off(self, runner_id: str) -> None:
        self._runner(runner_id)
        self.store.update_runner(runner_id, status="signed-off", last_seen=time.time())
        self.store.add_event(runner_id, "signed-off", {})

    def check_liveness(self) -> list[str]:
        """Mark runners whose last heartbeat is older than the TTL as lost."""
        now = time.time()
        lost = []
        for runner in self.store.runners():
            if runner["status"] in ("ready", "starting") and (
                runner["lastSeen"] is None or now - runner["lastSeen"] > self.config.runner_ttl
            ):
                self.store.update_runner(runner["id"], status="lost")
                self.store.add_event(
                    runner["id"], "lost", {"silentFor": round(now - (runner["lastSeen"] or now), 3)}
                )
                lost.append(runner["id"])
        return lost

    def _runner(self, runner_id: str) -> dict[str, Any]:
        runner = self.store.runner(runner_id)
        if runner is None:
            raise UnknownRunner(f"no runner {runner_id!r}")
        return runner
